"""The inner search of a probe's penalty, solved directly: what `GridSearchCV` chooses, with less work.

`GridSearchCV(Pipeline([scaler, model]), grid, cv=inner)` refits the scaler for every grid value and runs
every fit through scikit-learn's estimator and scorer machinery; in a probe that is hundreds of small fits.
Here each inner training fold is standardised once, and

- the ridge path for every alpha shares one Gram matrix of the standardised fold (`ridge_path`): the closed
  form of `Ridge(alpha)` with an intercept, equal to scikit-learn's solvers to rounding;
- logistic regressions of a protocol that asks for the optimum (`ProbeProtocol.exact`; ours, with balanced or
  no class weights, two classes) are solved to their optimum by `logistic_path`, every C of every inner fold of every
  outer fold of a task in one batch (`logistic_search`), and the final fits too. The reference they equal is
  the same search with scikit-learn's exact solver (`REFERENCE_SOLVER`: newton-cholesky at tol 1e-12), not
  lbfgs at its default tol 1e-4, which stops short of the optimum (benchmarks/RESULTS.md says how much that
  changes). Other logistic regressions (the paper's saga at 150 iterations) are fitted with scikit-learn as
  `GridSearchCV` would fit them.

The choice is the grid search's: the value with the highest mean inner score, the first in grid order on ties.
`tests/test_probe.py` and `tests/test_probe_search.py` check chosen values and scores against `GridSearchCV`
on the same folds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import linalg
from sklearn.base import clone
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from anatcl_core.logistic_path import logistic_path
from anatcl_core.probe_folds import Splits
from anatcl_core.probe_protocol import ProbeProtocol


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean over the classes of y_true [n] of the fraction of their rows that y_pred [n] gets right: scikit-learn's
    `balanced_accuracy_score` (same divisions, same order), without its input checks."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or not len(y_true):
        raise ValueError(f"balanced accuracy: expected two label vectors of one length, got shapes "
                         f"{list(y_true.shape)} and {list(y_pred.shape)}")
    return float(np.mean([np.sum(y_pred[y_true == c] == c) / np.sum(y_true == c) for c in np.unique(y_true)]))


_SCORERS = {"balanced_accuracy": balanced_accuracy, "r2": r2_score,
            "neg_mean_absolute_error": lambda y, p: -mean_absolute_error(y, p)}

#: The reference of the exact logistic path: scikit-learn's Newton solver run to convergence, set on the
#: pipeline's model when `probe.fit_probe(grid_search=True)` checks the fast path.
REFERENCE_SOLVER = {"solver": "newton-cholesky", "tol": 1e-12, "max_iter": 1000}
#: Memory for one batch of logistic problems (training rows, kernels and their factors).
BATCH_BYTES = 64 * 2 ** 20


def fit_scaler(X: np.ndarray) -> StandardScaler:
    """`StandardScaler().fit(X)` for X [n, d], in float64, without scikit-learn's input checks (a probe fits
    hundreds): column means and population variances, and scale 1 for the columns scikit-learn treats as
    constant (variance within the rounding bound of its two-pass algorithm). Equal to scikit-learn's to rounding.
    """
    X = np.asarray(X, dtype=np.float64)
    n = len(X)
    mean = X.sum(axis=0) / n
    centred = X - mean
    # column sums run down the rows in order, whatever the CPU's vector width (einsum's need not)
    var = ((centred * centred).sum(axis=0) - centred.sum(axis=0) ** 2 / n) / n
    eps = np.finfo(np.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    scaler = StandardScaler()
    scaler.mean_, scaler.var_, scaler.scale_ = mean, var, np.where(constant, 1.0, np.sqrt(var))
    scaler.n_samples_seen_, scaler.n_features_in_ = n, X.shape[1]
    return scaler


def ridge_path(Z: np.ndarray, y: np.ndarray, Z_new: np.ndarray, alphas: Sequence[float]) -> np.ndarray:
    """Ridge predictions for every alpha at once: Z [n, d], y [n], Z_new [m, d] -> [len(alphas), m].

    With an intercept, as `Ridge(alpha).fit(Z, y).predict(Z_new)`: the centred Gram matrix (d x d, or the
    n x n kernel when n < d) is formed once and each alpha is one Cholesky solve of it plus alpha I; float64.
    """
    Z, Z_new, y = (np.asarray(a, dtype=np.float64) for a in (Z, Z_new, y))
    mean, y_mean = Z.mean(axis=0), y.mean()
    centred, target = Z - mean, y - y_mean
    primal = centred.shape[0] >= centred.shape[1]
    gram = centred.T @ centred if primal else centred @ centred.T
    right = centred.T @ target if primal else target
    coefs = []
    for alpha in alphas:
        shifted = gram.copy()
        shifted.flat[::len(gram) + 1] += alpha
        solved = linalg.cho_solve(linalg.cho_factor(shifted, overwrite_a=True, check_finite=False), right,
                                  check_finite=False)
        coefs.append(solved if primal else centred.T @ solved)
    return np.stack(coefs) @ (Z_new - mean).T + y_mean


def inner_scores(X: np.ndarray, y: np.ndarray, kind: str, inner: Splits, values: Sequence[float],
                 protocol: ProbeProtocol, model) -> np.ndarray:
    """[len(values), len(inner)] validation scores of each grid value on each inner split.

    model: the unfitted linear model of `probe.make_probe` (its C is set per value; unused for regression).
    Scores are the protocol's scorer: balanced accuracy as a fraction, -MAE or R^2 for the ridge.
    """
    scorer = _SCORERS["balanced_accuracy" if kind == "classification" else protocol.regression_scoring]
    scores = np.empty((len(values), len(inner)))
    for j, (train, valid) in enumerate(inner):
        Z, Z_valid = X[train], X[valid]
        if protocol.standardise:
            scaler = fit_scaler(Z)
            Z, Z_valid = _transform(scaler, Z), _transform(scaler, Z_valid)
        if kind == "regression":
            predictions = ridge_path(Z, y[train], Z_valid, values)
        else:
            predictions = [clone(model).set_params(C=value).fit(Z, y[train]).predict(Z_valid) for value in values]
        scores[:, j] = [scorer(y[valid], p) for p in predictions]
    return scores


def best_value(scores: np.ndarray, values: Sequence[float]) -> float:
    """The grid value of the highest mean score over inner splits; the first one in grid order on ties."""
    means = scores.mean(axis=1)
    return float(values[int(np.flatnonzero(means == means.max())[0])])


def exact_logistic(protocol: ProbeProtocol, y: np.ndarray) -> bool:
    """Whether `logistic_search` solves this protocol's logistic regressions on labels y: the protocol asks for
    the optimum (`ProbeProtocol.exact`), with no or balanced class weights, and there are two classes (more are
    fitted by scikit-learn with the protocol's solver)."""
    return protocol.exact and protocol.class_weight in (None, "balanced") and len(np.unique(y)) == 2


@dataclass(frozen=True)
class LogisticFit:
    """A probe fitted by `logistic_search`: scaler (None without standardisation), coef [d], intercept, C."""

    scaler: StandardScaler | None
    coef: np.ndarray
    intercept: float
    C: float
    classes: np.ndarray

    def pipeline(self, template: Pipeline) -> Pipeline:
        """`template` (the unfitted pipeline of `probe.make_probe`) as if fitted to this solution."""
        model = clone(template.steps[-1][1]).set_params(C=self.C)
        model.coef_, model.intercept_ = self.coef[None, :], np.array([self.intercept])
        model.classes_, model.n_features_in_, model.n_iter_ = self.classes, len(self.coef), np.array([0])
        return Pipeline(([("scale", self.scaler)] if self.scaler is not None else []) + [("model", model)])


def logistic_search(X: np.ndarray, y: np.ndarray, trains: Sequence[np.ndarray], inners: Sequence[Splits | None],
                    values: Sequence[float], protocol: ProbeProtocol) -> list[tuple[LogisticFit, float | None]]:
    """Inner search and final fit of the logistic probe on each training set, all solved exactly together.

    X [n, d] float64, y [n] two classes; trains[k]: rows of X of training set k; inners[k]: its inner splits
    (indices into trains[k]) or None when it has none (the grid's geometric middle is then used). Returns
    (fit, chosen C or None) per training set, the choice being `best_value` of the balanced accuracies.
    """
    classes = np.unique(y)
    problems = [(k, tr, va) for k, inner in enumerate(inners) for tr, va in (inner or [])]
    inner_fits = _solve(X, y, classes, [trains[k][tr] for k, tr, _ in problems],
                        np.tile(values, (len(problems), 1)), protocol)
    scores = np.array([_balanced_accuracy(y[trains[k][va]] == classes[1], fit, X[trains[k][va]])
                       for (k, _, va), fit in zip(problems, inner_fits)]).reshape(-1, len(values))
    fixed = float(np.exp(np.mean(np.log(values))))
    owner = np.array([k for k, _, _ in problems], dtype=int)
    chosen = [best_value(scores[owner == k].T, values) if inner else None for k, inner in enumerate(inners)]
    Cs = np.array([[fixed if c is None else c] for c in chosen])
    final = _solve(X, y, classes, list(trains), Cs, protocol)   # from w = 0: a start from the inner fits is slower
    return [(LogisticFit(scaler, coef[0], float(intercept[0]), float(C[0]), classes), c)
            for (scaler, coef, intercept), C, c in zip(final, Cs, chosen)]


def _solve(X, y, classes, trains, Cs, protocol):
    """[(scaler, coef [K, d], intercept [K])] of `logistic_path` on X[rows] for each rows in trains, at Cs [J, K]."""
    d, out = X.shape[1], []
    for first, stop in _batches([len(rows) for rows in trains], d):
        n, J = max(len(rows) for rows in trains[first:stop]), stop - first
        Z, labels, weights = np.zeros((J, n, d)), np.zeros((J, n)), np.zeros((J, n))
        scalers = []
        for j, rows in enumerate(trains[first:stop]):
            train = X[rows]
            scaler = fit_scaler(train) if protocol.standardise else None
            Z[j, :len(rows)] = _transform(scaler, train)
            labels[j, :len(rows)] = positive = y[rows] == classes[1]
            counts = np.array([np.sum(~positive), np.sum(positive)])
            # scikit-learn's class_weight="balanced" (n / (2 n_class)), without its per-call checks
            balanced = len(rows) / (2 * counts) if protocol.class_weight == "balanced" else np.ones(2)
            weights[j, :len(rows)] = balanced[positive.astype(int)]
            scalers.append(scaler)
        out.extend(zip(scalers, *logistic_path(Z, labels, weights, Cs[first:stop])))
    return out


def _batches(sizes: list[int], d: int) -> list[tuple[int, int]]:
    """Consecutive (start, stop) ranges of problems whose padded arrays fit in BATCH_BYTES."""
    ranges, start = [], 0
    while start < len(sizes):
        stop = start + 1
        while stop < len(sizes) and (stop + 1 - start) * _bytes(max(sizes[start:stop + 1]), d) <= BATCH_BYTES:
            stop += 1
        ranges.append((start, stop))
        start = stop
    return ranges


def _bytes(n: int, d: int) -> int:
    """Memory of one padded problem: rows, and kernel + factor (n x n) or their d x d counterparts."""
    return 8 * (2 * n * d + 3 * min(n, d) ** 2)


def _balanced_accuracy(positive: np.ndarray, fit: tuple, X_valid: np.ndarray) -> np.ndarray:
    """[K] balanced accuracies of the K solutions of fit = (scaler, coef [K, d], intercept [K]) on
    validation rows X_valid [m, d] whose labels are `positive` [m]."""
    scaler, coef, intercept = fit
    Z = _transform(scaler, X_valid)
    predicted = Z @ coef.T + intercept > 0                              # [m, K]: sklearn's predict
    if positive.all() or not positive.any():
        return np.array([balanced_accuracy(positive, p) for p in predicted.T])
    recalls = (predicted[positive].sum(0) / positive.sum(), (~predicted[~positive]).sum(0) / (~positive).sum())
    return np.mean(recalls, axis=0)


def _transform(scaler: StandardScaler | None, X: np.ndarray) -> np.ndarray:
    """`scaler.transform(X)` (the same arithmetic, without its input checks), or X without a scaler."""
    return X if scaler is None else (X - scaler.mean_) / scaler.scale_
