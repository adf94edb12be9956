"""The OpenBHB importer: participants.tsv plus per-subject CAT12 VBM and Desikan .npy arrays -> a cohort folder.

The arrays are copied as they are (only a leading singleton axis is dropped), so voxel order is never
touched; the OPENBHB_* tables say how OpenBHB's files, splits and codes map onto COLUMNS.md.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from anatcl_core.anatomy import CHANNELS, REGIONS
from anatcl_core.data.cohort import Cohort, CohortWriter
from anatcl_core.data.importers.errors import SourceDataError
from anatcl_core.data.importers.images import Grid, resolve_grid, to_grid
from anatcl_core.data.importers.subjects import provenance_record, reconcile_subjects, report_dropped, select_rows
from anatcl_core.data.importers.tables import read_table, recode


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
    """{subject id: path} for ``<src>/{train,val}/derivatives/sub-<id>/**/sub-<id><suffix>``."""
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

    Each subject needs a participants.tsv row, a VBM map and a Desikan ROI array, and its folder (train/
    or val/) must agree with its split. A refusal raises SourceDataError naming the file and the field;
    `dest` and `dtype` are checked by CohortWriter, which raises its parent class CohortError.

    Args:
        src: folder with participants.tsv and {train,val}/derivatives/sub-<id>/ holding
            sub-<id>_preproc-cat12vbm_desc-gm_T1w.npy and sub-<id>_preproc-freesurfer_desc-desikan_ROI.npy.
            A missing participants.tsv, a missing column, or an unknown sex/diagnosis/split code is refused.
        dest: cohort folder to create; an existing path is refused unless `overwrite`.
        grid: the cohort grid: a voxel size in mm (1.5, the CAT12 grid, default; 3.0 resamples for fast CPU
            runs) or an explicit (shape, [4, 4] voxel-to-mm affine); another voxel size is refused.
        source_grid: the grid of the .npy maps (default 1.5, CAT12 as distributed); a map of another shape
            (after dropping a leading axis of length 1) is refused.
        dtype: storage type of vbm.npy, 'float16' (default) or 'float32'; another is refused.
        drop_incomplete: leave out (and print, and list in meta.json) subjects lacking a row, a VBM map or
            a ROI array, instead of refusing them all (default False).
        overwrite: replace an existing cohort at `dest` (default False); a folder this library did not
            write is never deleted.
        check_resources: when src/resource/ is present, compare its channel and region names with
            anatomy.CHANNELS and anatomy.REGIONS and refuse a different order (default True).
        progress: show a progress bar on stderr (default True).

    Returns:
        The opened Cohort, subjects in participants.tsv order; volumes float [N, X, Y, Z] on `grid`,
        measures [N, 7, 68] as stored (NaN or inf is refused).
    """
    src, dest = Path(src), Path(dest)
    table_path = src / "participants.tsv"
    if not os.path.lexists(table_path):          # anything else there (a folder, a pipe) is named by read_table
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
    table = select_rows(table, kept, str(table_path))
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
        provenance = provenance_record("OpenBHB", {"src": src}, dropped, {
            "split_mapping": OPENBHB_SPLITS, "sex_mapping": OPENBHB_SEX_CODES,
            "resampled_from": None if np.allclose(source[1], target[1]) and source[0] == target[0]
            else {"shape": list(source[0]), "affine": np.asarray(source[1]).tolist()}})
        cohort = writer.finish(table, measures, provenance)
    report_dropped(dropped)
    return cohort
