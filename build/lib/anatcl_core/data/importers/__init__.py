"""Importers: real datasets -> the cohort layout (`anatcl import openbhb ...`, `anatcl import nifti ...`).

Two sources are supported::

  openbhb  OpenBHB as distributed: participants.tsv plus per-subject CAT12 VBM and FreeSurfer Desikan
           .npy arrays under {train,val}/derivatives/sub-<id>/; the arrays are copied as they are
           (only a leading singleton axis is dropped), so voxel order is never touched.
  nifti    any folder of CAT12 modulated grey-matter maps (mwp1*.nii[.gz]) in MNI space, a participants
           table, and Desikan measures from FreeSurfer aparc.stats files or ENIGMA-style CSV tables.

Both stream subject by subject into a CohortWriter, so memory stays at one volume whatever the cohort size.
Every refusal raises SourceDataError naming the file, the field and what was expected.

In small modules::

  errors    SourceDataError
  images    the cohort grid, resampling onto it, reading one CAT12 mwp1 map
  tables    participants tables: read, rename, recode, to COLUMNS.md
  measures  Desikan measures [7, 68] from FreeSurfer aparc.stats or ENIGMA CSVs
  subjects  completeness: who is kept, the rows, the provenance record, the dropped report
  openbhb   the OpenBHB importer
  nifti     the NIfTI folder importer
  cli       `anatcl import` (add_arguments, run)
"""
from __future__ import annotations

from anatcl_core.data.importers.cli import add_arguments, run
from anatcl_core.data.importers.errors import SourceDataError
from anatcl_core.data.importers.images import Grid, check_mni_placement, load_gm_map, resolve_grid, to_grid
from anatcl_core.data.importers.measures import (APARC_COLUMNS, ENIGMA_SUFFIXES, FILL_CHOICES, freesurfer_measures,
                                                 freesurfer_measures_by_subject, read_aparc_stats, read_enigma_file,
                                                 read_enigma_tables)
from anatcl_core.data.importers.nifti import DEFAULT_ID_PATTERN, find_gm_maps, import_nifti
from anatcl_core.data.importers.openbhb import (OPENBHB_DIAGNOSIS_CODES, OPENBHB_FOLDERS, OPENBHB_ROI_SUFFIX,
                                                OPENBHB_SEX_CODES, OPENBHB_SPLITS, OPENBHB_TEXT_COLUMNS,
                                                OPENBHB_VBM_SUFFIX, find_openbhb_arrays, import_openbhb,
                                                openbhb_participants)
from anatcl_core.data.importers.subjects import reconcile_subjects
from anatcl_core.data.importers.tables import parse_mapping, prepare_participants, read_table, recode, rename_columns

__all__ = [
    "SourceDataError", "Grid", "resolve_grid", "to_grid", "check_mni_placement", "load_gm_map",
    "read_table", "parse_mapping", "recode", "rename_columns", "prepare_participants",
    "APARC_COLUMNS", "ENIGMA_SUFFIXES", "FILL_CHOICES", "read_aparc_stats", "freesurfer_measures",
    "freesurfer_measures_by_subject", "read_enigma_file", "read_enigma_tables",
    "reconcile_subjects",
    "OPENBHB_VBM_SUFFIX", "OPENBHB_ROI_SUFFIX", "OPENBHB_SPLITS", "OPENBHB_FOLDERS", "OPENBHB_SEX_CODES",
    "OPENBHB_DIAGNOSIS_CODES", "OPENBHB_TEXT_COLUMNS", "find_openbhb_arrays", "openbhb_participants", "import_openbhb",
    "DEFAULT_ID_PATTERN", "find_gm_maps", "import_nifti",
    "add_arguments", "run",
]
