"""Linear probes on frozen embeddings: the downstream evaluation of the paper's section 4.

A probe is a logistic regression (classification) or a ridge (regression), with C / alpha chosen on a log
grid by an inner cross-validation that sees only the outer training rows. How exactly (scaler, class
weights, grid, inner folds) is a protocol of `probe_protocol`: ours by default (`StandardScaler ->
LogisticRegression(class_weight="balanced")` or `StandardScaler -> Ridge`), or the authors' estimators
(`protocol="paper"`). The folds, stratified at subject level and planned for small classes, are
`probe_folds`'s. Scores: balanced accuracy in %, MAE in the target's unit.

Example::

    result = cross_validate_probe(X, y, "classification")      # X [n, d], y [n]

The paper's tasks run through these probes in `evaluation.py`; their tables are drawn by `report.py`.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from anatcl_core.probe_folds import cv_splits, inner_cv, plan_folds
from anatcl_core.probe_protocol import PROTOCOLS, ProbeProtocol, get_protocol
from anatcl_core.probe_search import (REFERENCE_SOLVER, balanced_accuracy, best_value, exact_logistic, inner_scores,
                                      logistic_search)


#: Our protocol's log grids; embeddings are standardised first, so one grid serves every encoder.
#: (The held-out age check of `age_probe` searches a finer ridge grid by exact leave-one-out: see its ALPHAS.)
C_GRID: tuple[float, ...] = PROTOCOLS["ours"].c_grid
ALPHA_GRID: tuple[float, ...] = PROTOCOLS["ours"].alpha_grid


@dataclass(frozen=True)
class ProbeResult:
    """Scores of one probe: one per outer test fold (all repeats), in % (balanced accuracy) or target units (MAE).

    `best_params` holds the C or alpha the inner search chose for each outer fold; `class_counts` the
    subjects per class (empty for regression); `note` says how the folds were set up and why; `edge_folds`
    counts the outer folds whose C or alpha is at an end of its grid (the grid may be too narrow).
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
    edge_folds: int = 0

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
        return 100.0 * balanced_accuracy(y_true, y_pred)
    return float(mean_absolute_error(y_true, y_pred))


def make_probe(kind: str, grid: Sequence[float] | None = None, cv: Any = 3, n_jobs: int | None = None,
               protocol: str | ProbeProtocol = "ours", seed: int = 0) -> GridSearchCV:
    """Unfitted (scaler +) linear model whose C (classification) or alpha (regression) is chosen by `cv`.

    `protocol` (`probe_protocol.PROTOCOLS`) says whether features are standardised, the class weights, the
    solver and the default grid. Fitting the returned search on training rows fits the scaler inside every
    inner fold too, so no statistic of a validation or test row ever reaches the model that scores it.
    `seed` fixes saga's data shuffling (the paper protocol), which scikit-learn would otherwise draw anew.
    """
    protocol = get_protocol(protocol)
    if kind == "classification":
        model = LogisticRegression(class_weight=protocol.class_weight, solver=protocol.solver,
                                   max_iter=protocol.max_iter, random_state=seed)
        name, scoring = "model__C", "balanced_accuracy"
    elif kind == "regression":
        model = Ridge()
        name, scoring = "model__alpha", protocol.regression_scoring
    else:
        raise ValueError(f"kind must be 'classification' or 'regression', got {kind!r}")
    grid = protocol.grid(kind) if grid is None else grid
    steps = [("scale", StandardScaler())] if protocol.standardise else []
    pipeline = Pipeline([*steps, ("model", model)])
    return GridSearchCV(pipeline, {name: list(grid)}, scoring=scoring, cv=cv, n_jobs=n_jobs, error_score="raise")


def _require_finite(X: np.ndarray) -> None:
    """ValueError naming the rows of X [n, d] that hold NaN or inf: no probe can be fitted on them."""
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if len(bad):
        raise ValueError(f"features: {len(bad)} row(s) hold NaN or inf (rows {bad[:5].tolist()}"
                         f"{', ...' if len(bad) > 5 else ''}); the probe needs finite features")


def fit_probe(X: np.ndarray, y: np.ndarray, kind: str, *, groups: np.ndarray | None = None,
              grid: Sequence[float] | None = None, inner_splits: int | None = None, seed: int = 0,
              n_jobs: int | None = None, protocol: str | ProbeProtocol = "ours", grid_search: bool = False,
              ) -> tuple[Any, float | None]:
    """Fit the probe on training rows X [n, d], y [n]: (fitted estimator, C/alpha used, None if not searched).

    A one-value grid is used as is. When the rows cannot support an inner split the probe is fitted
    at the grid's geometric middle (and None is returned for the chosen value). `inner_splits` and `grid`
    default to the protocol's. The search is `probe_search`'s direct one (for our logistic regressions:
    solved exactly, `probe_search.logistic_search`); `grid_search=True` runs scikit-learn's `GridSearchCV`
    instead (the reference it is tested against, with `probe_search.REFERENCE_SOLVER` for the logistic
    regressions solved exactly; `n_jobs` parallelises it). Features are cast to float64.
    """
    protocol = get_protocol(protocol)
    X = np.asarray(X, dtype=np.float64)
    _require_finite(X)
    exact = kind == "classification" and exact_logistic(protocol, y)
    if exact and not grid_search:
        return fit_probes(X, y, kind, [np.arange(len(y))], groups=groups, seeds=[seed], grid=grid,
                          inner_splits=inner_splits, protocol=protocol)[0]
    inner_splits = protocol.inner_splits if inner_splits is None else inner_splits
    search = make_probe(kind, grid, n_jobs=n_jobs, protocol=protocol, seed=seed)
    if exact:
        search.set_params(**{f"estimator__model__{key}": value for key, value in REFERENCE_SOLVER.items()})
    name, values = next(iter(search.param_grid.items()))
    inner = inner_cv(y, kind, groups, inner_splits, seed, protocol.shuffle_inner) if len(values) > 1 else None
    # Hundreds of small fits: BLAS threads cost more than they give (10x on a busy 2-core machine);
    # parallelism, when wanted, goes over grid points and folds through n_jobs instead. The authors' saga
    # stops at 150 iterations whether or not it converged: that is their protocol, so no warning per fit.
    with threadpool_limits(limits=1, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if inner is not None and grid_search:
            search.set_params(cv=inner).fit(X, y)
            return search, float(search.best_params_[name])
        if inner is not None:
            model = search.estimator.named_steps["model"]
            chosen = best_value(inner_scores(X, y, kind, inner, values, protocol, model), values)
            return search.estimator.set_params(**{name: chosen}).fit(X, y), chosen
        fixed = float(np.exp(np.mean(np.log(values))))
        estimator = search.estimator.set_params(**{name: fixed}).fit(X, y)
        return estimator, (fixed if len(values) == 1 else None)


def fit_probes(X: np.ndarray, y: np.ndarray, kind: str, trains: Sequence[np.ndarray], *, seeds: Sequence[int],
               groups: np.ndarray | None = None, grid: Sequence[float] | None = None,
               inner_splits: int | None = None, n_jobs: int | None = None,
               protocol: str | ProbeProtocol = "ours", grid_search: bool = False) -> list[tuple[Any, float | None]]:
    """`fit_probe(X[rows], y[rows], seed=seed, ...)` for each training rows of `trains` and seed of `seeds`.

    Logistic probes that `probe_search.logistic_search` solves exactly have the inner searches and final
    fits of all training sets solved together; anything else is `fit_probe` on each set in turn.
    """
    protocol = get_protocol(protocol)
    X = np.asarray(X, dtype=np.float64)
    if grid_search or kind != "classification" or not exact_logistic(protocol, y):
        return [fit_probe(X[rows], y[rows], kind, groups=None if groups is None else groups[rows], grid=grid,
                          inner_splits=inner_splits, seed=seed, n_jobs=n_jobs, protocol=protocol,
                          grid_search=grid_search) for rows, seed in zip(trains, seeds)]
    inner_splits = protocol.inner_splits if inner_splits is None else inner_splits
    template = make_probe(kind, grid, protocol=protocol)
    values = next(iter(template.param_grid.values()))
    inners = [inner_cv(y[rows], kind, None if groups is None else groups[rows], inner_splits, seed,
                       protocol.shuffle_inner) if len(values) > 1 else None for rows, seed in zip(trains, seeds)]
    with threadpool_limits(limits=1, user_api="blas"):
        fits = logistic_search(X, y, [np.asarray(rows) for rows in trains], inners, values, protocol)
    return [(fit.pipeline(template.estimator), chosen if len(values) > 1 else fit.C) for fit, chosen in fits]


def cross_validate_probe(X: np.ndarray, y: np.ndarray, kind: str, groups: np.ndarray | None = None,
                         n_splits: int = 5, seed: int = 0, *, n_repeats: int = 1, grid: Sequence[float] | None = None,
                         inner_splits: int | None = None, small_class_repeats: int = 10, min_per_test_fold: int = 4,
                         n_jobs: int | None = None, protocol: str | ProbeProtocol = "ours",
                         grid_search: bool = False) -> ProbeResult:
    """Nested cross-validation of a linear probe.

    X: [n, d] features; y: [n] 0/1 labels or a continuous target; groups: optional [n] labels kept
    whole within folds. Outer folds as planned by `plan_folds`; inside each outer training fold the
    scaler and C/alpha are fitted by `inner_splits`-fold CV. Never raises for small classes: returns a
    result with evaluable=False and the reason instead.

    Args:
        X: ``[n, d]`` features, one row per subject (e.g. frozen-encoder embeddings), any float dtype and unit:
            the probe standardises them inside every fold.
        y: ``[n]`` targets, row i for ``X[i]``: class labels (0/1 in the paper's tasks) for classification, or
            a continuous target in its own unit (e.g. age in years) for regression.
        kind: ``"classification"`` (logistic regression, scored by balanced accuracy in %) or
            ``"regression"`` (ridge, scored by mean absolute error in y's unit).
        groups: optional ``[n]`` group labels (e.g. subject ids when a subject has several rows); no group is
            split across folds, outer or inner. Default None: every row stands alone.
        n_splits: outer folds asked for (default 5). Fewer are used when the data cannot support them (the
            smallest class's subjects, the number of groups, or n // 2 for regression); the result's
            ``note`` says so.
        seed: seed of the shuffles (default 0): repeat r of the outer split uses ``seed + r``, the inner
            splits of outer fold k use ``seed + k``. Same seed, same folds, same scores.
        n_repeats: times the outer split is drawn, each with a new shuffle (default 1); every test fold of
            every repeat is scored.
        grid: the values of C (classification) or alpha (regression) searched by the inner CV; default None
            means the protocol's (ours: ``C_GRID`` or ``ALPHA_GRID``, 7 log-spaced values each). A one-value
            grid is used as is, without a search.
        inner_splits: folds of the inner search within each outer training fold (default None: the
            protocol's, 3 for ours, 5 for the paper's); when the training rows cannot support two, the probe
            is fitted at the grid's geometric middle.
        small_class_repeats: for classification, the repeats used instead of ``n_repeats`` (when larger)
            if a test fold would hold fewer than ``min_per_test_fold`` subjects of the smallest class
            (default 10).
        min_per_test_fold: subjects of the smallest class per outer test fold below which the split is
            repeated ``small_class_repeats`` times (default 4).
        n_jobs: parallel jobs of scikit-learn's grid search when ``grid_search=True``, in scikit-learn's
            sense (default None: one; -1: all cores). Each fit runs with single-threaded BLAS either way.
        protocol: ``"ours"`` (default) or ``"paper"`` (the authors' estimators), or a
            ``probe_protocol.ProbeProtocol``: scaler, class weights, solver, default grid and inner folds.
        grid_search: search the penalty with scikit-learn's ``GridSearchCV`` (default False: the direct
            search of ``probe_search``, which chooses the same values with less work).

    Returns:
        ProbeResult: ``scores`` holds one score per scored outer test fold (all repeats; a grouped test
        fold left with a single class is not scored and the ``note`` counts it), ``best_params`` the C or
        alpha used in each fold (NaN where no inner search could run), ``class_counts`` the subjects per
        class (empty for regression) and ``note`` how the folds were set up. Data that cannot be
        cross-validated (one class, a class with one subject, fewer than 4 regression targets, a single
        group) give ``evaluable=False``, no scores, and the reason in ``note``.

    Raises:
        ValueError: X is not 2-D, X and y differ in length, a row of X holds NaN or inf, or y has a missing value.
    """
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)     # float64 for every fit, searched or final
    protocol = get_protocol(protocol)
    inner_splits = protocol.inner_splits if inner_splits is None else inner_splits
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"expected X [n, d] and y [n]; got {list(X.shape)} and {list(y.shape)}")
    _require_finite(X)
    if pd.isna(y).any():
        raise ValueError(f"labels: {int(pd.isna(y).sum())} missing value(s) in y (rows "
                         f"{np.flatnonzero(pd.isna(y))[:5].tolist()}); leave those subjects out")
    if groups is not None:
        groups = np.asarray(groups)
    metric = metric_for(kind)
    counts = tuple(int(c) for c in np.unique(y, return_counts=True)[1]) if kind == "classification" else ()
    plan = plan_folds(y, kind, n_splits, n_repeats, groups=groups, small_class_repeats=small_class_repeats,
                      min_per_test_fold=min_per_test_fold)
    if plan.problem:
        return not_evaluable(metric, len(y), plan.problem, counts)
    splits = cv_splits(y, kind, plan.n_splits, groups=groups, n_repeats=plan.n_repeats, seed=seed)
    # balanced accuracy is undefined on a test fold of one class; only grouped folds can have one
    scored = [fold for fold, (_, test) in enumerate(splits) if kind != "classification" or len(np.unique(y[test])) > 1]
    one_class_folds = len(splits) - len(scored)
    if not scored:
        return not_evaluable(metric, len(y), f"every one of the {len(splits)} test folds held a single class "
                                             "(the groups do not mix the classes)", counts)
    fits = fit_probes(X, y, kind, [splits[fold][0] for fold in scored], seeds=[seed + fold for fold in scored],
                      groups=groups, grid=grid, inner_splits=inner_splits, n_jobs=n_jobs, protocol=protocol,
                      grid_search=grid_search)
    scores = [score(kind, y[splits[fold][1]], estimator.predict(X[splits[fold][1]]))
              for fold, (estimator, _) in zip(scored, fits)]
    params = [np.nan if chosen is None else chosen for _, chosen in fits]
    notes = list(plan.notes) + search_notes(params, grid, kind, inner_splits, protocol)
    if one_class_folds:
        notes.append(f"{one_class_folds} test fold(s) held a single class and were not scored")
    return ProbeResult(metric, tuple(scores), len(y), plan.n_splits, plan.n_repeats, counts, tuple(params),
                       "; ".join(notes), edge_folds=grid_edge_folds(params, grid, kind, protocol))


def grid_edge_folds(params: Sequence[float], grid: Sequence[float] | None, kind: str,
                    protocol: str | ProbeProtocol = "ours") -> int:
    """How many of the chosen values `params` (one per outer fold, NaN where none was searched) sit at an end
    of the grid searched (`grid`, or the protocol's for `kind`); 0 for grids of one or two values."""
    values = np.asarray(get_protocol(protocol).grid(kind) if grid is None else grid)
    if len(values) <= 2:
        return 0
    return int(np.isin(np.asarray(params, dtype=np.float64), [values.min(), values.max()]).sum())


def search_notes(params: list[float], grid: Sequence[float] | None, kind: str, inner_splits: int,
                 protocol: str | ProbeProtocol = "ours") -> list[str]:
    """Say how C/alpha was chosen, and flag choices at the grid's edge (the grid may be too narrow)."""
    name = "C" if kind == "classification" else "alpha"
    values = np.asarray(get_protocol(protocol).grid(kind) if grid is None else grid)
    chosen = np.asarray(params, dtype=np.float64)
    notes = ([f"{name} by inner {inner_splits}-fold CV over {len(values)} values"] if len(values) > 1
             else [f"fixed {name} = {values[0]:g}"])
    unsearched = int(np.isnan(chosen).sum())
    if unsearched:
        notes.append(f"{unsearched} fold(s) too small for an inner split: fixed {name}")
    at_edge = grid_edge_folds(params, grid, kind, protocol)
    if at_edge:
        notes.append(f"{name} at the grid edge in {at_edge}/{len(chosen)} folds")
    return notes
