"""Probe any label on a feature file: `anatcl probe --features features.tsv --labels participants.tsv --target X`.

The paper's tasks are fixed (`tasks.py`); a user's are not: brain age, a diagnosis, a test score, on their own
scans embedded by `anatcl embed --images`. This module joins a feature file (`feature_files`: participant_id,
then one column per feature) with a participants table on `participant_id` and runs the same nested
cross-validated linear probe as the paper's tasks (`probe.cross_validate_probe`).

Example::

    result, folds = probe_feature_file("features.tsv", "participants.tsv", "diagnosis", groups="site")
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pandas as pd

from anatcl_core.feature_files import ID_COLUMN, read_features, read_text_table
from anatcl_core.probe import ProbeResult, cross_validate_probe

KINDS = ("classification", "regression")
#: A numeric target with at most this many distinct values is read as classes when no kind is given.
MAX_CLASSES_GUESSED = 10


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """A participants table (.tsv, or .csv by extension) with a participant_id column, ids as strings."""
    path = Path(path)
    table = read_text_table(path, "labels file", dtype={ID_COLUMN: str})
    if ID_COLUMN not in table.columns:
        raise ValueError(f"{path}: no '{ID_COLUMN}' column; found {list(table.columns[:8])}; expected the BIDS "
                         f"participants.tsv layout (one row per subject, '{ID_COLUMN}' first)")
    duplicated = table[ID_COLUMN][table[ID_COLUMN].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{path}: field '{ID_COLUMN}' repeats {duplicated[:5]}; expected one row per subject")
    return table


def guess_kind(y: pd.Series) -> str:
    """'classification' for text or few distinct numeric values (<= MAX_CLASSES_GUESSED), else 'regression'."""
    if not pd.api.types.is_numeric_dtype(y) or y.nunique() <= MAX_CLASSES_GUESSED:
        return "classification"
    return "regression"


def join_labels(ids: list[str], features: np.ndarray, labels: pd.DataFrame, target: str, kind: str | None = None,
                groups: str | None = None, where: str = "labels") -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                          str, list[str]]:
    """Rows of `features` [N, D] whose id has a value of `target` -> (X [n, D], y [n], groups [n] or None, kind,
    notes). Class labels are encoded 0..K-1 in sorted order; the notes say what was dropped and why. Subjects
    without a label may have any features; a labelled one with NaN or inf is a ValueError naming it."""
    for column in [target] + ([groups] if groups else []):
        if column not in labels.columns:
            raise ValueError(f"{where}: no column {column!r}; the columns are {list(labels.columns)}")
    repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) < len(ids) else []
    if repeated:
        raise ValueError(f"features: participant_id repeats {repeated[:5]}; expected one row per subject")
    table = labels.set_index(ID_COLUMN)
    unknown = [i for i in ids if i not in table.index]
    if len(unknown) == len(ids):
        raise ValueError(f"{where}: none of the {len(ids)} feature rows' ids are in its '{ID_COLUMN}' column "
                         f"(features: {ids[:3]}..., labels: {table.index[:3].tolist()}...)")
    notes = [f"{len(unknown)} feature row(s) have no row in the labels ({unknown[:3]}...)"] if unknown else []
    known = [i for i in ids if i in table.index]
    values = table.loc[known, target]
    present = values.notna().to_numpy()
    if not present.all():
        notes.append(f"{int((~present).sum())} subject(s) without a value of {target!r} left out")
    kind = kind or guess_kind(values[present])
    if kind not in KINDS:
        raise ValueError(f"--kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    position = {subject: row for row, subject in enumerate(ids)}
    rows = np.array([position[i] for i in known], dtype=np.int64)[present]
    bad = [ids[r] for r in rows[~np.isfinite(features[rows]).all(axis=1)]]
    if bad:
        raise ValueError(f"features: {len(bad)} labelled subject(s) have NaN or inf features ({', '.join(bad[:3])}"
                         f"{', ...' if len(bad) > 3 else ''}; inf also stands for values beyond float32's range); "
                         "expected finite numbers (drop or re-extract them)")
    y = values[present]
    if kind == "regression":
        y = pd.to_numeric(y, errors="coerce")
        if y.isna().any():
            bad = values[present][y.isna()].unique()[:3].tolist()
            raise ValueError(f"{where}: column {target!r} holds non-numbers {bad}; expected numbers for "
                             "--kind regression (or use --kind classification)")
        y = y.to_numpy(dtype=np.float64)
    else:
        y = np.unique(y.astype(str).to_numpy(), return_inverse=True)[1]
    group_values = None if groups is None else table.loc[known, groups].astype(str).to_numpy()[present]
    return features[rows], y, group_values, kind, notes


def probe_feature_file(features: str | os.PathLike, labels: str | os.PathLike, target: str, kind: str | None = None,
                       groups: str | None = None, **probe_options) -> tuple[ProbeResult, pd.DataFrame]:
    """Nested-CV linear probe of `target` on a feature file -> (ProbeResult, one row per outer test fold).

    `kind`: 'classification' or 'regression' (None: guessed, `guess_kind`); `groups`: a labels column (e.g. site)
    kept whole within folds; `probe_options` go to `cross_validate_probe` (n_splits, seed, ...). The result's
    note says how the folds were set up, what was left out, and when a class is too small to fill the folds.
    """
    ids, matrix = read_features(features)
    X, y, group_values, kind, notes = join_labels(ids, matrix, read_labels(labels), target, kind, groups,
                                                  where=str(labels))
    result = cross_validate_probe(X, y, kind, groups=group_values, **probe_options)
    if notes:
        result = dataclasses.replace(result, note="; ".join([*notes, result.note]))
    folds = pd.DataFrame({"fold": range(len(result.scores)), "metric": result.metric, "score": result.scores,
                          "penalty": result.best_params or [np.nan] * len(result.scores)})
    return result, folds
