"""The paper's downstream tasks as data: 12 diagnoses and 10 phenotypes (paper Table 1).

Each `TaskSpec` says which cohort it reads, whether it is a classification or a regression, how its
score is reported, where it sits in the paper's Tables 2-5, and how its target and included rows
derive from the cohort's participants table (the column contract is data_recipes/COLUMNS.md).

Example::

    >>> rows, y = TASKS["abide1/asperger"].resolve(participants)   # rows: [n] int positions, y: [n]

`rows` are positional indices into the participants table (and so into the cohort's arrays and its
embedding matrix); `y` is 0/1 for classification and a float for regression.

The paper's own numbers (Tables 2-6) ship with the package as `paper_tables.csv`, read by
`paper_results()`. Source: C. A. Barbano, M. Brunello, B. Dufumier, M. Grangetto, "Anatomical
foundation models for brain MRIs", Pattern Recognition Letters (2026), doi:10.1016/j.patrec.2025.11.028
(arXiv:2408.07079).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal, Union

import numpy as np
import pandas as pd

Kind = Literal["classification", "regression"]
Metric = Literal["balanced_accuracy", "mae"]

#: Cohort ids -> dataset names as the paper's table headers print them.
COHORT_LABELS: dict[str, str] = {
    "openbhb": "OpenBHB",
    "adni": "ADNI",
    "oasis3": "OASIS-3",
    "schizconnect": "SchizConnect",
    "abide1": "ABIDE-I",
}


class TaskColumnError(KeyError, ValueError):
    """A participants table lacks a column that a task needs."""

    def __str__(self) -> str:          # KeyError would print the message with quotes around it
        return str(self.args[0])


def _require_columns(participants: pd.DataFrame, columns: tuple[str, ...], cohort: str, task_id: str) -> None:
    missing = [c for c in columns if c not in participants.columns]
    if missing:
        raise TaskColumnError(
            f"task {task_id!r}: the {cohort!r} participants table has no column(s) {missing} "
            f"(it has {list(participants.columns)}); see data_recipes/COLUMNS.md")


def _numeric(values: pd.Series, cohort: str, column: str) -> pd.Series:
    """Column as floats, empty cells NaN; any other non-numeric text is an error naming it."""
    numeric = pd.to_numeric(values, errors="coerce")
    bad = numeric.isna() & values.notna()
    if bad.any():
        examples = sorted(set(values[bad].astype(str)))[:5]
        raise ValueError(f"{cohort!r} participants column {column!r} has non-numeric values {examples}; "
                         "expected numbers, with empty cells where not assessed")
    return numeric.astype(np.float64)


@dataclass(frozen=True)
class Contrast:
    """Binary target from category codes: `negative` codes -> 0, `positive` codes -> 1, others excluded."""

    column: str
    negative: tuple[str, ...]
    positive: tuple[str, ...]

    def __call__(self, participants: pd.DataFrame, cohort: str) -> tuple[np.ndarray, np.ndarray]:
        values = participants[self.column].astype(object)
        keep = values.isin(self.negative + self.positive).to_numpy()
        return np.flatnonzero(keep), values[keep].isin(self.positive).to_numpy().astype(np.int64)

    def __str__(self) -> str:
        return f"{self.column}: {'/'.join(self.negative)} (0) vs {'/'.join(self.positive)} (1)"


@dataclass(frozen=True)
class AtLeast:
    """Binary target from an ordinal score: value >= `threshold` -> 1, below -> 0, empty cells excluded."""

    column: str
    threshold: float

    def __call__(self, participants: pd.DataFrame, cohort: str) -> tuple[np.ndarray, np.ndarray]:
        values = _numeric(participants[self.column], cohort, self.column)
        keep = values.notna().to_numpy()
        return np.flatnonzero(keep), (values[keep] >= self.threshold).to_numpy().astype(np.int64)

    def __str__(self) -> str:
        return f"{self.column}: < {self.threshold:g} (0) vs >= {self.threshold:g} (1)"


@dataclass(frozen=True)
class Continuous:
    """Regression target: the column's value, empty cells excluded."""

    column: str

    def __call__(self, participants: pd.DataFrame, cohort: str) -> tuple[np.ndarray, np.ndarray]:
        values = _numeric(participants[self.column], cohort, self.column)
        keep = values.notna().to_numpy()
        return np.flatnonzero(keep), values[keep].to_numpy()

    def __str__(self) -> str:
        return f"{self.column} (continuous)"


Target = Union[Contrast, AtLeast, Continuous]


@dataclass(frozen=True)
class TaskSpec:
    """One downstream task of the paper.

    protocol "cv": cross-validated probe over all included rows; "openbhb": fit on `split == train`,
    score on `internal_test` and `external_test` (OpenBHB's own split, paper Table 2).
    """

    id: str
    cohort: str
    kind: Kind
    metric: Metric
    table: int
    label: str
    target: Target
    protocol: Literal["cv", "openbhb"] = "cv"

    @property
    def columns(self) -> tuple[str, ...]:
        """Participants columns this task reads."""
        return (self.target.column,) + (("split",) if self.protocol == "openbhb" else ())

    @property
    def group(self) -> str:
        """Dataset name as the paper's table header prints it."""
        return COHORT_LABELS[self.cohort]

    def resolve(self, participants: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """participants: the cohort's table (N rows) -> (rows [n] int positions, y [n] int 0/1 or float)."""
        _require_columns(participants, self.columns, self.cohort, self.id)
        return self.target(participants, self.cohort)


def _diagnosis(task_id: str, table: int, label: str, negative: str, positive: str) -> TaskSpec:
    cohort = task_id.split("/")[0]
    return TaskSpec(task_id, cohort, "classification", "balanced_accuracy", table, label,
                    Contrast("diagnosis", (negative,), (positive,)))


def _phenotype(task_id: str, label: str, target: Target) -> TaskSpec:
    kind: Kind = "regression" if isinstance(target, Continuous) else "classification"
    return TaskSpec(task_id, task_id.split("/")[0], kind,
                    "mae" if kind == "regression" else "balanced_accuracy", 5, label, target)


_HANDEDNESS = Contrast("handedness", ("right",), ("left", "ambidextrous"))

_ALL_TASKS: tuple[TaskSpec, ...] = (
    TaskSpec("openbhb/age", "openbhb", "regression", "mae", 2, "Age MAE", Continuous("age"), "openbhb"),
    TaskSpec("openbhb/sex", "openbhb", "classification", "balanced_accuracy", 2, "Sex",
             Contrast("sex", ("F",), ("M",)), "openbhb"),
    _diagnosis("adni/ad-vs-hc", 3, "HC vs AD", "control", "ad"),
    _diagnosis("adni/smci-vs-pmci", 3, "sMCI vs pMCI", "smci", "pmci"),
    _diagnosis("oasis3/ad-vs-hc", 3, "HC vs AD", "control", "ad"),
    _diagnosis("schizconnect/scz-broad", 4, "SCZ. (Broad)", "control", "scz_broad"),
    _diagnosis("schizconnect/scz-strict", 4, "SCZ. (Strict)", "control", "scz_strict"),
    _diagnosis("schizconnect/schizoaffective", 4, "Schizoaff.", "control", "schizoaffective"),
    _diagnosis("schizconnect/bipolar", 4, "Bipolar", "control", "bipolar"),
    _diagnosis("abide1/autism", 4, "Autism", "control", "autism"),
    _diagnosis("abide1/asperger", 4, "Aspergers", "control", "asperger"),
    _diagnosis("abide1/pdd-nos", 4, "PDD-NOS", "control", "pdd_nos"),
    _phenotype("schizconnect/aims-overall", "AIMS Overall", AtLeast("aims_overall", 2)),
    _phenotype("schizconnect/aims-upper", "AIMS Up.", AtLeast("aims_upper", 2)),
    _phenotype("schizconnect/aims-lower", "AIMS Low.", AtLeast("aims_lower", 2)),
    _phenotype("schizconnect/depression", "Depression", AtLeast("depression", 1)),
    _phenotype("schizconnect/handedness", "Handedness", _HANDEDNESS),
    _phenotype("schizconnect/gait", "GAIT", AtLeast("gait", 1)),
    _phenotype("abide1/handedness", "Handedness", _HANDEDNESS),
    _phenotype("abide1/fiq", "FIQ (MAE)", Continuous("fiq")),
    _phenotype("abide1/viq", "VIQ (MAE)", Continuous("viq")),
    _phenotype("abide1/piq", "PIQ (MAE)", Continuous("piq")),
)

#: Task id -> spec, in the paper's table and column order.
TASKS: dict[str, TaskSpec] = {t.id: t for t in _ALL_TASKS}

#: Tasks whose printed paper values are not credible as what their header says (shown as printed, marked).
SUSPECT_PAPER_VALUES: dict[str, str] = {
    task: ("the paper labels this column MAE, but its values (42-90) are far above any plausible IQ-point error "
           "and look like a different quantity; shown as printed")
    for task in ("abide1/fiq", "abide1/viq", "abide1/piq")
}


def tasks_for(table: int) -> list[TaskSpec]:
    """The tasks of one of the paper's Tables 2-5, in its column order."""
    return [t for t in TASKS.values() if t.table == table]


def select_tasks(ids: list[str] | tuple[str, ...] | None) -> list[TaskSpec]:
    """Task ids (or None / ['all']) -> specs; an unknown id is an error listing the known ones."""
    if not ids or list(ids) == ["all"]:
        return list(TASKS.values())
    unknown = [i for i in ids if i not in TASKS]
    if unknown:
        raise ValueError(f"unknown task id(s) {unknown}; known: {list(TASKS)}")
    return [TASKS[i] for i in ids]


@lru_cache(maxsize=1)
def _read_paper_results() -> pd.DataFrame:
    with resources.files("anatcl_core").joinpath("paper_tables.csv").open("r", encoding="utf-8") as f:
        return pd.read_csv(f)


def paper_results() -> pd.DataFrame:
    """The paper's reported numbers: columns table, method, task, metric, mean, std (one row per cell).

    Balanced accuracy in %, MAE in years (age) or as printed (FIQ/VIQ/PIQ, see SUSPECT_PAPER_VALUES);
    Table 6 (method "Ridge") also has R^2. Returns a fresh copy.
    """
    return _read_paper_results().copy()
