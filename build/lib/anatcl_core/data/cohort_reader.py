"""`Cohort`: the read-only, validated view of one cohort folder (the layout of `anatcl_core.data.cohort`).

`Cohort.open` refuses, with a `CohortError`, a folder that a write never finished, that misses a layout file, or
whose files break the contract of `cohort_contract`; what it returns is always usable. vbm.npy stays memory-mapped.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.data.cohort_contract import (LAYOUT_FILES, META_FILE, PARTICIPANTS_FILE, ROI_FILE,
                                              UNFINISHED_MARKER, VOLUMES_FILE, CohortError, check_meta,
                                              check_participants, check_roi, check_volumes_array,
                                              read_participants)


class Cohort:
    """Read-only view of one cohort folder.

    Attributes: path, name, participants (DataFrame, N rows), volumes (np.memmap [N, X, Y, Z], read-only),
    roi ([N, 7, 68] float32), meta (dict from meta.json), affine ([4, 4] voxel-to-MNI mm), shape (X, Y, Z).
    Build one with `Cohort.open(path)`, which validates the folder.
    """

    def __init__(self, path: Path, participants: pd.DataFrame, volumes: np.memmap, roi: np.ndarray,
                 meta: dict) -> None:
        self.path = Path(path)
        self.name = self.path.name
        self.participants = participants
        self.volumes = volumes
        self.roi = roi
        self.meta = meta
        self.affine = np.asarray(meta["affine"], dtype=np.float64)
        self.shape = tuple(int(s) for s in meta["shape"])

    def __len__(self) -> int:
        return len(self.participants)

    def __repr__(self) -> str:
        return (f"Cohort({str(self.path)!r}, n_subjects={len(self)}, shape={self.shape}, "
                f"dtype={self.meta['dtype']})")

    def mean_volume(self, rows: np.ndarray | None = None, chunk: int = 32) -> np.ndarray:
        """Voxel-wise mean of the maps of `rows` (default: every subject) -> [X, Y, Z] float32.

        Reads `chunk` volumes at a time from the memory map, so memory stays small for any cohort size;
        sums in float64.
        """
        rows = np.arange(len(self)) if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        total = np.zeros(self.shape, dtype=np.float64)
        for start in range(0, len(rows), chunk):
            total += np.asarray(self.volumes[rows[start:start + chunk]], dtype=np.float32).sum(axis=0)
        return (total / max(len(rows), 1)).astype(np.float32)

    def fingerprint(self) -> str:
        """16-hex digest of the cohort's content: participants.tsv, meta.json and the regional table in full,
        plus the size of vbm.npy and 64 evenly spaced 4 KB blocks of it (a regenerated or replaced volume
        file changes it; an edit of a few voxels between the blocks does not). Independent of the folder's
        path and of file times, so a moved or copied cohort keeps its fingerprint. Reads about 256 KB plus the
        tables, once per opened Cohort (callers ask once per checkpoint)."""
        cached = self.__dict__.get("_fingerprint")
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        for name in (PARTICIPANTS_FILE, META_FILE, ROI_FILE):
            digest.update((self.path / name).read_bytes())
        size = (self.path / VOLUMES_FILE).stat().st_size
        digest.update(str(size).encode())
        with open(self.path / VOLUMES_FILE, "rb") as f:
            for offset in np.linspace(0, max(size - 4096, 0), 64).astype(np.int64):
                f.seek(int(offset))
                digest.update(f.read(4096))
        self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Cohort":
        """Open and validate `path` (a folder holding the four layout files); raises CohortError."""
        path = Path(path)
        if (path / UNFINISHED_MARKER).exists():
            raise CohortError(f"{path}: holds {UNFINISHED_MARKER}, left by a write that never finished; expected "
                              "a folder completed by CohortWriter.finish (delete it and write the cohort again)")
        return cls._read_folder(path)

    @classmethod
    def _read_folder(cls, path: Path) -> "Cohort":
        """Every check of `open` except the unfinished-write marker (the writer checks its own folder)."""
        if not path.is_dir():
            raise CohortError(f"{path}: not a folder; expected a cohort folder holding {list(LAYOUT_FILES)}")
        missing = [f for f in LAYOUT_FILES if not (path / f).is_file()]
        if missing:
            raise CohortError(f"{path}: missing file(s) {missing}; expected all of {list(LAYOUT_FILES)}")
        meta = _read_meta(path / META_FILE)
        volumes = _load_array(path / VOLUMES_FILE, mmap_mode="r")
        check_volumes_array(volumes.shape, volumes.dtype, meta, str(path / VOLUMES_FILE))
        roi = _load_array(path / ROI_FILE, mmap_mode=None)
        check_roi(roi, meta["n_subjects"], str(path / ROI_FILE))
        participants = read_participants(path / PARTICIPANTS_FILE)
        check_participants(participants, meta["n_subjects"], str(path / PARTICIPANTS_FILE))
        return cls(path, participants, volumes, roi.astype(np.float32, copy=False), meta)


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CohortError(f"{path}: not valid JSON ({err}); expected the object written by CohortWriter") from err
    check_meta(meta, str(path))
    return meta


def _load_array(path: Path, mmap_mode: str | None) -> np.ndarray:
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:   # truncated file, bad header, pickled objects
        raise CohortError(f"{path}: not a readable .npy array ({err}); expected a complete numeric array") from err
