"""The NIfTI folder importer: CAT12 mwp1 maps + a participants table + Desikan measures -> a cohort folder.

Images are found by a file glob and a subject-id regex (find_gm_maps), put on the cohort grid one at a
time, and matched with the table and with FreeSurfer or ENIGMA measures before anything is written.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from anatcl_core.data.cohort import Cohort, CohortWriter
from anatcl_core.data.importers.errors import SourceDataError
from anatcl_core.data.importers.images import Grid, load_gm_map, resolve_grid
from anatcl_core.data.importers.measures import (APARC_COLUMNS, ENIGMA_SUFFIXES, freesurfer_measures_by_subject,
                                                 read_enigma_tables)
from anatcl_core.data.importers.subjects import provenance_record, reconcile_subjects, report_dropped, select_rows
from anatcl_core.data.importers.tables import prepare_participants


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


def import_nifti(images_dir: str | Path, participants: str | Path | pd.DataFrame, dest: str | Path, *,
                 id_column: str = "participant_id", renames: Mapping[str, str] | None = None,
                 recodes: Mapping[str, Mapping[str, str]] | None = None, constants: Mapping[str, str] | None = None,
                 freesurfer_dir: str | Path | None = None, enigma_csvs: Sequence[str | Path] = (),
                 fill_missing_channels: str = "error", pattern: str = "mwp1*.nii*",
                 id_pattern: str = DEFAULT_ID_PATTERN, grid: float | Grid = 1.5, dtype: str = "float16",
                 max_centre_offset_mm: float = 40.0, drop_incomplete: bool = False, overwrite: bool = False,
                 progress: bool = True, source: str = "NIfTI folder") -> Cohort:
    """Convert CAT12 mwp1 maps + a participants table + Desikan measures into the cohort folder `dest`.

    Measures come from exactly one of `freesurfer_dir` or `enigma_csvs`. Every subject needs an image, a
    table row and measures; nothing is written until the kept rows pass COLUMNS.md, and a failure part-way
    leaves no folder at `dest`. A refusal raises SourceDataError naming the file and the field; `dest` and
    `dtype` are checked by CohortWriter, which raises its parent class CohortError.

    Args:
        images_dir: folder searched recursively for the grey-matter maps.
        participants: a TSV/CSV path (.csv: comma, otherwise tab) or a DataFrame (a recipe's convert.py
            builds one from the study's tables); brought to COLUMNS.md by `renames`, `constants`, `recodes`.
        dest: cohort folder to create; an existing path is refused unless `overwrite`.
        id_column: the table's subject id column, renamed to 'participant_id' (default 'participant_id');
            missing: SourceDataError.
        renames: {source column: COLUMNS.md column}, e.g. {'Age': 'age'}; a missing source column is refused.
        recodes: {column: {source value: code}}, e.g. {'sex': {'1': 'M', '2': 'F'}}; keys match
            case-insensitively, and a value the mapping does not cover is refused, never passed through.
        constants: {column: value} added to every row, e.g. {'site': 'OAS'} for a single-site study.
        freesurfer_dir: SUBJECTS_DIR holding <participant_id>/stats/{lh,rh}.aparc.stats; a subject without
            both files counts as lacking measures.
        enigma_csvs: ENIGMA-style CSVs with SubjID and ``L_/R_<region>_<thickavg|surfavg|grayvol>`` columns,
            each channel from one file only. Giving both or neither of this and `freesurfer_dir` is refused.
        fill_missing_channels: 'error' (default) refuses ENIGMA tables lacking any of the 7 channels;
            'zero' stores those channels as 0. Only read with `enigma_csvs`; another value is refused there.
        pattern: file name glob for the maps (default 'mwp1*.nii*'); only .nii and .nii.gz files count,
            and no match at all is refused.
        id_pattern: regex searched in each path relative to `images_dir`; its 'id' group (or first group)
            is the subject id (default: the name between 'mwp1' and an optional '_T1w' + extension).
            A file it does not match, or two files with one id, is refused.
        grid: the cohort grid: a voxel size in mm (1.5, the CAT12 121 x 145 x 121 grid, default; or 3.0)
            or an explicit (shape, [4, 4] voxel-to-mm affine); another voxel size is refused.
        dtype: storage type of vbm.npy, 'float16' (default) or 'float32'; another is refused.
        max_centre_offset_mm: refuse an image whose field-of-view centre is further than this (mm, default
            40) from the MNI field-of-view centre: the sign of a native-space image.
        drop_incomplete: leave out (and print, and list in meta.json) subjects lacking an image, a table
            row or measures, instead of refusing them all (default False).
        overwrite: replace an existing cohort at `dest` (default False); a folder this library did not
            write is never deleted.
        progress: show a progress bar on stderr (default True).
        source: dataset name recorded in meta.json provenance (default 'NIfTI folder').

    Returns:
        The opened Cohort, subjects in participants-table order; volumes float [N, X, Y, Z] on `grid`,
        measures [N, 7, 68].
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
    table = select_rows(table, kept, table_name)

    target = resolve_grid(grid)
    resampled = []
    with CohortWriter(dest, len(kept), target[0], target[1], dtype=dtype, overwrite=overwrite) as writer:
        for i, subject in enumerate(tqdm(kept, desc=f"nifti -> {dest.name}", unit="subject", disable=not progress)):
            writer.volumes[i], was_resampled = load_gm_map(images[subject], target, max_centre_offset_mm)
            if was_resampled:
                resampled.append(subject)
        roi = np.stack([measures[s] for s in kept])
        provenance = provenance_record(source, {"images": images_dir, "participants": table_name,
                                                "measures": freesurfer_dir or ", ".join(map(str, enigma_csvs))},
                                       dropped, {
            "measures_from": "freesurfer aparc.stats" if freesurfer_dir is not None else "ENIGMA CSV",
            "channel_mapping": APARC_COLUMNS if freesurfer_dir is not None else ENIGMA_SUFFIXES,
            "filled_channels": [] if freesurfer_dir is not None or fill_missing_channels == "error"
            else "zero for channels absent from the CSVs",
            "resampled_subjects": resampled})
        cohort = writer.finish(table, roi, provenance)
    report_dropped(dropped)
    return cohort
