"""Paired comparisons: the bootstrap's scores equal scikit-learn's on the same resamples; folds are shared."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from sklearn.metrics import balanced_accuracy_score, mean_absolute_error

from anatcl_core.paired_probe import (DETECTABLE_SE, PairedBootstrap, _resampled_scores, held_out_predictions,
                                      out_of_fold_predictions, paired_bootstrap, seed_average)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000), st.integers(12, 60))
def test_resampled_balanced_accuracy_is_sklearns_with_the_resample_counts_as_weights(seed, n):
    rng = np.random.default_rng(seed)
    y = np.r_[0, 1, rng.integers(0, 2, n - 2)]
    y_hat = rng.integers(0, 2, n)
    counts = rng.integers(1, 4, (5, n)).astype(float)
    ours = _resampled_scores(y, y_hat, "classification", counts)
    reference = [100 * balanced_accuracy_score(y, y_hat, sample_weight=c) for c in counts]
    np.testing.assert_allclose(ours, reference, rtol=1e-12)
    age, guess = rng.uniform(10, 80, n), rng.uniform(10, 80, n)
    np.testing.assert_allclose(_resampled_scores(age, guess, "regression", counts),
                               [mean_absolute_error(age, guess, sample_weight=c) for c in counts], rtol=1e-12)


def test_paired_bootstrap_of_an_encoder_with_itself_is_zero_and_resamples_keep_both_classes():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(40, int), np.ones(5, int)]
    a, b = rng.integers(0, 2, 45), rng.integers(0, 2, 45)
    same = paired_bootstrap(y, a, a, "classification", n_boot=300)
    assert same.difference == 0 and not same.resampled.any()
    boot = paired_bootstrap(y, a, b, "classification", n_boot=300)
    assert np.isfinite(boot.resampled).all()            # a class-less resample would give NaN
    assert boot.difference == pytest.approx(100 * (balanced_accuracy_score(y, a) - balanced_accuracy_score(y, b)))
    low, high = boot.interval()
    assert low < boot.difference < high


def test_paired_bootstrap_refuses_mismatched_lengths():
    with pytest.raises(ValueError, match="one value per subject"):
        paired_bootstrap(np.zeros(5), np.zeros(5), np.zeros(4), "regression")


def test_seed_average_pools_the_seeds_and_states_the_detectable_difference():
    rng = np.random.default_rng(0)
    boots = [PairedBootstrap(d, d + rng.normal(0, 2, 4000)) for d in (1.0, 2.0, 6.0)]
    summary = seed_average(boots)
    assert summary["difference"] == pytest.approx(3.0)
    assert summary["sd_seeds"] == pytest.approx(np.std([1, 2, 6], ddof=1))
    # the average of three independent SD-2 resample distributions has SD 2 / sqrt(3)
    assert summary["detectable"] == pytest.approx(DETECTABLE_SE * 2 / np.sqrt(3), rel=0.05)
    assert summary["low"] < 3.0 < summary["high"]
    with pytest.raises(ValueError):
        seed_average([])


def test_out_of_fold_predictions_never_see_their_own_label():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    # a feature that is each subject's label plus noise, and one that is a unique id: only the first generalises
    informative = (y + 0.1 * rng.standard_normal(60))[:, None]
    assert (out_of_fold_predictions(informative, y, "classification") == y).all()
    memorising = np.eye(60)
    accuracy = (out_of_fold_predictions(memorising, y, "classification") == y).mean()
    assert accuracy < 0.75                  # one-hot ids cannot carry a held-out label


def test_held_out_predictions_refuse_overlapping_rows():
    X, y = np.random.default_rng(0).standard_normal((20, 3)), np.arange(20.0)
    with pytest.raises(ValueError, match="overlap"):
        held_out_predictions(X, y, np.arange(12), np.arange(10, 20), "regression")
    assert held_out_predictions(X, y, np.arange(12), np.arange(12, 20), "regression").shape == (8,)
