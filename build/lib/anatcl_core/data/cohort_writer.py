"""`CohortWriter` and `write_cohort`: create a cohort folder so that an interrupted write never opens as one.

Volumes stream into an np.memmap inside a hidden temporary folder beside the target, which holds an owner marker
(`UNFINISHED_MARKER`, "pid host") until the end; `finish` checks everything against `cohort_contract`, writes the
other files and renames the folder into place. `remove_abandoned_writes` clears the temporary folders of writers
that were killed, on this host, before they could clean up.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anatcl_core.atomic import apply_umask, read_owner, write_owner
from anatcl_core.data.cohort_contract import (META_FILE, PARTICIPANTS_FILE, ROI_FILE, UNFINISHED_MARKER,
                                              VOLUME_DTYPES, VOLUMES_FILE, CohortError, build_meta,
                                              canonical_participants, check_grid, check_participants,
                                              check_roi)
from anatcl_core.data.cohort_reader import Cohort


def _json_value(value: Any) -> Any:
    """json.dumps fallback for the few non-JSON types a provenance dict usually holds."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (_dt.date, _dt.datetime)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


class CohortWriter:
    """Stream subjects into a new cohort folder without holding all volumes in memory.

    ::

        with CohortWriter(path, n_subjects, shape, affine, dtype="float16") as writer:
            for i, image in enumerate(images):
                writer.volumes[i] = image                  # [X, Y, Z]
            cohort = writer.finish(participants, roi, provenance)

    `volumes` is an np.memmap [N, X, Y, Z] inside a hidden temporary folder next to `path`;
    `finish` validates everything, writes the other three files and renames the folder to `path`.
    Leaving the block without `finish` (exception, KeyboardInterrupt) deletes the temporary folder.
    """

    def __init__(self, path: str | os.PathLike, n_subjects: int, shape: tuple[int, int, int],
                 affine: np.ndarray, dtype: str = "float16", overwrite: bool = False) -> None:
        self.path = Path(path)
        self.n_subjects = int(n_subjects)
        self.shape = tuple(int(s) for s in shape)
        self.affine = np.asarray(affine, dtype=np.float64)
        self.dtype = np.dtype(dtype).name
        self.overwrite = overwrite
        where = f"{self.path} (CohortWriter)"
        if self.n_subjects < 1:
            raise CohortError(f"{where}: field 'n_subjects' is {n_subjects}; expected at least 1")
        if self.dtype not in VOLUME_DTYPES:
            raise CohortError(f"{where}: field 'dtype' is {self.dtype}; expected one of {list(VOLUME_DTYPES)}")
        check_grid(self.shape, self.affine, where)
        self._refuse_existing()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_writes(self.path)
        self.tmp_path = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.partial-", dir=self.path.parent))
        self.finished = False
        self.volumes: np.memmap | None = None
        try:
            apply_umask(self.tmp_path, directory=True)    # becomes the cohort folder: readable as mkdir makes it
            write_owner(self.tmp_path / UNFINISHED_MARKER)
            self.volumes = np.lib.format.open_memmap(
                self.tmp_path / VOLUMES_FILE, mode="w+", dtype=self.dtype, shape=(self.n_subjects, *self.shape))
        except BaseException:   # e.g. no disk space: leave no temporary folder behind
            self.abort()
            raise

    def __enter__(self) -> "CohortWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.finished:
            self.abort()

    def abort(self) -> None:
        """Drop the memmap and delete the temporary folder; the target path is left untouched."""
        self.volumes = None
        shutil.rmtree(self.tmp_path, ignore_errors=True)

    def _refuse_existing(self) -> None:
        """A new path, or with overwrite a cohort folder (meta.json or the unfinished marker) or an empty one:
        overwrite never deletes a folder this library did not write."""
        if not self.path.exists():
            return
        if not self.overwrite:
            raise CohortError(f"{self.path}: already exists; expected a new path, or pass overwrite=True "
                              "(--overwrite) to replace the cohort")
        is_cohort = self.path.is_dir() and ((self.path / META_FILE).is_file()
                                            or (self.path / UNFINISHED_MARKER).exists())
        if not is_cohort and (not self.path.is_dir() or any(self.path.iterdir())):
            found = "a file" if not self.path.is_dir() else \
                f"a folder holding {sorted(p.name for p in self.path.iterdir())[:5]}"
            raise CohortError(f"{self.path}: is {found}, not a cohort folder (no {META_FILE}); overwrite replaces "
                              "only cohorts: choose another path, or remove it yourself")

    def finish(self, participants: pd.DataFrame, roi: np.ndarray, provenance: dict) -> Cohort:
        """Validate, write participants.tsv, desikan_roi.npy and meta.json, then move into place.

        participants: N rows in volume order; roi: [N, 7, 68] measures (stored as float32);
        provenance: JSON-able dict (source, recipe, seed, date, ...). Returns the opened Cohort.
        """
        if self.volumes is None:
            raise CohortError(f"{self.path}: CohortWriter already finished or aborted; expected a fresh writer")
        try:
            cohort = self._write_and_publish(participants, roi, provenance)
        except BaseException:
            self.abort()
            raise
        self.finished = True
        return cohort

    def _write_and_publish(self, participants: pd.DataFrame, roi: np.ndarray, provenance: dict) -> Cohort:
        table = canonical_participants(participants)
        check_participants(table, self.n_subjects, str(self.path / PARTICIPANTS_FILE))
        roi = np.asarray(roi)
        check_roi(roi, self.n_subjects, str(self.path / ROI_FILE))
        self._check_volumes_finite(table["participant_id"])
        meta = build_meta(self.n_subjects, self.shape, self.affine, self.dtype, provenance)
        try:
            meta_text = json.dumps(meta, indent=2, default=_json_value)
        except TypeError as err:
            raise CohortError(f"{self.path / META_FILE}: field 'provenance' cannot be stored ({err}); expected "
                              "JSON values (str, numbers, lists, dicts, dates)") from err

        self.volumes.flush()
        self.volumes = None     # closes the memmap before the folder is renamed
        table.to_csv(self.tmp_path / PARTICIPANTS_FILE, sep="\t", index=False)
        np.save(self.tmp_path / ROI_FILE, roi.astype(np.float32))
        (self.tmp_path / META_FILE).write_text(meta_text + "\n", encoding="utf-8")
        Cohort._read_folder(self.tmp_path)   # what is on disk must pass the reader's checks before publishing
        self._publish()
        # The marker goes last: a kill before this line leaves a folder that refuses to open.
        (self.path / UNFINISHED_MARKER).unlink()
        return Cohort.open(self.path)

    def _check_volumes_finite(self, ids: pd.Series) -> None:
        """Scan subject by subject: float16 overflows to inf, and NaN would poison training."""
        bad = [i for i in range(self.n_subjects) if not np.isfinite(self.volumes[i]).all()]
        if bad:
            names = ", ".join(str(ids.iloc[i]) for i in bad[:5])
            raise CohortError(f"{self.path / VOLUMES_FILE}: {len(bad)} volume(s) hold NaN or inf ({names}"
                              f"{' ...' if len(bad) > 5 else ''}); expected finite grey-matter values"
                              f"{' within float16 range (|x| < 65504)' if self.dtype == 'float16' else ''}")

    def _publish(self) -> None:
        """Rename the finished temporary folder to `path`; an old cohort is replaced only with overwrite."""
        self._refuse_existing()
        if not self.path.exists():
            os.replace(self.tmp_path, self.path)
            return
        # A directory cannot be renamed over a non-empty one, so move the old cohort aside first;
        # at every moment `path` is either the old cohort, absent, or the new one.
        retired = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.replaced-", dir=self.path.parent))
        os.replace(self.path, retired / self.path.name)
        os.replace(self.tmp_path, self.path)
        shutil.rmtree(retired, ignore_errors=True)


def remove_abandoned_writes(path: Path) -> list[Path]:
    """Delete the hidden temporary folders of earlier writes to `path` whose process, on this host, is gone
    (a killed import); those of live processes or other hosts are left alone. Returns what was removed."""
    removed = []
    for partial in path.parent.glob(f".{path.name}.partial-*"):
        owner = read_owner(partial / UNFINISHED_MARKER)
        if owner is None:
            continue                                  # not ours, or written before markers named their owner
        if owner.gone():
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
            warnings.warn(f"removed {partial}, left by an interrupted write (process {owner.pid})", stacklevel=3)
    return removed


def write_cohort(path: str | os.PathLike, participants: pd.DataFrame, volumes: np.ndarray, roi: np.ndarray,
                 affine: np.ndarray, provenance: dict, dtype: str = "float16", overwrite: bool = False) -> Cohort:
    """Write an in-memory cohort: volumes [N, X, Y, Z], roi [N, 7, 68], participants N rows. Returns it opened."""
    volumes = np.asarray(volumes)
    if volumes.ndim != 4:
        raise CohortError(f"{Path(path) / VOLUMES_FILE}: array shape {list(volumes.shape)}; expected [N, X, Y, Z]")
    with CohortWriter(path, volumes.shape[0], volumes.shape[1:], affine, dtype=dtype, overwrite=overwrite) as writer:
        for i, volume in enumerate(volumes):
            writer.volumes[i] = volume
        return writer.finish(participants, roi, provenance)
