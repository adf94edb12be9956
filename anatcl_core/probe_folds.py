"""The folds of a probe: outer and inner cross-validation splits, stratified at subject level, planned for small classes.

Outer folds are stratified on the class (or on quantile bins of a continuous target) and, with `groups`, keep
every group in one test fold. `plan_folds` adapts the folds asked for to what the data can support (fewer
folds for a small class, repeated splits when a test fold would hold too few of its subjects) and says why.
`inner_cv` gives the splits of the penalty search inside one outer training fold.

Example::

    splits = cv_splits(y, "classification", 5, seed=0)          # [(train rows, test rows)] x 5
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

#: (train rows, test rows) index pairs of a cross-validation.
Splits = list[tuple[np.ndarray, np.ndarray]]


def strata(y: np.ndarray, kind: str, n_splits: int) -> np.ndarray:
    """Labels to stratify folds on: the class, or quantile bins of a continuous y (each bin >= 2 * n_splits rows).

    Bins are cut on ranks, ties broken by row order, so scores with many tied values (IQ, ratings)
    still give equal-sized bins.
    """
    if kind == "classification":
        return np.asarray(y)
    n_bins = int(np.clip(len(y) // (2 * n_splits), 1, 10))
    ranks = pd.Series(np.asarray(y, dtype=np.float64)).rank(method="first").to_numpy() - 1
    return (ranks * n_bins // len(y)).astype(np.int64)


def cv_splits(y: np.ndarray, kind: str, n_splits: int, *, groups: np.ndarray | None = None, n_repeats: int = 1,
              seed: int = 0) -> Splits:
    """Stratified (train, test) row-index pairs: `n_repeats` shuffles of `n_splits` folds, deterministic in `seed`.

    With `groups` ([n] labels, e.g. subject ids) every group falls in exactly one test fold per repeat.
    """
    labels = strata(y, kind, n_splits)
    splits: Splits = []
    for repeat in range(n_repeats):
        if groups is None:
            splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed + repeat)
        else:
            splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed + repeat)
        splits.extend(splitter.split(np.zeros(len(labels)), labels, groups))
    return splits


@dataclass(frozen=True)
class FoldPlan:
    """How many folds and repeats a dataset can support, and the reasons, or why it cannot be scored."""

    n_splits: int
    n_repeats: int
    notes: tuple[str, ...] = ()
    problem: str | None = None


def plan_folds(y: np.ndarray, kind: str, n_splits: int, n_repeats: int, *, groups: np.ndarray | None = None,
               small_class_repeats: int = 10, min_per_test_fold: int = 4) -> FoldPlan:
    """Adapt the requested folds to the data instead of failing or silently dropping the task.

    Classification: with m subjects in the smallest class, use min(n_splits, m) folds (m < 2: not
    evaluable); when a test fold would hold fewer than `min_per_test_fold` of them, balanced accuracy
    moves in coarse steps from fold to fold, so repeat the split `small_class_repeats` times.
    Regression: at most n // 2 folds; fewer than 4 subjects is not evaluable.
    """
    notes: list[str] = []
    if kind == "classification":
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            return FoldPlan(0, 0, problem=f"only one class present ({classes.tolist()}, {len(y)} subjects)")
        smallest = int(counts.min())
        if smallest < 2:
            return FoldPlan(0, 0, problem=f"class {classes[counts.argmin()].item()!r} has {smallest} subject; "
                                          "cross-validation needs at least 2 per class")
        capacity, unit = smallest, f"the smallest class has {smallest} subjects"
    else:
        if len(y) < 4:
            return FoldPlan(0, 0, problem=f"{len(y)} subjects with a value; at least 4 are needed")
        capacity, unit = len(y) // 2, f"{len(y)} subjects"
    if groups is not None:
        n_groups = len(np.unique(groups))
        if n_groups < 2:
            return FoldPlan(0, 0, problem=f"all subjects are in {n_groups} group")
        if n_groups < capacity:
            capacity, unit = n_groups, f"there are {n_groups} groups"
    used = min(n_splits, capacity)
    if used < n_splits:
        notes.append(f"{unit}: {used} folds instead of {n_splits}")
    repeats = n_repeats
    if kind == "classification" and smallest < min_per_test_fold * used and small_class_repeats > n_repeats:
        repeats = small_class_repeats
        notes.append(f"smallest class has {smallest} subjects, fewer than {min_per_test_fold} per test fold: "
                     f"{repeats} repeats of the {used}-fold split, std over all {used * repeats} folds")
    return FoldPlan(used, repeats, tuple(notes))


def inner_cv(y: np.ndarray, kind: str, groups: np.ndarray | None, inner_splits: int, seed: int,
             shuffle: bool = True) -> Splits | None:
    """Inner splits of one outer training fold, or None when they cannot hold 2 rows of every class.

    shuffle=False gives what `GridSearchCV(cv=k)` does with an integer: unshuffled (Stratified)KFold, by
    groups when there are groups.
    """
    plan = plan_folds(y, kind, inner_splits, 1, groups=groups, small_class_repeats=1)
    if plan.problem or plan.n_splits < 2:
        return None
    if shuffle:
        return cv_splits(y, kind, plan.n_splits, groups=groups, seed=seed)
    if groups is not None:
        splitter = StratifiedGroupKFold(plan.n_splits) if kind == "classification" else GroupKFold(plan.n_splits)
    else:
        splitter = StratifiedKFold(plan.n_splits) if kind == "classification" else KFold(plan.n_splits)
    return list(splitter.split(np.zeros(len(y)), y, groups))
