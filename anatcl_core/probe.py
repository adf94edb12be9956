"""Linear probes on frozen embeddings: the paper's downstream protocol (section 4) and its tables.

A probe is `StandardScaler -> LogisticRegression(class_weight="balanced")` for classification or
`StandardScaler -> Ridge` for regression, with C / alpha chosen on a log grid by an inner
cross-validation that sees only the outer training rows. Outer folds are stratified at subject
level (on the class, or on quantile bins of a continuous target); with `groups` no group is split
across folds. Scores: balanced accuracy in %, MAE in the target's unit.

    result = cross_validate_probe(X, y, "classification")      # X [n, d], y [n]
    table = evaluate_tasks({("anatcl-global", 0): {"abide1": X_abide}}, {"abide1": participants})
    paper_table(4, table)                                      # the paper's Table 4 beside ours

Also here: the `anatcl probe` command and the on-disk cache of embeddings it reads.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from anatcl_core.atomic import check_writable_folder, write_atomic
from anatcl_core.tasks import (METHOD_LABELS, SUSPECT_PAPER_VALUES, TaskColumnError, TaskSpec, paper_results,
                               select_tasks, tasks_for)

log = logging.getLogger(__name__)

#: Log grids for the inner search; embeddings are standardised first, so one grid serves every encoder.
C_GRID: tuple[float, ...] = tuple(np.logspace(-4, 2, 7))
ALPHA_GRID: tuple[float, ...] = tuple(np.logspace(-1, 5, 7))
OPENBHB_TEST_SPLITS = ("internal_test", "external_test")

Splits = list[tuple[np.ndarray, np.ndarray]]


# ----------------------------------------------------------------------------- the probe

@dataclass(frozen=True)
class ProbeResult:
    """Scores of one probe: one per outer test fold (all repeats), in % (balanced accuracy) or target units (MAE).

    `best_params` holds the C or alpha the inner search chose for each outer fold; `class_counts` the
    subjects per class (empty for regression); `note` says how the folds were set up and why.
    """

    metric: str
    scores: tuple[float, ...]
    n_samples: int
    n_splits: int
    n_repeats: int
    class_counts: tuple[int, ...] = ()
    best_params: tuple[float, ...] = ()
    note: str = ""
    evaluable: bool = True

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores)) if self.scores else float("nan")

    @property
    def std(self) -> float:
        """Standard deviation over outer folds (ddof=0, as np.std); NaN with fewer than two folds."""
        return float(np.std(self.scores)) if len(self.scores) > 1 else float("nan")


def not_evaluable(metric: str, n_samples: int, reason: str, class_counts: tuple[int, ...] = ()) -> ProbeResult:
    """A result that records why a task could not be scored, instead of dropping the task."""
    return ProbeResult(metric, (), n_samples, 0, 0, class_counts, note=f"not evaluable: {reason}", evaluable=False)


def metric_for(kind: str) -> str:
    return {"classification": "balanced_accuracy", "regression": "mae"}[kind]


def score(kind: str, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Balanced accuracy in % (classification) or mean absolute error in y's unit (regression)."""
    if kind == "classification":
        return 100.0 * balanced_accuracy_score(y_true, y_pred)
    return float(mean_absolute_error(y_true, y_pred))


def make_probe(kind: str, grid: Sequence[float] | None = None, cv: Any = 3, n_jobs: int | None = None,
               ) -> GridSearchCV:
    """Unfitted scaler + linear model whose C (classification) or alpha (regression) is chosen by `cv`.

    Fitting the returned search on training rows fits the scaler inside every inner fold too, so no
    statistic of a validation or test row ever reaches the model that scores it.
    """
    if kind == "classification":
        model = LogisticRegression(class_weight="balanced", max_iter=5000)
        grid, name, scoring = C_GRID if grid is None else grid, "model__C", "balanced_accuracy"
    elif kind == "regression":
        model = Ridge()
        grid, name, scoring = ALPHA_GRID if grid is None else grid, "model__alpha", "neg_mean_absolute_error"
    else:
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")
    pipeline = Pipeline([("scale", StandardScaler()), ("model", model)])
    return GridSearchCV(pipeline, {name: list(grid)}, scoring=scoring, cv=cv, n_jobs=n_jobs, error_score="raise")


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


def _inner_cv(y: np.ndarray, kind: str, groups: np.ndarray | None, inner_splits: int, seed: int,
              ) -> Splits | None:
    """Inner splits of one outer training fold, or None when they cannot hold 2 rows of every class."""
    plan = plan_folds(y, kind, inner_splits, 1, groups=groups, small_class_repeats=1)
    if plan.problem or plan.n_splits < 2:
        return None
    return cv_splits(y, kind, plan.n_splits, groups=groups, seed=seed)


def fit_probe(X: np.ndarray, y: np.ndarray, kind: str, *, groups: np.ndarray | None = None,
              grid: Sequence[float] | None = None, inner_splits: int = 3, seed: int = 0,
              n_jobs: int | None = None) -> tuple[Any, float | None]:
    """Fit the probe on training rows X [n, d], y [n]: (fitted estimator, C/alpha used, None if not searched).

    A one-value grid is used as is. When the rows cannot support an inner split the probe is fitted
    at the grid's geometric middle (and None is returned for the chosen value).
    """
    search = make_probe(kind, grid, n_jobs=n_jobs)
    name, values = next(iter(search.param_grid.items()))
    inner = _inner_cv(y, kind, groups, inner_splits, seed) if len(values) > 1 else None
    # Hundreds of small fits: BLAS threads cost more than they give (10x on a busy 2-core machine);
    # parallelism, when wanted, goes over grid points and folds through n_jobs instead.
    with threadpool_limits(limits=1, user_api="blas"):
        if inner is not None:
            search.set_params(cv=inner).fit(X, y)
            return search, float(search.best_params_[name])
        fixed = float(np.exp(np.mean(np.log(values))))
        estimator = search.estimator.set_params(**{name: fixed}).fit(X, y)
        return estimator, (fixed if len(values) == 1 else None)


def cross_validate_probe(X: np.ndarray, y: np.ndarray, kind: str, groups: np.ndarray | None = None,
                         n_splits: int = 5, seed: int = 0, *, n_repeats: int = 1, grid: Sequence[float] | None = None,
                         inner_splits: int = 3, small_class_repeats: int = 10, min_per_test_fold: int = 4,
                         n_jobs: int | None = None) -> ProbeResult:
    """Nested cross-validation of a linear probe.

    X: [n, d] features; y: [n] 0/1 labels or a continuous target; groups: optional [n] labels kept
    whole within folds. Outer folds as planned by `plan_folds`; inside each outer training fold the
    scaler and C/alpha are fitted by `inner_splits`-fold CV. Never raises for small classes: returns a
    result with evaluable=False and the reason instead.
    """
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"expected X [n, d] and y [n]; got {list(X.shape)} and {list(y.shape)}")
    if groups is not None:
        groups = np.asarray(groups)
    metric = metric_for(kind)
    counts = tuple(int(c) for c in np.unique(y, return_counts=True)[1]) if kind == "classification" else ()
    plan = plan_folds(y, kind, n_splits, n_repeats, groups=groups, small_class_repeats=small_class_repeats,
                      min_per_test_fold=min_per_test_fold)
    if plan.problem:
        return not_evaluable(metric, len(y), plan.problem, counts)
    scores, params, one_class_folds = [], [], 0
    for fold, (train, test) in enumerate(cv_splits(y, kind, plan.n_splits, groups=groups,
                                                   n_repeats=plan.n_repeats, seed=seed)):
        if kind == "classification" and len(np.unique(y[test])) < 2:
            one_class_folds += 1            # balanced accuracy is undefined there; only grouped folds can do this
            continue
        estimator, chosen = fit_probe(X[train], y[train], kind, groups=None if groups is None else groups[train],
                                      grid=grid, inner_splits=inner_splits, seed=seed + fold, n_jobs=n_jobs)
        scores.append(score(kind, y[test], estimator.predict(X[test])))
        params.append(np.nan if chosen is None else chosen)
    notes = list(plan.notes) + _search_notes(params, grid, kind, inner_splits)
    if one_class_folds:
        notes.append(f"{one_class_folds} test fold(s) held a single class and were not scored")
    return ProbeResult(metric, tuple(scores), len(y), plan.n_splits, plan.n_repeats, counts, tuple(params),
                       "; ".join(notes))


def _search_notes(params: list[float], grid: Sequence[float] | None, kind: str, inner_splits: int) -> list[str]:
    """Say how C/alpha was chosen, and flag choices at the grid's edge (the grid may be too narrow)."""
    name = "C" if kind == "classification" else "alpha"
    values = np.asarray((C_GRID if kind == "classification" else ALPHA_GRID) if grid is None else grid)
    chosen = np.asarray(params, dtype=np.float64)
    notes = ([f"{name} by inner {inner_splits}-fold CV over {len(values)} values"] if len(values) > 1
             else [f"fixed {name} = {values[0]:g}"])
    unsearched = int(np.isnan(chosen).sum())
    if unsearched:
        notes.append(f"{unsearched} fold(s) too small for an inner split: fixed {name}")
    at_edge = int(np.isin(chosen, [values.min(), values.max()]).sum())
    if at_edge and len(values) > 2:
        notes.append(f"{name} at the grid edge in {at_edge}/{len(chosen)} folds")
    return notes


# ----------------------------------------------------------------------------- the paper's tasks

def evaluate_openbhb(X: np.ndarray, participants: pd.DataFrame, task: TaskSpec, *, grid: Sequence[float] | None = None,
                     inner_splits: int = 3, seed: int = 0, n_jobs: int | None = None) -> dict[str, ProbeResult]:
    """The paper's OpenBHB protocol: fit on `split == "train"`, score `internal_test` and `external_test`.

    X: [N, d] embeddings of the whole OpenBHB cohort (row i = participants row i).
    Returns {test split name: ProbeResult with one score}.
    """
    rows, y = task.resolve(participants)
    split = participants["split"].to_numpy()[rows]
    train = split == "train"
    metric = metric_for(task.kind)
    plan = plan_folds(y[train], task.kind, inner_splits, 1, small_class_repeats=1)
    if not train.any() or plan.problem:
        reason = "no rows with split == 'train'" if not train.any() else f"train split: {plan.problem}"
        return {name: not_evaluable(metric, int((split == name).sum()), reason) for name in OPENBHB_TEST_SPLITS}
    features = np.asarray(X)[rows]
    estimator, chosen = fit_probe(features[train], y[train], task.kind, grid=grid, inner_splits=inner_splits,
                                  seed=seed, n_jobs=n_jobs)
    results = {}
    for name in OPENBHB_TEST_SPLITS:
        test = split == name
        if not test.any():
            results[name] = not_evaluable(metric, 0, f"no rows with split == {name!r}")
            continue
        counts = tuple(int(c) for c in np.bincount(y[test])) if task.kind == "classification" else ()
        note = "; ".join([f"fit on {int(train.sum())} train rows, scored on {int(test.sum())} {name} rows"]
                         + _search_notes([np.nan if chosen is None else chosen], grid, task.kind, inner_splits))
        results[name] = ProbeResult(metric, (score(task.kind, y[test], estimator.predict(features[test])),),
                                    int(test.sum()), 1, 1, counts, (np.nan if chosen is None else chosen,), note)
    return results


RESULT_COLUMNS = ("method", "fold", "task", "cohort", "table", "metric", "evaluation", "score", "std", "n",
                  "n_splits", "n_repeats", "class_counts", "evaluable", "note")


def _row(method: str, fold: int, task: TaskSpec, evaluation: str, result: ProbeResult) -> dict[str, Any]:
    return {"method": method, "fold": fold, "task": task.id, "cohort": task.cohort, "table": task.table,
            "metric": result.metric, "evaluation": evaluation, "score": result.mean, "std": result.std,
            "n": result.n_samples, "n_splits": result.n_splits, "n_repeats": result.n_repeats,
            "class_counts": "/".join(map(str, result.class_counts)), "evaluable": result.evaluable,
            "note": result.note}


def evaluate_task(X: np.ndarray | None, participants: pd.DataFrame | None, task: TaskSpec, *,
                  groups_column: str | None = None, **probe_options: Any) -> dict[str, ProbeResult]:
    """One task on one embedding matrix X [N, d] of the task's cohort -> {evaluation name: result}.

    Evaluation names: "cv" for cross-validated tasks, the OpenBHB test splits otherwise. A missing
    cohort or embedding, or a participants table without the task's columns, gives not-evaluable results
    that say so.
    """
    metric = metric_for(task.kind)
    names = OPENBHB_TEST_SPLITS if task.protocol == "openbhb" else ("cv",)
    missing = "participants table" if participants is None else "embeddings" if X is None else None
    if missing:
        return {name: not_evaluable(metric, 0, f"no {missing} for cohort {task.cohort!r}") for name in names}
    if len(X) != len(participants):
        raise ValueError(f"task {task.id!r}: {len(X)} embedding rows for {len(participants)} participants rows "
                         f"of cohort {task.cohort!r}; expected row i to describe participant i")
    finite = np.isfinite(np.asarray(X, dtype=float)).all(axis=1)
    if not finite.all():
        ids = participants["participant_id"].to_numpy()[~finite] if "participant_id" in participants else \
            np.flatnonzero(~finite)
        raise ValueError(f"task {task.id!r}: features of cohort {task.cohort!r} are not finite for "
                         f"{', '.join(map(str, ids[:5]))}{' ...' if len(ids) > 5 else ''} ({len(ids)} row(s)); "
                         "expected finite features: check the checkpoint (did its training diverge?)")
    try:
        if task.protocol == "openbhb":
            keep = {k: probe_options[k] for k in ("grid", "inner_splits", "seed", "n_jobs") if k in probe_options}
            return evaluate_openbhb(X, participants, task, **keep)
        rows, y = task.resolve(participants)
    except TaskColumnError as err:           # e.g. a cohort imported without the columns this task reads
        return {name: not_evaluable(metric, len(participants), str(err)) for name in names}
    groups = None if groups_column is None else participants[groups_column].to_numpy()[rows]
    return {"cv": cross_validate_probe(np.asarray(X)[rows], y, task.kind, groups, **probe_options)}


def evaluate_tasks(embeddings: Mapping[tuple[str, int], Mapping[str, np.ndarray]],
                   cohorts: Mapping[str, pd.DataFrame], tasks: Iterable[TaskSpec | str] | None = None, *,
                   groups_column: str | None = None, **probe_options: Any) -> pd.DataFrame:
    """Every (method, fold) embedding set x every task -> one tidy DataFrame (columns RESULT_COLUMNS).

    embeddings: {(method id, pretraining fold): {cohort: X [N_cohort, d]}}; cohorts: {cohort: participants};
    tasks: specs or ids (None: all 22); probe_options: passed to `cross_validate_probe` (n_splits, seed, ...).
    One row per (method, fold, task, evaluation), including not-evaluable ones with the reason in `note`.
    """
    specs = [t if isinstance(t, TaskSpec) else select_tasks([t])[0] for t in (tasks or select_tasks(None))]
    rows = []
    for (method, fold), by_cohort in embeddings.items():
        for task in specs:
            log.info("probe %s fold %s: %s", method, fold, task.id)
            results = evaluate_task(by_cohort.get(task.cohort), cohorts.get(task.cohort), task,
                                    groups_column=groups_column, **probe_options)
            rows.extend(_row(method, fold, task, name, result) for name, result in results.items())
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


# ----------------------------------------------------------------------------- the paper's tables

def summarise(results: pd.DataFrame, openbhb_split: str = "internal_test") -> pd.DataFrame:
    """Per (method, task): mean and std of the scores, as the paper's cells are.

    With several pretraining folds (checkpoints) of a method, mean and std are over their scores (the
    paper's 5 folds); with a single one, they are that run's mean and std over its CV folds.
    OpenBHB tasks use the `openbhb_split` test split. Columns: method, task, metric, mean, std, runs, spread.
    """
    kept = results[results["evaluable"].astype(bool)
                   & results["evaluation"].isin(["cv", openbhb_split])]

    def one(group: pd.DataFrame) -> pd.Series:
        if len(group) > 1:
            return pd.Series({"mean": group["score"].mean(), "std": group["score"].std(ddof=0),
                              "runs": len(group), "spread": "checkpoints"})
        only = group.iloc[0]
        return pd.Series({"mean": only["score"], "std": only["std"], "runs": 1,
                          "spread": "test split" if only["evaluation"] != "cv" else "cv folds"})

    if kept.empty:
        return pd.DataFrame(columns=["method", "task", "metric", "mean", "std", "runs", "spread"])
    return (kept.groupby(["method", "task", "metric"], sort=False)[["score", "std", "evaluation"]]
            .apply(one).reset_index())


def _cell(mean: float, std: float, digits: int) -> str:
    if pd.isna(mean):
        return "—"
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _lookup(frame: pd.DataFrame, method: str, task: str) -> pd.Series | None:
    """The (method, task) row of a frame indexed by both, or None."""
    return frame.loc[(method, task)] if (method, task) in frame.index else None


def _ours_by_label(ours: pd.DataFrame, openbhb_split: str) -> pd.DataFrame:
    """`summarise(ours)` indexed by (the paper's method label, task id)."""
    summary = summarise(ours, openbhb_split)
    summary["method"] = summary["method"].map(lambda m: METHOD_LABELS.get(m, m))
    return summary.set_index(["method", "task"])


def paper_table(table: int, ours: pd.DataFrame | None = None, *, openbhb_split: str = "internal_test",
                digits: int = 2) -> pd.DataFrame:
    """The paper's Table 2, 3, 4 or 5 as a DataFrame of "mean ± std" strings.

    Rows: the paper's methods in its order (then any other method of `ours`), labelled as in the paper.
    Columns: (dataset, task label) as in the paper's header; with `ours` (an `evaluate_tasks` frame)
    each task gets three columns, "paper", "ours" and "Δ" (our mean minus the paper's). Labels marked
    † are values the paper prints under a heading they do not seem to match (see `.attrs["footnotes"]`).
    """
    specs = tasks_for(table)
    if not specs:
        raise ValueError(f"paper_table: table must be 2, 3, 4 or 5, got {table!r}")
    paper = paper_results().query("table == @table").set_index(["method", "task"])
    summary = None if ours is None else _ours_by_label(ours, openbhb_split)
    methods = list(METHOD_LABELS.values())
    if summary is not None:
        methods += [m for m in summary.index.get_level_values("method").unique() if m not in methods]
    columns: dict[tuple[str, ...], list[str]] = {}
    for task in specs:
        head = (task.group, task.label + ("†" if task.id in SUSPECT_PAPER_VALUES else ""))
        for method in methods:
            theirs = _lookup(paper, method, task.id)
            paper_cell = "—" if theirs is None else _cell(theirs["mean"], theirs["std"], digits)
            if summary is None:
                columns.setdefault(head, []).append(paper_cell)
                continue
            mine = _lookup(summary, method, task.id)
            diff = np.nan if mine is None or theirs is None else mine["mean"] - theirs["mean"]
            columns.setdefault(head + ("paper",), []).append(paper_cell)
            columns.setdefault(head + ("ours",), []).append("—" if mine is None else
                                                             _cell(mine["mean"], mine["std"], digits))
            columns.setdefault(head + ("Δ",), []).append("—" if pd.isna(diff) else f"{diff:+.{digits}f}")
    frame = pd.DataFrame(columns, index=pd.Index(methods, name="method"))
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    frame.attrs["footnotes"] = [f"† {task}: {why}" for task, why in SUSPECT_PAPER_VALUES.items()
                                if any(t.id == task for t in specs)]
    if table == 2 and ours is not None:
        frame.attrs["footnotes"].append(f"our OpenBHB scores are on its {openbhb_split} split")
    return frame


# ----------------------------------------------------------------------------- embedding cache

@dataclass
class EmbeddingCache:
    """Embeddings of cohorts by checkpoints, cached as `<root>/<checkpoint sha256 prefix>/<cohort>.npy`.

    A `<cohort>.source` file beside each array records the cohort's content fingerprint
    (`Cohort.fingerprint`: tables in full, volumes sampled), so a regenerated cohort of the same name, or one
    whose volumes were replaced, is embedded again. The encoder is loaded only when some cohort is not cached.
    `load_model(path, device)` and `embed_cohort(model, cohort, batch_size=, device=)` default to
    `anatcl_core.checkpoints.load_checkpoint` and `anatcl_core.embed.embed_cohort`.
    """

    root: Path
    batch_size: int = 8
    device: str = "auto"
    load_model: Callable[[Path, str], Any] | None = field(default=None, repr=False)
    embed_cohort: Callable[..., np.ndarray] | None = field(default=None, repr=False)

    def path_for(self, checkpoint: str | os.PathLike, cohort_name: str) -> Path:
        from anatcl_core.checkpoints import file_digest
        return Path(self.root) / file_digest(checkpoint) / f"{cohort_name}.npy"

    def embeddings(self, checkpoint: str | os.PathLike, cohorts: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """checkpoint file + {name: Cohort} -> {name: [N, D] float32 features}, embedding what is not cached."""
        model = None
        out = {}
        for name, cohort in cohorts.items():
            path = self.path_for(checkpoint, name)
            source = path.with_suffix(".source")
            fingerprint = cohort.fingerprint()
            if path.exists() and source.exists() and source.read_text().strip() == fingerprint:
                out[name] = np.load(path)
                continue
            if model is None:
                model = self._load(Path(checkpoint))
            features = np.asarray(self._embed(model, cohort))
            write_atomic(path, lambda f: np.save(f, features))
            write_atomic(source, lambda f: f.write(fingerprint.encode()))
            out[name] = features
        return out

    def _embed(self, model: Any, cohort: Any) -> np.ndarray:
        if self.embed_cohort is not None:
            return self.embed_cohort(model, cohort, batch_size=self.batch_size, device=self.device)
        from anatcl_core.embed import embed_cohort     # needs torch and the encoder: import only when embedding
        return embed_cohort(model, cohort, batch_size=self.batch_size, device=self.device)

    def _load(self, checkpoint: Path) -> Any:
        if self.load_model is not None:
            return self.load_model(checkpoint, self.device)
        from anatcl_core.checkpoints import load_checkpoint
        return load_checkpoint(checkpoint)           # on CPU; embedding moves it to `device`


# ----------------------------------------------------------------------------- command line

_SPEC = re.compile(r"^(?P<method>[\w.-]+)(?::(?P<fold>\d+))?=(?P<path>.+)$")


def parse_checkpoint(spec: str) -> tuple[str, int, Path]:
    """'METHOD[:FOLD]=PATH' or 'PATH' -> (method id, fold, path).

    Without a prefix the method is the first path component that is, or starts with, a known method id
    followed by '-' or '_' (so `runs/yaware-fold2/checkpoint.pth`, the layout `anatcl pretrain` writes, is
    yaware fold 2), else the file's folder when the stem says nothing ('checkpoint', 'weights', ...), else the
    stem; the fold is the number in a 'fold<k>' component (else 0).
    """
    match = _SPEC.match(spec)
    if match and not Path(spec).exists():
        return match["method"], int(match["fold"] or 0), Path(match["path"])
    path = Path(spec)
    parts = [p.lower() for p in path.with_suffix("").parts]
    def known(part: str) -> str | None:
        ids = [m for m in METHOD_LABELS if part == m or part.startswith((f"{m}-", f"{m}_"))]
        return max(ids, key=len) if ids else None   # 'anatcl-local-fold0' is anatcl-local
    generic = path.stem.lower() in ("checkpoint", "weights", "last", "best", "model")
    fallback = path.parent.name if generic and path.parent.name else path.stem
    method = next((m for p in parts if (m := known(p))), fallback)
    fold = next((int(m[1]) for p in parts for m in [re.search(r"fold[_-]?(\d+)", p)] if m), 0)
    return method, fold, path


def add_arguments(parser: Any) -> None:
    from anatcl_core.cli import int_at_least
    parser.add_argument("--checkpoint", nargs="+", required=True, metavar="[METHOD[:FOLD]=]PATH",
                        help="encoder checkpoint(s); prefix with e.g. 'anatcl-global:3=' to name method and fold")
    parser.add_argument("--data", required=True, type=Path, help="folder holding one cohort folder per dataset")
    parser.add_argument("--tasks", nargs="+", default=["all"], metavar="ID", help="task ids, or 'all' (default)")
    parser.add_argument("--out", required=True, type=Path, help="results CSV (one row per method, fold, task)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="embedding cache folder (default: 'embedding_cache' beside --out)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the fold shuffles")
    parser.add_argument("--n-splits", type=int_at_least(2), default=5, help="outer cross-validation folds")
    parser.add_argument("--device", default="auto", help="torch device for embedding ('auto': GPU if present)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8, help="volumes per forward pass when embedding")


def run(args: Any) -> int:
    """`anatcl probe`: embed the needed cohorts (cached), run the probes, write the tidy results CSV."""
    from anatcl_core.data.cohort import Cohort
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tasks = select_tasks(args.tasks)
    check_writable_folder(Path(args.out).resolve().parent, "--out")
    from anatcl_core.precision import resolve_device
    resolve_device(args.device)
    named: dict[tuple[str, int], Path] = {}
    for spec in args.checkpoint:                     # every name checked before anything is embedded
        method, fold, path = parse_checkpoint(spec)
        if not path.is_file():
            raise FileNotFoundError(2, "no such checkpoint file", str(path))
        if (method, fold) in named:
            raise ValueError(f"--checkpoint: {named[method, fold]} and {path} both read as method {method!r} fold "
                             f"{fold}; name them as METHOD[:FOLD]=PATH (e.g. {method}-a:{fold}={path})")
        named[(method, fold)] = path
    names = list(dict.fromkeys(t.cohort for t in tasks))
    cohorts = {n: Cohort.open(args.data / n) for n in names if (args.data / n).is_dir()}
    for name in sorted(set(names) - set(cohorts)):
        log.warning("no cohort folder %s: its tasks are reported as not evaluable", args.data / name)
    cache = EmbeddingCache(args.cache or args.out.parent / "embedding_cache", args.batch_size, args.device)
    embeddings = {}
    for (method, fold), path in named.items():
        embeddings[(method, fold)] = cache.embeddings(path, cohorts)
    results = evaluate_tasks(embeddings, {n: c.participants for n, c in cohorts.items()}, tasks,
                             n_splits=args.n_splits, seed=args.seed)
    write_atomic(args.out, lambda f: results.to_csv(f, index=False))
    shown = results[["method", "fold", "task", "evaluation", "score", "std"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {args.out}")
    return 0
