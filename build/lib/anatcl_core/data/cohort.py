"""The cohort layout: one folder per cohort, read as a `Cohort`, written by a `CohortWriter`.

The layout::

    <root>/<cohort>/participants.tsv   one row per subject: participant_id, age, sex, site, diagnosis, ...
    <root>/<cohort>/vbm.npy            [N, X, Y, Z] modulated grey-matter maps, float16 or float32
    <root>/<cohort>/desikan_roi.npy    [N, 7, 68] float32 Desikan-Killiany measures, NaN-free
    <root>/<cohort>/meta.json          grid, channel and region names, provenance, layout version

Row i of the table describes `vbm.npy[i]` and `desikan_roi.npy[i]`. Every check runs both when a
cohort is opened and before one is written, so a folder that `Cohort.open` accepts is always usable.
Writes go to a hidden temporary folder beside the target and are renamed into place at the end,
so an interrupted write never leaves a folder that opens as a cohort.

This module is the layout's one import point; the code lives in three modules, each importing only the ones
before it: `cohort_contract` (file names, grids, the checks and the `CohortError` they raise), `cohort_reader`
(`Cohort`) and `cohort_writer` (`CohortWriter`, `write_cohort`, `remove_abandoned_writes`).
"""
from anatcl_core.data.cohort_contract import (GRIDS, KNOWN_LAYOUT_VERSIONS, LAYOUT_FILES, LAYOUT_VERSION, META_FILE,
                                              PARTICIPANTS_FILE, REQUIRED_COLUMNS, ROI_FILE, SEXES, TEXT_COLUMNS,
                                              UNFINISHED_MARKER, VOLUME_DTYPES, VOLUMES_FILE, CohortError,
                                              build_meta, canonical_participants, check_grid, check_meta,
                                              check_participants, check_roi, check_volumes_array, find_grid,
                                              read_participants)
from anatcl_core.data.cohort_reader import Cohort
from anatcl_core.data.cohort_writer import CohortWriter, remove_abandoned_writes, write_cohort

__all__ = [
    # layout
    "LAYOUT_VERSION", "KNOWN_LAYOUT_VERSIONS", "PARTICIPANTS_FILE", "VOLUMES_FILE", "ROI_FILE", "META_FILE",
    "LAYOUT_FILES", "UNFINISHED_MARKER", "REQUIRED_COLUMNS", "TEXT_COLUMNS", "SEXES", "VOLUME_DTYPES", "GRIDS",
    # contract
    "CohortError", "find_grid", "check_grid", "check_participants", "canonical_participants", "read_participants",
    "check_volumes_array", "check_roi", "check_meta", "build_meta",
    # reader and writer
    "Cohort", "CohortWriter", "remove_abandoned_writes", "write_cohort",
]
