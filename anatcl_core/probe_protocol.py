"""How a linear probe is fitted: ours (the default) or the authors' estimators, each named once.

The paper says only that frozen features are read by "linear classifiers" under 5-fold cross-validation,
reported as mean ± std (section 4). The authors' public estimators for the same kind of features
(EIDOSLAB/contrastive-brain-age-prediction, `src/models/estimators.py`) are plain scikit-learn models: a ridge
with alpha in 10^-2..10^2 chosen by `GridSearchCV(cv=5, scoring="r2")`, and `LogisticRegression(solver="saga",
max_iter=150)` with C in 10^-2..10^2 chosen by balanced accuracy; no scaler, no class weights. That is
`PROTOCOLS["paper"]`. Ours standardises the features inside every fit, weights classes by their inverse
frequency (so a 7-in-563 class is not ignored), searches a wider grid with shuffled stratified inner folds and
scores the ridge search by MAE, the reported metric. Why each choice: the book's "Departures" page.

Example::

    cross_validate_probe(X, y, "classification", protocol="paper")
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ProbeProtocol:
    """One way of fitting a probe; every field is read by `probe.make_probe` / `probe.fit_probe`."""

    name: str
    description: str
    standardise: bool                  # StandardScaler fitted inside every (inner) training fold
    class_weight: str | None           # LogisticRegression's class_weight
    c_grid: tuple[float, ...]          # logistic C values searched
    alpha_grid: tuple[float, ...]      # ridge alpha values searched
    inner_splits: int                  # folds of the inner search
    shuffle_inner: bool                # shuffled, seeded stratified inner folds; False: GridSearchCV(cv=k)'s own
    regression_scoring: str            # scikit-learn scorer of the ridge search
    solver: str                        # LogisticRegression's solver, for the fits not solved exactly
    max_iter: int
    # two-class logistic regressions solved to their optimum (logistic_path), whatever solver and max_iter say;
    # a protocol derived from "ours" with another solver needs exact=False for that solver to run
    exact: bool = False

    def grid(self, kind: str) -> tuple[float, ...]:
        """The values searched for `kind`: C (classification) or alpha (regression)."""
        return self.c_grid if kind == "classification" else self.alpha_grid


PROTOCOLS: dict[str, ProbeProtocol] = {p.name: p for p in (
    ProbeProtocol("ours", "standardised features; logistic regression with balanced class weights (two classes: "
                  "solved to its optimum, probe_search.logistic_search; more: lbfgs) or "
                  "ridge; C in 1e-4..1e2, alpha in 1e-1..1e5 (7 values) by shuffled stratified inner 3-fold CV, "
                  "ridge chosen by MAE",
                  standardise=True, class_weight="balanced", c_grid=tuple(np.logspace(-4, 2, 7)),
                  alpha_grid=tuple(np.logspace(-1, 5, 7)), inner_splits=3, shuffle_inner=True,
                  regression_scoring="neg_mean_absolute_error", solver="lbfgs", max_iter=5000, exact=True),
    ProbeProtocol("paper", "the authors' estimators: raw features, no class weights; logistic regression (saga, "
                  "150 iterations) or ridge; C and alpha in 1e-2..1e2 (5 values) by GridSearchCV(cv=5), ridge "
                  "chosen by R^2",
                  standardise=False, class_weight=None, c_grid=tuple(10.0 ** np.arange(-2, 3)),
                  alpha_grid=tuple(10.0 ** np.arange(-2, 3)), inner_splits=5, shuffle_inner=False,
                  regression_scoring="r2", solver="saga", max_iter=150, exact=False),
)}


def get_protocol(protocol: str | ProbeProtocol) -> ProbeProtocol:
    """A protocol by name ('ours', 'paper') or as given; ValueError naming the known ones otherwise."""
    if isinstance(protocol, ProbeProtocol):
        return protocol
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol: expected one of {tuple(PROTOCOLS)}, got {protocol!r}")
    return PROTOCOLS[protocol]
