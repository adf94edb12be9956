"""Participants tables: reading a TSV/CSV, renaming columns, recoding values, to the columns of COLUMNS.md.

Identifier-like columns stay text ('0012' stays '0012'); a value a recoding does not cover is an error,
never passed through, so an unexpected code cannot reach a cohort.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.cli import one_line
from anatcl_core.data.importers.errors import SourceDataError
from anatcl_core.feature_files import read_text_table


def read_table(path: Path, id_column: str, text_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A TSV/CSV participants table (`feature_files.read_text_table`: the separator follows the suffix, UTF-8 or
    UTF-16); `id_column` and `text_columns` kept as written (e.g. '0012', '17'); empty cells become NaN."""
    try:
        table = read_text_table(path, "participants table", dtype={c: str for c in (id_column, *text_columns)},
                                keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as err:
        raise SourceDataError(one_line(err)) from err
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
