"""Completeness: which subjects have every input, the rows kept, the provenance record and the dropped report.

Shared by the importers: reconcile_subjects decides who is kept (or refuses), select_rows checks the kept
rows against COLUMNS.md before any volume is written, provenance_record is what meta.json keeps.
"""
from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Mapping, Sequence

import pandas as pd

import anatcl_core
from anatcl_core.data.cohort import canonical_participants, check_participants
from anatcl_core.data.importers.errors import SourceDataError


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


def select_rows(table: pd.DataFrame, kept: Sequence[str], where: str) -> pd.DataFrame:
    """The rows of `kept`, in that order, checked against COLUMNS.md before any volume is written."""
    rows = table.set_index("participant_id", drop=False).loc[list(kept)].reset_index(drop=True)
    check_participants(canonical_participants(rows), len(kept), where)
    return rows


def provenance_record(source: str, inputs: dict, dropped: dict[str, list[str]], extra: dict | None = None) -> dict:
    """The `provenance` record of meta.json: source name, inputs (as text), importer version, UTC date, dropped."""
    return {
        "source": source,
        "inputs": {k: str(v) for k, v in inputs.items()},
        "importer": f"anatcl_core {anatcl_core.__version__} anatcl_core.data.importers",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "dropped": dropped,
        **(extra or {}),
    }


def report_dropped(dropped: dict[str, list[str]], shown: int = 20) -> None:
    """Print the first `shown` dropped subjects; meta.json keeps the full list."""
    if dropped:
        print(f"dropped {len(dropped)} incomplete subject(s) (all listed in meta.json provenance.dropped):",
              file=sys.stderr)
        for subject, reasons in list(dropped.items())[:shown]:
            print(f"  {subject}: {', '.join(reasons)}", file=sys.stderr)
