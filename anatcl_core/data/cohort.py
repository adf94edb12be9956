"""The cohort layout: one folder per cohort, read as a `Cohort`, written by a `CohortWriter`.

    <root>/<cohort>/participants.tsv   one row per subject: participant_id, age, sex, site, diagnosis, ...
    <root>/<cohort>/vbm.npy            [N, X, Y, Z] modulated grey-matter maps, float16 or float32
    <root>/<cohort>/desikan_roi.npy    [N, 7, 68] float32 Desikan-Killiany measures, NaN-free
    <root>/<cohort>/meta.json          grid, channel and region names, provenance, layout version

Row i of the table describes `vbm.npy[i]` and `desikan_roi.npy[i]`. Every check runs both when a
cohort is opened and before one is written, so a folder that `Cohort.open` accepts is always usable.
Writes go to a hidden temporary folder beside the target and are renamed into place at the end,
so an interrupted write never leaves a folder that opens as a cohort.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import socket
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anatcl_core.anatomy import CHANNELS, REGIONS
from anatcl_core.atomic import process_alive

LAYOUT_VERSION = 1
KNOWN_LAYOUT_VERSIONS = (1,)

PARTICIPANTS_FILE = "participants.tsv"
VOLUMES_FILE = "vbm.npy"
ROI_FILE = "desikan_roi.npy"
META_FILE = "meta.json"
LAYOUT_FILES = (PARTICIPANTS_FILE, VOLUMES_FILE, ROI_FILE, META_FILE)
#: Present only while a writer is filling a temporary folder; `Cohort.open` refuses folders holding it.
UNFINISHED_MARKER = ".unfinished"

REQUIRED_COLUMNS = ("participant_id", "age", "sex", "site", "diagnosis")
TEXT_COLUMNS = ("participant_id", "sex", "site", "diagnosis")
SEXES = ("M", "F")
VOLUME_DTYPES = ("float16", "float32")


def _frozen(array: list[list[float]]) -> np.ndarray:
    out = np.array(array, dtype=np.float64)
    out.setflags(write=False)
    return out


#: voxel size (mm) -> (grid shape, voxel-to-MNI affine). 1.5 mm is CAT12's own output grid;
#: 3 mm keeps the same field of view and origin for fast CPU runs.
GRIDS: dict[float, tuple[tuple[int, int, int], np.ndarray]] = {
    1.5: ((121, 145, 121), _frozen([[-1.5, 0, 0, 90], [0, 1.5, 0, -126], [0, 0, 1.5, -72], [0, 0, 0, 1]])),
    3.0: ((61, 73, 61), _frozen([[-3, 0, 0, 90], [0, 3, 0, -126], [0, 0, 3, -72], [0, 0, 0, 1]])),
}


class CohortError(ValueError):
    """A cohort folder, or data about to be written as one, breaks the layout contract."""


# ----------------------------------------------------------------------------- grid

def find_grid(shape: tuple[int, ...], affine: np.ndarray) -> float | None:
    """Voxel size (mm) of the known grid with this shape and affine, or None."""
    for voxel_size, (grid_shape, grid_affine) in GRIDS.items():
        if tuple(shape) == grid_shape and np.allclose(affine, grid_affine, atol=1e-4):
            return voxel_size
    return None


def check_grid(shape: Any, affine: Any, where: str, voxel_size_mm: Any = None) -> None:
    """Refuse a grid that is not a 3-D shape with an axis-aligned (diagonal) 4x4 voxel-to-mm affine.

    shape: 3 positive ints (voxels); affine: [4, 4] (mm); voxel_size_mm: optional [3] to compare
    with the affine's diagonal. A shape equal to a known grid's must come with that grid's affine,
    which catches left-right flips (the sign of affine[0, 0]).
    """
    shape = tuple(shape)
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in shape):
        raise CohortError(f"{where}: field 'shape' is {list(shape)}; expected 3 positive integers (voxels)")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.isfinite(affine).all():
        raise CohortError(f"{where}: field 'affine' has shape {list(affine.shape)} or non-finite values; "
                          "expected a finite 4x4 voxel-to-mm matrix")
    if not np.allclose(affine[3], [0, 0, 0, 1]):
        raise CohortError(f"{where}: field 'affine' last row is {affine[3].tolist()}; expected [0, 0, 0, 1]")
    rotation = affine[:3, :3]
    if not np.allclose(rotation, np.diag(np.diag(rotation)), atol=1e-6) or np.any(np.diag(rotation) == 0):
        raise CohortError(f"{where}: field 'affine' is not axis-aligned ({rotation.tolist()}); expected a "
                          "diagonal voxel size as on the CAT12 grid (resample the images first)")
    if voxel_size_mm is not None:
        sizes = np.asarray(voxel_size_mm, dtype=np.float64)
        if sizes.shape != (3,) or not np.allclose(sizes, np.abs(np.diag(rotation)), atol=1e-5):
            raise CohortError(f"{where}: field 'voxel_size_mm' is {np.atleast_1d(sizes).tolist()}; expected the "
                              f"affine's diagonal {np.abs(np.diag(rotation)).tolist()}")
    for voxel_size, (grid_shape, grid_affine) in GRIDS.items():
        if shape == grid_shape and not np.allclose(affine, grid_affine, atol=1e-4):
            raise CohortError(f"{where}: field 'affine' is {affine.tolist()} but the shape {list(shape)} is the "
                              f"{voxel_size} mm CAT12 grid, whose affine is {grid_affine.tolist()}; a different "
                              "sign on the diagonal means a flipped axis (e.g. left-right swapped)")


# ----------------------------------------------------------------------------- participants

def _rows_preview(mask: np.ndarray, values: pd.Series, limit: int = 5) -> str:
    """'rows 4 ('n/a'), 9 ('x')' for the first `limit` rows where mask is True (0-based data rows)."""
    rows = np.flatnonzero(mask)
    shown = ", ".join(f"{r} ({values.iloc[r]!r})" for r in rows[:limit])
    more = f" and {len(rows) - limit} more" if len(rows) > limit else ""
    return f"rows {shown}{more}"


def _missing_text(values: pd.Series) -> np.ndarray:
    """True where a text cell is missing or blank."""
    return (values.isna() | values.astype(str).str.strip().eq("")).to_numpy()


def check_participants(table: pd.DataFrame, n_subjects: int, where: str) -> None:
    """Refuse a participants table that breaks the contract of data_recipes/COLUMNS.md.

    table: one row per subject, in volume order; n_subjects: rows expected (from vbm.npy).
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise CohortError(f"{where}: missing column(s) {missing}; expected at least {list(REQUIRED_COLUMNS)}")
    if table.columns.duplicated().any():
        raise CohortError(f"{where}: duplicated column name(s) "
                          f"{sorted(set(table.columns[table.columns.duplicated()]))}; expected unique names")
    if len(table) != n_subjects:
        raise CohortError(f"{where}: {len(table)} rows but {VOLUMES_FILE} holds {n_subjects} subjects; "
                          "expected one row per subject, in the same order")
    ids = table["participant_id"]
    blank = _missing_text(ids)
    if blank.any():
        raise CohortError(f"{where}: column 'participant_id' is empty at {_rows_preview(blank, ids)}; "
                          "expected a non-empty identifier on every row")
    duplicated = ids.astype(str).duplicated(keep=False).to_numpy()
    if duplicated.any():
        raise CohortError(f"{where}: column 'participant_id' has repeated values at "
                          f"{_rows_preview(duplicated, ids)}; expected one row per subject")
    age = pd.to_numeric(table["age"], errors="coerce")
    bad_age = ~np.isfinite(age.to_numpy(dtype=np.float64))
    if bad_age.any():
        raise CohortError(f"{where}: column 'age' has {int(bad_age.sum())} non-numeric or missing values "
                          f"({_rows_preview(bad_age, table['age'])}); expected age at scan in years")
    bad_sex = ~table["sex"].isin(SEXES).to_numpy()
    if bad_sex.any():
        raise CohortError(f"{where}: column 'sex' has {int(bad_sex.sum())} values outside {list(SEXES)} "
                          f"({_rows_preview(bad_sex, table['sex'])}); expected 'M' or 'F'")
    for column in ("site", "diagnosis"):
        blank = _missing_text(table[column])
        if blank.any():
            raise CohortError(f"{where}: column '{column}' is empty at {_rows_preview(blank, table[column])}; "
                              f"expected a value on every row ('control' for healthy controls in 'diagnosis')")


def canonical_participants(table: pd.DataFrame) -> pd.DataFrame:
    """A copy with a 0..N-1 index, text columns as str and age as float years (missing cells kept)."""
    out = table.reset_index(drop=True).copy()
    for column in TEXT_COLUMNS:
        if column in out.columns:
            out[column] = out[column].map(lambda v: v if pd.isna(v) else str(v)).astype(object)
    if "age" in out.columns:
        numeric = pd.to_numeric(out["age"], errors="coerce")
        if numeric.notna().sum() == out["age"].notna().sum():   # only convert when nothing would be lost
            out["age"] = numeric.astype(np.float64)
    return out


def read_participants(path: Path) -> pd.DataFrame:
    """participants.tsv -> DataFrame; empty cells become NaN, text such as 'NA' stays text."""
    try:
        table = pd.read_csv(path, sep="\t", dtype={c: str for c in TEXT_COLUMNS},
                            keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CohortError(f"{path}: not a readable tab-separated table ({err}); expected a header row "
                          "then one row per subject") from err
    return canonical_participants(table)


# ----------------------------------------------------------------------------- arrays and meta

def check_volumes_array(shape: tuple[int, ...], dtype: np.dtype, meta: dict, where: str) -> None:
    """vbm.npy must be [n_subjects, *meta.shape] in meta's dtype (float16 or float32)."""
    expected = (meta["n_subjects"], *meta["shape"])
    if tuple(shape) != expected:
        raise CohortError(f"{where}: array shape {list(shape)}; expected [n_subjects, X, Y, Z] = {list(expected)} "
                          f"from {META_FILE}")
    if np.dtype(dtype).name != meta["dtype"]:
        raise CohortError(f"{where}: dtype {np.dtype(dtype).name}; expected {meta['dtype']} as in {META_FILE}")


def check_roi(roi: np.ndarray, n_subjects: int, where: str) -> None:
    """roi: [n_subjects, 7, 68] floating, finite (the layout forbids NaN)."""
    expected = (n_subjects, len(CHANNELS), len(REGIONS))
    if roi.shape != expected:
        raise CohortError(f"{where}: array shape {list(roi.shape)}; expected [N, channels, regions] = "
                          f"{list(expected)}")
    if not np.issubdtype(roi.dtype, np.floating):
        raise CohortError(f"{where}: dtype {roi.dtype}; expected float32 measures")
    finite = np.isfinite(roi).all(axis=(1, 2))
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise CohortError(f"{where}: {len(rows)} subject(s) have NaN or infinite measures (rows "
                          f"{', '.join(map(str, rows[:5]))}{' ...' if len(rows) > 5 else ''}); expected finite "
                          "values for every channel and region")


def check_meta(meta: Any, where: str) -> None:
    """meta.json must name the layout version, grid, dtype, subject count, channels and regions."""
    if not isinstance(meta, dict):
        raise CohortError(f"{where}: top level is {type(meta).__name__}; expected a JSON object")
    required = ("layout_version", "shape", "affine", "voxel_size_mm", "dtype", "n_subjects",
                "channels", "regions", "provenance")
    missing = [k for k in required if k not in meta]
    if missing:
        raise CohortError(f"{where}: missing field(s) {missing}; expected all of {list(required)}")
    if meta["layout_version"] not in KNOWN_LAYOUT_VERSIONS:
        raise CohortError(f"{where}: field 'layout_version' is {meta['layout_version']!r}; expected one of "
                          f"{list(KNOWN_LAYOUT_VERSIONS)} (a newer anatcl_core may read it)")
    check_grid(meta["shape"], meta["affine"], where, voxel_size_mm=meta["voxel_size_mm"])
    if meta["dtype"] not in VOLUME_DTYPES:
        raise CohortError(f"{where}: field 'dtype' is {meta['dtype']!r}; expected one of {list(VOLUME_DTYPES)}")
    n = meta["n_subjects"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise CohortError(f"{where}: field 'n_subjects' is {n!r}; expected a positive integer")
    if list(meta["channels"]) != list(CHANNELS):
        raise CohortError(f"{where}: field 'channels' is {meta['channels']!r}; expected exactly "
                          f"anatcl_core.anatomy.CHANNELS {list(CHANNELS)}")
    if list(meta["regions"]) != list(REGIONS):
        raise CohortError(f"{where}: field 'regions' differs from anatcl_core.anatomy.REGIONS; expected the 34 "
                          "left then 34 right Desikan-Killiany regions named 'lh-bankssts' ... 'rh-insula'")
    if not isinstance(meta["provenance"], dict):
        raise CohortError(f"{where}: field 'provenance' is {type(meta['provenance']).__name__}; expected an object")


def build_meta(n_subjects: int, shape: tuple[int, int, int], affine: np.ndarray, dtype: str,
               provenance: dict) -> dict:
    """The meta.json content for a cohort of n_subjects volumes on the given grid."""
    affine = np.asarray(affine, dtype=np.float64)
    return {
        "layout_version": LAYOUT_VERSION,
        "shape": [int(s) for s in shape],
        "affine": affine.tolist(),
        "voxel_size_mm": np.abs(np.diag(affine[:3, :3])).tolist(),
        "dtype": np.dtype(dtype).name,
        "n_subjects": int(n_subjects),
        "channels": list(CHANNELS),
        "regions": list(REGIONS),
        "provenance": dict(provenance),
    }


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


# ----------------------------------------------------------------------------- reader

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


# ----------------------------------------------------------------------------- writer

class CohortWriter:
    """Stream subjects into a new cohort folder without holding all volumes in memory.

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
            (self.tmp_path / UNFINISHED_MARKER).write_text(f"{os.getpid()} {socket.gethostname()}\n")
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
        try:
            pid, host = (partial / UNFINISHED_MARKER).read_text().split()
        except (OSError, ValueError):
            continue                                  # not ours, or written before markers named their owner
        if host == socket.gethostname() and not process_alive(int(pid)):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
            warnings.warn(f"removed {partial}, left by an interrupted write (process {pid})", stacklevel=3)
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
