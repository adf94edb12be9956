"""The cohort layout's contract: its file names, known grids and version, and what each file must hold.

Every check here raises `CohortError` with one line naming the file, the field and what was expected. The reader
(`cohort_reader.Cohort.open`) runs them on a folder, the writer (`cohort_writer.CohortWriter.finish`) on data
before it is written, so both sides hold the same contract. Alongside the checks are the canonical forms they
compare against: `canonical_participants` / `read_participants` for participants.tsv, `build_meta` for meta.json.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anatcl_core.anatomy import CHANNELS, REGIONS

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
    """vbm.npy must be ``[n_subjects, *meta.shape]`` in meta's dtype (float16 or float32)."""
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
