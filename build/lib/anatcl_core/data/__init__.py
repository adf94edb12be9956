"""Data: the cohort layout (reader and writer), importers for real datasets, synthetic cohorts."""
from anatcl_core.data.cohort import GRIDS, LAYOUT_VERSION, Cohort, CohortError, CohortWriter, write_cohort

__all__ = ["GRIDS", "LAYOUT_VERSION", "Cohort", "CohortError", "CohortWriter", "write_cohort"]
