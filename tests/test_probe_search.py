"""The exact logistic path and the batched search: equal to scikit-learn's exact solver and to GridSearchCV."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.preprocessing import StandardScaler

from anatcl_core.logistic_path import logistic_path
from anatcl_core.probe import cross_validate_probe, fit_probe
from anatcl_core.probe_protocol import PROTOCOLS
from anatcl_core.probe_search import REFERENCE_SOLVER, balanced_accuracy, fit_scaler

GRID = np.logspace(-4, 2, 7)


def data(n_pos: int, n_neg: int, d: int, signal: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rectified Gaussian features (like the benchmark's embeddings), signal planted in 3 of them."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_pos), np.zeros(n_neg)].astype(np.int64)
    X = np.maximum(rng.normal(size=(n_pos + n_neg, d)), 0) * rng.uniform(0.5, 3, d)
    X[:, :3] += signal * y[:, None]
    order = rng.permutation(len(y))
    return X[order], y[order]


def weights(y: np.ndarray) -> np.ndarray:
    """class_weight="balanced": n / (2 n_class)."""
    return np.where(y == 1, len(y) / (2 * y.sum()), len(y) / (2 * (len(y) - y.sum())))


def reference(Z: np.ndarray, y: np.ndarray, C: float) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LogisticRegression(C=C, class_weight="balanced", **REFERENCE_SOLVER).fit(Z, y)


@pytest.mark.parametrize("n_pos, n_neg, d, signal", [
    (30, 30, 50, 0.0),          # n < d, no signal: separable, the hardest case for large C
    (7, 200, 40, 1.0),          # 7 against 200, kernel system
    (150, 150, 20, 0.5),        # n >> d: the d x d (Woodbury) system
])
def test_the_path_is_the_exact_optimum_at_every_C(n_pos, n_neg, d, signal):
    Z, y = data(n_pos, n_neg, d, signal, seed=n_pos + d)
    Z = StandardScaler().fit_transform(Z)
    coef, intercept = logistic_path(Z[None], y[None], weights(y)[None], GRID[None])
    for k, C in enumerate(GRID):
        model = reference(Z, y, C)
        margins = Z @ coef[0, k] + intercept[0, k]
        np.testing.assert_allclose(margins, model.decision_function(Z), rtol=0, atol=1e-6)
        np.testing.assert_allclose(coef[0, k], model.coef_[0], rtol=0, atol=1e-6 * max(1, np.abs(coef[0, k]).max()))


def test_a_batch_pads_and_solves_each_problem_as_if_alone():
    """Problems of different sizes in one batch (zero-weight padding) give what each gives alone, and a
    C solved from a cold start equals the same C reached along the path."""
    problems = [data(5, 40, 30, 1.0, seed) for seed in range(3)]
    problems[1] = (problems[1][0][:38], problems[1][1][:38])
    n = max(len(y) for _, y in problems)
    Z, y, s = np.zeros((3, n, 30)), np.zeros((3, n)), np.zeros((3, n))
    for j, (X, labels) in enumerate(problems):
        Z[j, :len(labels)], y[j, :len(labels)], s[j, :len(labels)] = X, labels, weights(labels)
    together = logistic_path(Z, y, s, np.tile(GRID, (3, 1)))
    for j, (X, labels) in enumerate(problems):
        alone = logistic_path(X[None], labels[None], weights(labels)[None], GRID[None])
        np.testing.assert_allclose(together[0][j], alone[0][0], atol=1e-9)
        np.testing.assert_allclose(together[1][j], alone[1][0], atol=1e-9)
        cold = logistic_path(X[None], labels[None], weights(labels)[None], GRID[None, -1:])
        np.testing.assert_allclose(cold[0][0, 0], alone[0][0, -1], atol=1e-8)


@pytest.mark.parametrize("case, n_pos, n_neg, d, signal", [
    ("random", 45, 45, 25, 0.0),
    ("planted", 40, 50, 25, 1.5),
    ("7 vs 200", 7, 200, 15, 1.0),
])
def test_the_fast_search_chooses_and_scores_what_the_reference_grid_search_does(case, n_pos, n_neg, d, signal):
    """Ours (inner 3-fold CV over 7 values of C) against GridSearchCV with scikit-learn's exact solver."""
    X, y = data(n_pos, n_neg, d, signal, seed=len(case))
    options = {"seed": 1, "small_class_repeats": 1}          # 5 outer folds, not 10 repeats of them
    fast = cross_validate_probe(X, y, "classification", **options)
    slow = cross_validate_probe(X, y, "classification", grid_search=True, **options)
    assert fast.note == slow.note and "inner 3-fold CV over 7 values" in fast.note
    assert fast.best_params == slow.best_params
    np.testing.assert_allclose(fast.scores, slow.scores, rtol=0, atol=1e-6)
    assert len(fast.scores) == 5


def test_the_fitted_probe_predicts_what_the_reference_predicts():
    X, y = data(40, 80, 30, 1.0, seed=3)
    new = data(20, 20, 30, 1.0, seed=4)[0]
    fast, chosen = fit_probe(X, y, "classification", seed=2)
    slow, reference_chosen = fit_probe(X, y, "classification", seed=2, grid_search=True)
    assert chosen == reference_chosen
    assert fast.named_steps["model"].C == chosen
    np.testing.assert_array_equal(fast.predict(new), slow.predict(new))
    np.testing.assert_allclose(fast.decision_function(new), slow.decision_function(new), atol=1e-6)
    one_value, fixed = fit_probe(X, y, "classification", grid=(0.5,))
    assert fixed == 0.5
    np.testing.assert_allclose(one_value.decision_function(new),
                               fit_probe(X, y, "classification", grid=(0.5,), grid_search=True)[0].decision_function(new),
                               atol=1e-6)


def test_a_protocol_that_does_not_ask_for_the_optimum_keeps_its_solver():
    """exact=False: the two-class probe is scikit-learn's estimator as the protocol names it (lbfgs, stopped at
    its tol), as GridSearchCV fits it, not the exact path; the paper protocol is such a protocol."""
    X, y = data(30, 40, 20, 1.0, seed=5)
    early = replace(PROTOCOLS["ours"], exact=False)
    assert not PROTOCOLS["paper"].exact and PROTOCOLS["ours"].exact
    fitted, chosen = fit_probe(X, y, "classification", protocol=early, seed=1)
    reference, reference_chosen = fit_probe(X, y, "classification", protocol=early, seed=1, grid_search=True)
    assert chosen == reference_chosen
    assert fitted.named_steps["model"].n_iter_[0] > 0          # scikit-learn's lbfgs ran; the exact path records 0
    np.testing.assert_array_equal(fitted.named_steps["model"].coef_,
                                  reference.best_estimator_.named_steps["model"].coef_)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n_pos=st.integers(2, 12), log_C=st.floats(-4, 2))
def test_invariants_row_order_and_label_swap(seed, n_pos, log_C):
    """Shuffling the rows does not move the optimum; swapping the labels negates it (balanced weights)."""
    X, y = data(n_pos, 25, 8, 0.5, seed)
    C = np.array([[10.0 ** log_C]])
    coef, intercept = logistic_path(X[None], y[None], weights(y)[None], C)
    order = np.random.default_rng(seed).permutation(len(y))
    shuffled = logistic_path(X[order][None], y[order][None], weights(y[order])[None], C)
    swapped = logistic_path(X[None], 1 - y[None], weights(1 - y)[None], C)
    scale = 1 + np.abs(coef).max() + abs(intercept[0, 0])
    np.testing.assert_allclose(shuffled[0], coef, atol=1e-8 * scale)
    np.testing.assert_allclose(swapped[0], -coef, atol=1e-8 * scale)
    np.testing.assert_allclose(swapped[1], -intercept, atol=1e-8 * scale)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 60), d=st.integers(1, 12), offset=st.sampled_from([0.0, 1e3, 1e8]))
def test_fit_scaler_is_scikit_learns_standard_scaler(seed, n, d, offset):
    """Means, variances and scales as StandardScaler's (to rounding), constant and near-constant columns included."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) * rng.uniform(1e-3, 10, d) + offset
    X[:, 0] = offset + 3.0                                    # constant: scale 1, as scikit-learn sets it
    if d > 1:
        X[:, 1] = offset + 1e-17 * rng.normal(size=n)           # near the rounding bound: the rule decides
    ours, theirs = fit_scaler(X), StandardScaler().fit(X)
    assert ours.scale_[0] == theirs.scale_[0] == 1.0
    np.testing.assert_allclose(ours.mean_, theirs.mean_, rtol=1e-13, atol=0)
    np.testing.assert_allclose(ours.var_, theirs.var_, rtol=1e-9, atol=1e-300)
    np.testing.assert_array_equal(ours.scale_ == 1.0, theirs.scale_ == 1.0)
    np.testing.assert_allclose(ours.scale_, theirs.scale_, rtol=1e-9)
    np.testing.assert_allclose(ours.transform(X), theirs.transform(X), rtol=1e-8, atol=1e-8)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 40), n_classes=st.integers(1, 4))
def test_balanced_accuracy_is_scikit_learns(seed, n, n_classes):
    """Bit for bit, including predictions of a class absent from y_true (scikit-learn warns and ignores it)."""
    rng = np.random.default_rng(seed)
    y_true, y_pred = rng.integers(0, n_classes, n), rng.integers(0, n_classes + 1, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert balanced_accuracy(y_true, y_pred) == balanced_accuracy_score(y_true, y_pred)
