"""The one exception every importer raises: the source data is incomplete or not what its format promises.

A subclass of CohortError, so `anatcl import` reports it as one line (file, field, what was expected).
"""
from __future__ import annotations

from anatcl_core.data.cohort import CohortError


class SourceDataError(CohortError):
    """The data being imported is incomplete or not what its format promises."""
