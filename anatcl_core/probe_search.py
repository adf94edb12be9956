"""The inner search of a probe's penalty, solved directly: what `GridSearchCV` chooses, with less work.

`GridSearchCV(Pipeline([scaler, model]), grid, cv=inner)` refits the scaler for every grid value and runs
every fit through scikit-learn's estimator and scorer machinery; in a probe that is hundreds of small fits.
Here each inner training fold is standardised once, and

- the ridge path for every alpha shares one Gram matrix of the standardised fold (`ridge_path`): the closed
  form of `Ridge(alpha)` with an intercept, equal to scikit-learn's solvers to rounding;
- logistic regressions are the same `LogisticRegression` fits on the same arrays, so their predictions are
  bit for bit those of the grid search.

The choice is the grid search's: the value with the highest mean inner score, the first in grid order on ties.
`tests/test_probe.py` checks chosen values and scores against `GridSearchCV` on the same folds.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import linalg
from sklearn.base import clone
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error, r2_score
from sklearn.preprocessing import StandardScaler

from anatcl_core.probe_protocol import ProbeProtocol

#: (train rows, test rows) index pairs of a cross-validation.
Splits = list[tuple[np.ndarray, np.ndarray]]

_SCORERS = {"balanced_accuracy": balanced_accuracy_score, "r2": r2_score,
            "neg_mean_absolute_error": lambda y, p: -mean_absolute_error(y, p)}


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
    eye = np.eye(len(gram))
    coefs = []
    for alpha in alphas:
        solved = linalg.solve(gram + alpha * eye, right, assume_a="pos")
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
            scaler = StandardScaler().fit(Z)
            Z, Z_valid = scaler.transform(Z), scaler.transform(Z_valid)
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
