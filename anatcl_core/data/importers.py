"""Importers: real datasets -> the cohort layout (`anatcl import openbhb ...`, `anatcl import nifti ...`).

Two sources are supported:
  openbhb  OpenBHB as distributed: participants.tsv plus per-subject CAT12 VBM and FreeSurfer Desikan
           .npy arrays under {train,val}/derivatives/sub-<id>/; the arrays are copied as they are
           (only a leading singleton axis is dropped), so voxel order is never touched.
  nifti    any folder of CAT12 modulated grey-matter maps (mwp1*.nii[.gz]) in MNI space, a participants
           table, and Desikan measures from FreeSurfer aparc.stats files or ENIGMA-style CSV tables.
Both stream subject by subject into a CohortWriter, so memory stays at one volume whatever the cohort size.
Every refusal raises SourceDataError naming the file, the field and what was expected.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.image import resample_img
from tqdm.auto import tqdm

import anatcl_core
from anatcl_core.anatomy import CHANNELS, REGIONS
from anatcl_core.data.cohort import (GRIDS, Cohort, CohortError, CohortWriter, canonical_participants,
                                     check_participants)

Grid = tuple[tuple[int, int, int], np.ndarray]


class SourceDataError(CohortError):
    """The data being imported is incomplete or not what its format promises."""


# ----------------------------------------------------------------------------- grids and images

def resolve_grid(grid: float | Grid) -> Grid:
    """A voxel size in GRIDS (1.5 or 3.0 mm) or an explicit (shape, affine) -> (shape, [4, 4] affine)."""
    if isinstance(grid, (int, float)):
        if float(grid) not in GRIDS:
            raise SourceDataError(f"grid {grid}: unknown voxel size; expected one of {sorted(GRIDS)} mm")
        return GRIDS[float(grid)]
    shape, affine = grid
    return tuple(int(s) for s in shape), np.asarray(affine, dtype=np.float64)


def to_grid(data: np.ndarray, affine: np.ndarray, grid: Grid) -> np.ndarray:
    """Put a 3-D map [x, y, z] with voxel-to-mm `affine` on `grid`; -> float32 [X, Y, Z].

    Images already on the grid are returned unchanged. Otherwise nilearn resamples in world (mm)
    coordinates with continuous (cubic spline) interpolation, so flips, permutations and other
    resolutions all land at the right place; clipping to the input range removes spline overshoot
    (modulated GM is never negative).
    """
    shape, grid_affine = grid
    if data.shape == shape and np.allclose(affine, grid_affine, atol=1e-3):
        return np.asarray(data, dtype=np.float32)
    image = nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine)
    resampled = resample_img(image, target_affine=grid_affine, target_shape=shape, interpolation="continuous",
                             clip=True, force_resample=True, copy_header=True)
    return np.asarray(resampled.get_fdata(dtype=np.float32))


def check_mni_placement(affine: np.ndarray, shape: tuple[int, ...], where: str, grid: Grid,
                        max_centre_offset_mm: float) -> None:
    """Refuse an image whose field of view is not centred near the grid's MNI field of view.

    CAT12 writes mwp1 maps on an MNI bounding box centred near (0, -18, 18) mm; an image in scanner
    space usually has its centre elsewhere (or the voxel origin at a corner), and resampling it
    would silently produce a wrongly placed brain.
    """
    grid_shape, grid_affine = grid
    centre = (affine @ np.append((np.asarray(shape[:3]) - 1) / 2.0, 1.0))[:3]
    grid_centre = (grid_affine @ np.append((np.asarray(grid_shape) - 1) / 2.0, 1.0))[:3]
    offset = float(np.linalg.norm(centre - grid_centre))
    if not offset <= max_centre_offset_mm:
        raise SourceDataError(
            f"{where}: field 'affine' puts the image centre at {np.round(centre, 1).tolist()} mm, {offset:.0f} mm "
            f"from the MNI field of view centre {np.round(grid_centre, 1).tolist()}; expected a CAT12 map in MNI "
            f"space (within {max_centre_offset_mm:g} mm) - is this a native-space image?")


def load_gm_map(path: Path, grid: Grid, max_centre_offset_mm: float = 40.0) -> tuple[np.ndarray, bool]:
    """Read one CAT12 mwp1 map and put it on `grid`; -> (float32 [X, Y, Z], whether it was resampled).

    Refuses 4-D images (a trailing axis of length 1 is dropped first), images not placed in MNI space,
    and empty ones (all zero, or holding NaN/inf).
    """
    try:
        image = nib.load(str(path))
    except (OSError, EOFError, nib.filebasedimages.ImageFileError) as err:
        raise SourceDataError(f"{path}: not a readable NIfTI image ({err}); expected a CAT12 mwp1 map") from err
    if image.ndim == 4 and image.shape[3] == 1:
        image = nib.funcs.squeeze_image(image)
    if image.ndim != 3:
        raise SourceDataError(f"{path}: image shape {list(image.shape)} has {image.ndim} dimensions; expected one "
                              "3-D grey-matter map per file")
    check_mni_placement(image.affine, image.shape, str(path), grid, max_centre_offset_mm)
    data = image.get_fdata(dtype=np.float32)
    already_on_grid = data.shape == grid[0] and np.allclose(image.affine, grid[1], atol=1e-3)
    if not np.isfinite(data).all():
        raise SourceDataError(f"{path}: voxel values include {int((~np.isfinite(data)).sum())} NaN/inf; expected a "
                              "finite modulated grey-matter map")
    if not np.any(data):
        raise SourceDataError(f"{path}: every voxel is zero; expected a modulated grey-matter map")
    return to_grid(data, image.affine, grid), not already_on_grid


# ----------------------------------------------------------------------------- participants tables

def _repeated(values: pd.Series) -> list:
    """The values that occur more than once (first 5)."""
    return sorted(set(values[values.duplicated()]))[:5]


def read_table(path: Path, id_column: str, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A TSV/CSV participants table; `id_column` and `text_columns` kept as written (e.g. '0012', '17').

    The separator follows the suffix (.csv: comma, anything else: tab); empty cells become NaN.
    """
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    try:
        table = pd.read_csv(path, sep=sep, dtype={c: str for c in (id_column, *text_columns)},
                            keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise SourceDataError(f"{path}: not a readable {'CSV' if sep == ',' else 'TSV'} table ({err})") from err
    if id_column not in table.columns:
        raise SourceDataError(f"{path}: no column '{id_column}'; expected the subject identifier column "
                              f"(found {list(table.columns)[:12]}); set it with --id-column")
    return table


def parse_mapping(text: str, what: str) -> dict[str, str]:
    """'1=M,2=F' -> {'1': 'M', '2': 'F'}."""
    pairs = [p for p in text.split(",") if p.strip()]
    if not pairs or not all("=" in p for p in pairs):
        raise SourceDataError(f"{what}: '{text}' is not a list of VALUE=CODE pairs; expected e.g. '1=M,2=F'")
    return {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)}


def _code_key(value: object) -> str:
    """How a cell is matched against a mapping: text, case-insensitive, 2.0 written as 2."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(value).strip().lower()


def recode(table: pd.DataFrame, column: str, mapping: Mapping[str, str], where: str) -> pd.DataFrame:
    """Replace every non-empty cell of `column` using `mapping` (keys matched case-insensitively).

    A value the mapping does not cover is an error rather than passing through unchanged,
    so an unexpected code can never reach the cohort unnoticed.
    """
    if column not in table.columns:
        raise SourceDataError(f"{where}: no column '{column}' to recode; expected one of {list(table.columns)}")
    lookup = {_code_key(k): v for k, v in mapping.items()}
    present = table[column].notna()
    keys = table.loc[present, column].map(_code_key)
    unknown = sorted(set(keys) - set(lookup))
    if unknown:
        raise SourceDataError(f"{where}: column '{column}' has values {unknown[:10]} that the mapping "
                              f"{dict(mapping)} does not cover; expected every value to have a code")
    out = table.copy()
    out[column] = out[column].astype(object)
    out.loc[present, column] = keys.map(lookup)
    return out


def rename_columns(table: pd.DataFrame, renames: Mapping[str, str], where: str) -> pd.DataFrame:
    """Rename source columns to the names of data_recipes/COLUMNS.md (e.g. {'Age': 'age'})."""
    missing = [old for old in renames if old not in table.columns]
    if missing:
        raise SourceDataError(f"{where}: cannot rename missing column(s) {missing}; found {list(table.columns)}")
    return table.rename(columns=dict(renames))


# ----------------------------------------------------------------------------- Desikan measures

#: FreeSurfer aparc.stats column for each OpenBHB channel, in anatomy.CHANNELS order.
APARC_COLUMNS: dict[str, str] = {
    "surface_area_mm^2": "SurfArea",
    "gray_matter_volume_mm^3": "GrayVol",
    "average_thickness_mm": "ThickAvg",
    "thickness_stddev_mm": "ThickStd",
    "integrated_rectified_mean_curvature_mm^-1": "MeanCurv",
    "integrated_rectified_gaussian_curvature_mm^-2": "GausCurv",
    "intrinsic_curvature_index": "CurvInd",
}
#: ENIGMA column suffix (``L_bankssts_thickavg``) for the channels ENIGMA tables can carry.
ENIGMA_SUFFIXES: dict[str, str] = {
    "thickavg": "average_thickness_mm",
    "surfavg": "surface_area_mm^2",
    "grayvol": "gray_matter_volume_mm^3",
}
FILL_CHOICES = ("error", "zero")


def read_aparc_stats(path: Path) -> pd.DataFrame:
    """One FreeSurfer ?h.aparc.stats file -> DataFrame indexed by StructName, one column per ColHeader."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as err:
        raise SourceDataError(f"{path}: cannot be read ({err}); expected a FreeSurfer aparc.stats file") from err
    headers = [line.split()[2:] for line in lines if line.startswith("# ColHeaders")]
    if not headers:
        raise SourceDataError(f"{path}: no '# ColHeaders' line; expected a FreeSurfer aparc.stats table")
    body = "\n".join(line for line in lines if line.strip() and not line.startswith("#"))
    table = pd.read_csv(io.StringIO(body), sep=r"\s+", names=headers[-1], header=None)
    needed = ["StructName", *APARC_COLUMNS.values()]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise SourceDataError(f"{path}: table lacks column(s) {missing}; expected {needed}")
    if table["StructName"].duplicated().any():
        raise SourceDataError(f"{path}: field 'StructName' repeats {_repeated(table['StructName'])}; expected "
                              "each region once")
    return table.set_index("StructName")


def freesurfer_measures(stats_dir: Path) -> np.ndarray:
    """<subject>/stats holding lh.aparc.stats and rh.aparc.stats -> [7, 68] float32 in CHANNELS/REGIONS order."""
    roi = np.empty((len(CHANNELS), len(REGIONS)), dtype=np.float32)
    for hemi in ("lh", "rh"):
        path = stats_dir / f"{hemi}.aparc.stats"
        table = read_aparc_stats(path)
        names = [r[3:] for r in REGIONS if r.startswith(f"{hemi}-")]
        missing = [n for n in names if n not in table.index]
        if missing:
            raise SourceDataError(f"{path}: field 'StructName' lacks Desikan region(s) {missing}; expected all 34 "
                                  "cortical regions of the aparc (Desikan-Killiany) atlas")
        values = table.loc[names, list(APARC_COLUMNS.values())].to_numpy(dtype=np.float64).T   # [7, 34]
        if not np.isfinite(values).all():
            raise SourceDataError(f"{path}: non-numeric or missing measures; expected finite numbers")
        columns = [REGIONS.index(f"{hemi}-{n}") for n in names]
        roi[:, columns] = values
    return roi


def freesurfer_measures_by_subject(freesurfer_dir: Path, ids: Iterable[str]) -> dict[str, np.ndarray]:
    """{id: [7, 68]} for every id whose <freesurfer_dir>/<id>/stats holds both aparc.stats files."""
    found = {}
    for subject in ids:
        stats_dir = freesurfer_dir / subject / "stats"
        if (stats_dir / "lh.aparc.stats").is_file() and (stats_dir / "rh.aparc.stats").is_file():
            found[subject] = freesurfer_measures(stats_dir)
    return found


def read_enigma_file(path: Path) -> dict[str, pd.DataFrame]:
    """One ENIGMA-style CSV -> {channel: DataFrame [subjects, 68] indexed by SubjID} for each measure it holds."""
    table = pd.read_csv(path, dtype={"SubjID": str})
    if "SubjID" not in table.columns:
        raise SourceDataError(f"{path}: no column 'SubjID'; expected ENIGMA's subject identifier column")
    if table["SubjID"].duplicated().any():
        raise SourceDataError(f"{path}: column 'SubjID' repeats {_repeated(table['SubjID'])}; expected one row "
                              "per subject")
    table = table.set_index("SubjID")
    enigma_regions = [("L_" if r.startswith("lh-") else "R_") + r[3:] for r in REGIONS]
    region_columns = [c for c in table.columns if c.startswith(("L_", "R_"))]
    suffixes = sorted({c.rsplit("_", 1)[-1] for c in region_columns} & set(ENIGMA_SUFFIXES))
    if not suffixes:
        raise SourceDataError(f"{path}: no columns named like 'L_bankssts_<measure>' with a measure in "
                              f"{sorted(ENIGMA_SUFFIXES)}")
    out = {}
    for suffix in suffixes:
        columns = [f"{r}_{suffix}" for r in enigma_regions]
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise SourceDataError(f"{path}: missing column(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}; "
                                  f"expected all 68 Desikan regions for '{suffix}'")
        values = table[columns].apply(pd.to_numeric, errors="coerce")
        bad = values.index[~np.isfinite(values.to_numpy(dtype=np.float64)).all(axis=1)].tolist()
        if bad:
            raise SourceDataError(f"{path}: non-numeric or missing '{suffix}' values for SubjID {bad[:5]}; "
                                  "expected finite numbers (drop those rows or fix them)")
        out[ENIGMA_SUFFIXES[suffix]] = values
    return out


def read_enigma_tables(paths: Sequence[Path], fill_missing_channels: str = "error") -> dict[str, np.ndarray]:
    """ENIGMA-style CSVs (SubjID, L_bankssts_thickavg ... R_insula_surfavg) -> {SubjID: [7, 68] float32}.

    Each file may carry any of the suffixes in ENIGMA_SUFFIXES; subjects must appear in every file.
    Channels no file carries are an error unless fill_missing_channels='zero': the layout forbids NaN,
    and a constant channel carries no information (range normalisation maps it to 0.5 for everyone).
    """
    if fill_missing_channels not in FILL_CHOICES:
        raise SourceDataError(f"fill_missing_channels '{fill_missing_channels}': expected one of {list(FILL_CHOICES)}")
    per_channel: dict[str, pd.DataFrame] = {}
    for path in paths:
        for channel, values in read_enigma_file(Path(path)).items():
            if channel in per_channel:
                raise SourceDataError(f"{path}: channel '{channel}' already came from another file; expected once")
            per_channel[channel] = values
    missing_channels = [c for c in CHANNELS if c not in per_channel]
    if missing_channels and fill_missing_channels == "error":
        raise SourceDataError(f"{', '.join(map(str, paths))}: no column for channel(s) {missing_channels}; expected "
                              "all 7 Desikan channels, or pass --fill-missing-channels zero to store them as 0")
    ids = sorted(set.intersection(*(set(v.index) for v in per_channel.values())))
    out = {}
    for subject in ids:
        roi = np.zeros((len(CHANNELS), len(REGIONS)), dtype=np.float32)
        for channel, values in per_channel.items():
            roi[CHANNELS.index(channel)] = values.loc[subject].to_numpy(dtype=np.float32)
        out[subject] = roi
    return out


# ----------------------------------------------------------------------------- completeness

def reconcile_subjects(table_ids: Sequence[str], sources: Mapping[str, set[str]], drop_incomplete: bool,
                       where: str) -> tuple[list[str], dict[str, list[str]]]:
    """Keep the table's ids that every source has, in table order; -> (kept ids, {dropped id: reasons}).

    sources: {'image': ids with an image, 'Desikan measures': ids with measures, ...}. Ids a source has
    but the table lacks are reported too. Without drop_incomplete, any incompleteness is an error.
    """
    ids = pd.Series(list(table_ids), dtype=object)
    repeated = sorted(set(ids[ids.duplicated()]))
    if repeated:
        raise SourceDataError(f"{where}: column 'participant_id' repeats {repeated[:10]}; expected one row per "
                              "subject (keep one scan per subject, e.g. the baseline visit)")
    in_table = set(table_ids)
    dropped: dict[str, list[str]] = {}
    for subject in table_ids:
        reasons = [f"no {name}" for name, source_ids in sources.items() if subject not in source_ids]
        if reasons:
            dropped[subject] = reasons
    for name, source_ids in sources.items():
        for subject in sorted(source_ids - in_table):
            dropped.setdefault(subject, []).append(f"{name} but no participants row")
    if dropped and not drop_incomplete:
        listed = "; ".join(f"{s} ({', '.join(r)})" for s, r in list(dropped.items())[:10])
        raise SourceDataError(f"{where}: {len(dropped)} subject(s) incomplete: {listed}"
                              f"{' ...' if len(dropped) > 10 else ''}; expected an image, a participants row and "
                              "Desikan measures for every subject, or pass --drop-incomplete to leave them out")
    kept = [s for s in table_ids if s not in dropped]
    if not kept:
        raise SourceDataError(f"{where}: no subject has all of {['participants row', *sources]}; check the ids match")
    return kept, dropped


def _select_rows(table: pd.DataFrame, kept: Sequence[str], where: str) -> pd.DataFrame:
    """The rows of `kept`, in that order, checked against COLUMNS.md before any volume is written."""
    rows = table.set_index("participant_id", drop=False).loc[list(kept)].reset_index(drop=True)
    check_participants(canonical_participants(rows), len(kept), where)
    return rows


def _provenance(source: str, inputs: dict, dropped: dict[str, list[str]], extra: dict | None = None) -> dict:
    return {
        "source": source,
        "inputs": {k: str(v) for k, v in inputs.items()},
        "importer": f"anatcl_core {anatcl_core.__version__} anatcl_core.data.importers",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dropped": dropped,
        **(extra or {}),
    }


def _report_dropped(dropped: dict[str, list[str]], shown: int = 20) -> None:
    """Print the first `shown` dropped subjects; meta.json keeps the full list."""
    if dropped:
        print(f"dropped {len(dropped)} incomplete subject(s) (all listed in meta.json provenance.dropped):",
              file=sys.stderr)
        for subject, reasons in list(dropped.items())[:shown]:
            print(f"  {subject}: {', '.join(reasons)}", file=sys.stderr)


# ----------------------------------------------------------------------------- OpenBHB

OPENBHB_VBM_SUFFIX = "_preproc-cat12vbm_desc-gm_T1w.npy"
OPENBHB_ROI_SUFFIX = "_preproc-freesurfer_desc-desikan_ROI.npy"
#: OpenBHB `split` values -> the `split` column of COLUMNS.md. The train/ folder holds `train`;
#: val/ holds both test sets, so the folder alone cannot tell internal (same scanners as training)
#: from external (unseen scanners): the split column decides, and the folder must agree with it.
OPENBHB_SPLITS = {"train": "train", "internal_test": "internal_test", "external_test": "external_test",
                  "internal_val": "internal_test", "external_val": "external_test"}
OPENBHB_FOLDERS = {"train": "train", "internal_test": "val", "external_test": "val"}
OPENBHB_SEX_CODES = {"male": "M", "female": "F", "m": "M", "f": "F"}
OPENBHB_DIAGNOSIS_CODES = {"control": "control", "hc": "control", "healthy": "control"}
#: Identifier-like OpenBHB columns read as text so that '17' does not become '17.0'.
OPENBHB_TEXT_COLUMNS = ("site", "study", "siteXacq")


def find_openbhb_arrays(src: Path, suffix: str) -> dict[str, Path]:
    """{subject id: path} for <src>/{train,val}/derivatives/sub-<id>/**/sub-<id><suffix>."""
    found: dict[str, Path] = {}
    for folder in ("train", "val"):
        for path in sorted((src / folder / "derivatives").glob(f"sub-*/**/sub-*{suffix}")):
            subject = path.name[len("sub-"):-len(suffix)]
            if subject in found:
                raise SourceDataError(f"{path}: subject {subject} also at {found[subject]}; expected one scan "
                                      "per subject")
            found[subject] = path
    return found


def _openbhb_folder(path: Path, src: Path) -> str:
    return path.relative_to(src).parts[0]


def openbhb_participants(table: pd.DataFrame, where: str) -> pd.DataFrame:
    """OpenBHB participants.tsv -> COLUMNS.md columns (sex M/F, diagnosis control, split), others kept."""
    for column in ("participant_id", "age", "sex", "site", "diagnosis", "split"):
        if column not in table.columns:
            raise SourceDataError(f"{where}: no column '{column}'; expected OpenBHB's participants.tsv "
                                  "(participant_id, study, sex, age, site, diagnosis, ..., siteXacq, split)")
    table = recode(table, "sex", OPENBHB_SEX_CODES, where)
    table = recode(table, "diagnosis", OPENBHB_DIAGNOSIS_CODES, where)
    table = recode(table, "split", OPENBHB_SPLITS, where)
    first = ["participant_id", "age", "sex", "site", "diagnosis", "split"]
    return table[first + [c for c in table.columns if c not in first]]


def _check_openbhb_resources(src: Path) -> None:
    """When OpenBHB's resource/ folder is present, its channel and region names must match anatomy.py."""
    channels_file = src / "resource" / "freesurfer_channels.txt"
    if channels_file.is_file():
        names = [line.strip() for line in channels_file.read_text().splitlines() if line.strip()]
        if names != list(CHANNELS):
            raise SourceDataError(f"{channels_file}: channels {names}; expected {list(CHANNELS)} in this order "
                                  "(pass check_resources=False / --no-resource-check if only the spelling differs)")
    resources = src / "resource" / "resources.json"
    if resources.is_file():
        features = json.loads(resources.read_text()).get("desikan_roi", {}).get("features")
        if isinstance(features, list) and len(features) == len(REGIONS) and features != list(REGIONS):
            raise SourceDataError(f"{resources}: field 'desikan_roi.features' lists regions {features[:3]} ...; "
                                  f"expected {list(REGIONS[:3])} ... (anatomy.REGIONS order)")


def _load_openbhb_array(path: Path, shape: tuple[int, ...], mmap: bool) -> np.ndarray:
    """Load one per-subject array; drop a leading singleton channel, nothing else."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise SourceDataError(f"{path}: not a readable .npy array ({err})") from err
    if array.ndim == len(shape) + 1 and array.shape[0] == 1:
        array = array[0]
    if tuple(array.shape) != tuple(shape):
        raise SourceDataError(f"{path}: array shape {list(array.shape)}; expected {list(shape)} (or [1, ...])")
    return array


def import_openbhb(src: str | Path, dest: str | Path, *, grid: float | Grid = 1.5, source_grid: float | Grid = 1.5,
                   dtype: str = "float16", drop_incomplete: bool = False, overwrite: bool = False,
                   check_resources: bool = True, progress: bool = True) -> Cohort:
    """Convert an OpenBHB download at `src` into the cohort folder `dest`.

    src: folder with participants.tsv and {train,val}/derivatives/; source_grid: the grid of the .npy
    maps (CAT12 1.5 mm as distributed); grid: the cohort's grid (3.0 resamples for fast CPU runs).
    Returns the opened Cohort. Subjects keep participants.tsv order.
    """
    src, dest = Path(src), Path(dest)
    table_path = src / "participants.tsv"
    if not table_path.is_file():
        raise SourceDataError(f"{table_path}: missing; expected OpenBHB's participants.tsv at the top of {src}")
    if check_resources:
        _check_openbhb_resources(src)
    table = openbhb_participants(read_table(table_path, "participant_id", OPENBHB_TEXT_COLUMNS), str(table_path))
    table["participant_id"] = table["participant_id"].str.strip()
    vbm = find_openbhb_arrays(src, OPENBHB_VBM_SUFFIX)
    roi = find_openbhb_arrays(src, OPENBHB_ROI_SUFFIX)
    kept, dropped = reconcile_subjects(table["participant_id"].tolist(),
                                       {"VBM map": set(vbm), "Desikan ROI array": set(roi)},
                                       drop_incomplete, str(src))
    table = _select_rows(table, kept, str(table_path))
    misplaced = [f"{s} (split {sp}, folder {_openbhb_folder(vbm[s], src)})"
                 for s, sp in zip(table["participant_id"], table["split"])
                 if _openbhb_folder(vbm[s], src) != OPENBHB_FOLDERS[sp]]
    if misplaced:
        raise SourceDataError(f"{table_path}: column 'split' disagrees with the folder for {misplaced[:5]}; expected "
                              "train subjects under train/ and internal/external test subjects under val/")

    source, target = resolve_grid(source_grid), resolve_grid(grid)
    with CohortWriter(dest, len(kept), target[0], target[1], dtype=dtype, overwrite=overwrite) as writer:
        measures = np.empty((len(kept), len(CHANNELS), len(REGIONS)), dtype=np.float32)
        for i, subject in enumerate(tqdm(kept, desc=f"openbhb -> {dest.name}", unit="subject", disable=not progress)):
            volume = _load_openbhb_array(vbm[subject], source[0], mmap=True)
            writer.volumes[i] = to_grid(volume, source[1], target)
            measures[i] = _load_openbhb_array(roi[subject], (len(CHANNELS), len(REGIONS)), mmap=False)
            if not np.isfinite(measures[i]).all():
                raise SourceDataError(f"{roi[subject]}: NaN or inf among the Desikan measures; expected finite values "
                                      "(the cohort layout forbids NaN)")
        provenance = _provenance("OpenBHB", {"src": src}, dropped, {
            "split_mapping": OPENBHB_SPLITS, "sex_mapping": OPENBHB_SEX_CODES,
            "resampled_from": None if np.allclose(source[1], target[1]) and source[0] == target[0]
            else {"shape": list(source[0]), "affine": np.asarray(source[1]).tolist()}})
        cohort = writer.finish(table, measures, provenance)
    _report_dropped(dropped)
    return cohort


# ----------------------------------------------------------------------------- NIfTI folders

#: Default subject id: the file name between the CAT12 'mwp1' prefix and an optional '_T1w' + extension.
DEFAULT_ID_PATTERN = r"mwp1(?P<id>[^/]+?)(?:_T1w)?\.nii(?:\.gz)?$"


def find_gm_maps(images_dir: Path, pattern: str = "mwp1*.nii*", id_pattern: str = DEFAULT_ID_PATTERN
                 ) -> dict[str, Path]:
    """{subject id: path} for files under images_dir matching `pattern`; the id is the 'id' group (or the
    first group) of `id_pattern` searched in the path relative to images_dir."""
    regex = re.compile(id_pattern)
    found: dict[str, Path] = {}
    for path in sorted(images_dir.rglob(pattern)):
        if not path.name.endswith((".nii", ".nii.gz")):
            continue
        match = regex.search(path.relative_to(images_dir).as_posix())
        if match is None:
            raise SourceDataError(f"{path}: the id pattern {id_pattern!r} does not match this file; expected "
                                  "it to capture the subject id (set --id-pattern)")
        subject = match.groupdict().get("id") or match.group(1)
        if subject in found:
            raise SourceDataError(f"{path}: subject id '{subject}' also given by {found[subject]}; expected one "
                                  "image per subject")
        found[subject] = path
    if not found:
        raise SourceDataError(f"{images_dir}: no file matches {pattern!r}; expected CAT12 mwp1*.nii[.gz] maps")
    return found


def prepare_participants(participants: str | Path | pd.DataFrame, id_column: str = "participant_id",
                         renames: Mapping[str, str] | None = None,
                         recodes: Mapping[str, Mapping[str, str]] | None = None,
                         constants: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Bring a participants table (a TSV/CSV path or a DataFrame) to COLUMNS.md: rename, add constants, recode.

    renames: {source column: contract column}; constants: {column: value} (e.g. a single-site study's
    'site'); recodes: {column: {source value: code}} (e.g. {'sex': {'1': 'M', '2': 'F'}}).
    """
    if isinstance(participants, pd.DataFrame):
        where, table = "participants table", participants.copy()
        if id_column not in table.columns:
            raise SourceDataError(f"{where}: no column '{id_column}'; expected the subject identifier column")
    else:
        where, table = str(participants), read_table(Path(participants), id_column)
    table = rename_columns(table, {id_column: "participant_id", **(renames or {})}, where)
    for column, value in (constants or {}).items():
        table[column] = value
    for column, mapping in (recodes or {}).items():
        table = recode(table, column, mapping, where)
    table["participant_id"] = table["participant_id"].astype(str).str.strip()
    return table


def import_nifti(images_dir: str | Path, participants: str | Path | pd.DataFrame, dest: str | Path, *,
                 id_column: str = "participant_id", renames: Mapping[str, str] | None = None,
                 recodes: Mapping[str, Mapping[str, str]] | None = None, constants: Mapping[str, str] | None = None,
                 freesurfer_dir: str | Path | None = None, enigma_csvs: Sequence[str | Path] = (),
                 fill_missing_channels: str = "error", pattern: str = "mwp1*.nii*",
                 id_pattern: str = DEFAULT_ID_PATTERN, grid: float | Grid = 1.5, dtype: str = "float16",
                 max_centre_offset_mm: float = 40.0, drop_incomplete: bool = False, overwrite: bool = False,
                 progress: bool = True, source: str = "NIfTI folder") -> Cohort:
    """Convert CAT12 mwp1 maps + a participants table + Desikan measures into the cohort folder `dest`.

    participants: a TSV/CSV path or a DataFrame (a recipe's convert.py builds one from the study's tables).
    Measures come from exactly one of freesurfer_dir (<dir>/<participant_id>/stats/?h.aparc.stats)
    or enigma_csvs (SubjID + L_/R_<region>_<thickavg|surfavg|grayvol> columns).
    Returns the opened Cohort, subjects in participants-table order.
    """
    images_dir, dest = Path(images_dir), Path(dest)
    table_name = "participants table" if isinstance(participants, pd.DataFrame) else str(participants)
    if (freesurfer_dir is None) == (not enigma_csvs):
        raise SourceDataError(f"{dest}: Desikan measures need exactly one source; expected freesurfer_dir "
                              "(--freesurfer-dir) or enigma_csvs (--enigma-csv)")
    table = prepare_participants(participants, id_column, renames, recodes, constants)
    images = find_gm_maps(images_dir, pattern, id_pattern)
    if freesurfer_dir is not None:
        measures = freesurfer_measures_by_subject(Path(freesurfer_dir), set(table["participant_id"]) | set(images))
    else:
        measures = read_enigma_tables([Path(p) for p in enigma_csvs], fill_missing_channels)
    kept, dropped = reconcile_subjects(table["participant_id"].tolist(),
                                       {"image": set(images), "Desikan measures": set(measures)},
                                       drop_incomplete, f"{images_dir} + {table_name}")
    table = _select_rows(table, kept, table_name)

    target = resolve_grid(grid)
    resampled = []
    with CohortWriter(dest, len(kept), target[0], target[1], dtype=dtype, overwrite=overwrite) as writer:
        for i, subject in enumerate(tqdm(kept, desc=f"nifti -> {dest.name}", unit="subject", disable=not progress)):
            writer.volumes[i], was_resampled = load_gm_map(images[subject], target, max_centre_offset_mm)
            if was_resampled:
                resampled.append(subject)
        roi = np.stack([measures[s] for s in kept])
        provenance = _provenance(source, {"images": images_dir, "participants": table_name,
                                          "measures": freesurfer_dir or ", ".join(map(str, enigma_csvs))}, dropped, {
            "measures_from": "freesurfer aparc.stats" if freesurfer_dir is not None else "ENIGMA CSV",
            "channel_mapping": APARC_COLUMNS if freesurfer_dir is not None else ENIGMA_SUFFIXES,
            "filled_channels": [] if freesurfer_dir is not None or fill_missing_channels == "error"
            else "zero for channels absent from the CSVs",
            "resampled_subjects": resampled})
        cohort = writer.finish(table, roi, provenance)
    _report_dropped(dropped)
    return cohort


# ----------------------------------------------------------------------------- command line

def _pairs(values: Sequence[str] | None, what: str) -> dict[str, str]:
    return parse_mapping(",".join(values), what) if values else {}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`anatcl import openbhb SRC DEST` and `anatcl import nifti --images ... DEST`."""
    sub = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    openbhb = sub.add_parser("openbhb", help="OpenBHB as distributed (participants.tsv + {train,val}/derivatives)")
    openbhb.add_argument("src", type=Path, help="OpenBHB folder holding participants.tsv, train/ and val/")
    openbhb.add_argument("--no-resource-check", action="store_true",
                         help="skip comparing resource/freesurfer_channels.txt with the expected channel order")

    nifti = sub.add_parser("nifti", help="CAT12 mwp1 NIfTI maps + participants table + FreeSurfer/ENIGMA measures")
    nifti.add_argument("--images", type=Path, required=True, help="folder searched recursively for the maps")
    nifti.add_argument("--pattern", default="mwp1*.nii*", help="file name glob (default %(default)s)")
    nifti.add_argument("--id-pattern", default=DEFAULT_ID_PATTERN,
                       help="regex on the path below --images whose 'id' group is the subject id")
    nifti.add_argument("--participants", type=Path, required=True, help="participants table (.tsv or .csv)")
    nifti.add_argument("--id-column", default="participant_id", help="subject id column of the table")
    nifti.add_argument("--rename", action="append", metavar="OLD=NEW", help="rename a column (repeatable)")
    nifti.add_argument("--constant", action="append", metavar="COLUMN=VALUE",
                       help="add a column with one value, e.g. site=OAS (repeatable)")
    nifti.add_argument("--recode", action="append", nargs=2, metavar=("COLUMN", "VALUE=CODE,..."),
                       help="recode a column, e.g. --recode sex 1=M,2=F (repeatable; unmapped values are errors)")
    measures = nifti.add_mutually_exclusive_group(required=True)
    measures.add_argument("--freesurfer-dir", type=Path,
                          help="SUBJECTS_DIR holding <participant_id>/stats/{lh,rh}.aparc.stats")
    measures.add_argument("--enigma-csv", type=Path, action="append",
                          help="ENIGMA table with SubjID and L_/R_<region>_<thickavg|surfavg|grayvol> (repeatable)")
    nifti.add_argument("--fill-missing-channels", choices=FILL_CHOICES, default="error",
                       help="channels the ENIGMA tables lack: 'error' (default) or store them as 'zero'")
    nifti.add_argument("--max-centre-offset-mm", type=float, default=40.0,
                       help="refuse images whose centre is further than this from the MNI field of view centre")
    nifti.add_argument("--source-name", default="NIfTI folder", help="dataset name recorded in meta.json provenance")

    for command in (openbhb, nifti):
        command.add_argument("dest", type=Path, help="cohort folder to create, e.g. data/openbhb")
        command.add_argument("--grid", type=float, default=1.5, choices=sorted(GRIDS),
                             help="voxel size of the cohort grid in mm (default %(default)s, the CAT12 grid)")
        command.add_argument("--dtype", default="float16", choices=["float16", "float32"],
                             help="storage type of vbm.npy (default %(default)s)")
        command.add_argument("--drop-incomplete", action="store_true",
                             help="leave out subjects lacking an image, a table row or measures, and list them")
        command.add_argument("--overwrite", action="store_true", help="replace an existing cohort at DEST")
        command.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Run the chosen importer; a refusal prints its message and returns 1 instead of a traceback."""
    common = dict(grid=args.grid, dtype=args.dtype, drop_incomplete=args.drop_incomplete,
                  overwrite=args.overwrite, progress=not args.quiet)
    try:
        if args.source == "openbhb":
            cohort = import_openbhb(args.src, args.dest, check_resources=not args.no_resource_check, **common)
        else:
            cohort = import_nifti(
                args.images, args.participants, args.dest, id_column=args.id_column,
                renames=_pairs(args.rename, "--rename"), constants=_pairs(args.constant, "--constant"),
                recodes={column: parse_mapping(text, f"--recode {column}") for column, text in args.recode or []},
                freesurfer_dir=args.freesurfer_dir, enigma_csvs=args.enigma_csv or (),
                fill_missing_channels=args.fill_missing_channels, pattern=args.pattern, id_pattern=args.id_pattern,
                max_centre_offset_mm=args.max_centre_offset_mm, source=args.source_name, **common)
    except CohortError as err:
        print(f"anatcl import {args.source}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {cohort!r}")
    return 0
