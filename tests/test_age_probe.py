"""The held-out age probe that checks whether pretrained encoders learned and differ."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.linear_model import Ridge

from anatcl_core.age_probe import bootstrap_mean, compare_encoders, held_out_age_errors


def _cohort(n=120, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.uniform(10, 80, n)
    informative = np.column_stack([age + rng.normal(0, 3, n), rng.normal(size=(n, 7))])
    noise = rng.normal(size=(n, 8))
    train, test = np.arange(80), np.arange(80, n)
    return age, informative, noise, train, test


def test_errors_match_a_ridge_fitted_by_hand_on_the_training_rows():
    age, x, _, train, test = _cohort()
    errors = held_out_age_errors(x, age, train, test, alphas=(3.0,))
    mean, std = x[train].mean(0), x[train].std(0)
    ridge = Ridge(alpha=3.0).fit((x[train] - mean) / std, age[train])
    np.testing.assert_allclose(errors, np.abs(ridge.predict((x[test] - mean) / std) - age[test]), rtol=1e-10)


def test_test_labels_never_reach_the_model():
    age, x, _, train, test = _cohort()
    hidden = age.copy()
    hidden[test] = np.nan            # a fit that touched a test label would fail on the NaN
    assert np.isnan(held_out_age_errors(x, hidden, train, test)).all()
    swapped = age.copy()
    swapped[test] = age[test][::-1]  # other test labels: the fitted model, hence the predictions, stay the same
    np.testing.assert_allclose(_predictions(x, age, train, test), _predictions(x, swapped, train, test), rtol=1e-10)
    with pytest.raises(ValueError, match="overlap"):
        held_out_age_errors(x, age, train, np.concatenate([test, train[:1]]))


def _predictions(x, age, train, test):
    """The probe's test predictions p, recovered from its absolute errors against labels 1000 years too high:
    |p - (a + 1000)| = a + 1000 - p while |p - a| < 1000."""
    far = age.copy()
    far[test] += 1000.0
    return far[test] - held_out_age_errors(x, far, train, test)


def test_informative_features_beat_noise_and_the_median_with_a_paired_interval_below_zero():
    age, informative, noise, train, test = _cohort()
    table = compare_encoders({"informative": informative, "noise": noise}, age, train, test, reference="noise")
    assert table.loc["informative", "mae"] < 4 < table.loc["noise", "mae"]
    assert table.loc["training median", "mae"] == pytest.approx(np.abs(np.median(age[train]) - age[test]).mean())
    assert table.loc["informative", "paired_high"] < 0
    assert table.loc["noise", ["minus_reference", "paired_low", "paired_high"]].tolist() == [0, 0, 0]
    assert table.attrs == {"reference": "noise", "n_train": 80, "n_test": 40}
    assert "minus_reference" not in compare_encoders({"a": noise}, age, train, test, reference="simclr")


@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(2, 40), elements=st.floats(0, 100)), st.integers(0, 2**16))
def test_bootstrap_interval_brackets_the_mean_within_the_data_range(values, seed):
    mean, low, high = bootstrap_mean(values, seed, n_boot=200)
    assert values.min() - 1e-9 <= low <= mean + 1e-9 and mean - 1e-9 <= high <= values.max() + 1e-9
    assert bootstrap_mean(values, seed, n_boot=200) == (mean, low, high)


def test_bootstrap_of_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="non-empty 1-d"):
        bootstrap_mean(np.array([]))


def test_comparison_figure_draws_every_encoder_best_at_the_top_and_the_median_line():
    import matplotlib
    matplotlib.use("Agg")
    from anatcl_core.age_probe import plot_comparison
    age, informative, noise, train, test = _cohort()
    assert len(plot_comparison(compare_encoders({"noise": noise}, age, train, test)).axes) == 1  # no reference
    table = compare_encoders({"informative": informative, "noise": noise}, age, train, test, reference="noise")
    fig = plot_comparison(table)
    ax, paired = fig.axes
    assert [t.get_text() for t in ax.get_yticklabels()] == ["noise", "informative"]   # drawn bottom-up
    assert ax.lines[-1].get_xdata()[0] == pytest.approx(table.loc["training median", "mae"])
    # the paired panel draws each encoder minus the reference, where the verdicts come from, and a zero line
    reference = table.attrs["reference"]
    dots = paired.lines[0].get_xdata()
    assert list(dots) == pytest.approx(list(table.loc[["noise", "informative"], "minus_reference"]))
    assert table.loc[reference, "minus_reference"] == 0 and paired.lines[-1].get_xdata()[0] == 0
    assert reference in paired.get_xlabel() and "paired" in paired.get_xlabel()


def test_age_check_scores_every_subject_pretraining_did_not_see(tmp_path):
    import torch
    from anatcl_core.embed import embed_volumes
    from anatcl_core.encoder import AnatCLModel
    from anatcl_core.experiments import age_check, pretrain_methods, run_dir
    from conftest import make_tiny_cohort

    cohort = make_tiny_cohort(tmp_path / "data" / "openbhb")
    methods = ["simclr", "yaware"]
    pretrain_methods(tmp_path / "data", tmp_path / "out", methods, width=8, epochs=1, batch_size=8,
                     max_steps_per_epoch=1, lr=1e-3, progress=False)
    table = age_check(tmp_path / "data", tmp_path / "out", methods, seed=0)
    rows = torch.load(run_dir(tmp_path / "out", "simclr", 0) / "checkpoint.pth", weights_only=True)["rows"].numpy()
    held_out = np.setdiff1d(np.arange(len(cohort)), rows)
    assert list(table.index) == ["training median", "random init", "simclr", "yaware"]
    assert table.attrs == {"reference": "simclr", "n_train": len(rows), "n_test": len(held_out)}
    assert len(rows) + len(held_out) == len(cohort) and 0 < len(held_out) < len(cohort)
    # the untrained reference: the runs' initialisation (seed 0) at the runs' width, scored the same way
    torch.manual_seed(0)
    untrained = embed_volumes(AnatCLModel(width=8), cohort.volumes, progress=False)
    age = cohort.participants["age"].to_numpy(float)
    assert table.loc["random init", "mae"] == pytest.approx(held_out_age_errors(untrained, age, rows, held_out).mean())


def test_describe_comparison_states_the_verdicts_this_table_supports():
    from anatcl_core.age_probe import describe_comparison
    rows = {"training median": (13.6, 12.0, 15.0, None, None, None),
            "simclr": (8.5, 7.5, 9.5, 0.0, 0.0, 0.0),
            "l1": (6.7, 5.9, 7.6, -1.8, -2.9, -0.8),          # interval below zero: better
            "expw": (7.8, 6.9, 8.8, -0.7, -1.9, 0.5),         # across zero: not distinguishable
            "random init": (9.9, 8.8, 14.0, 1.4, 0.2, 3.3)}   # above zero: worse; its high end overlaps the median
    table = pd.DataFrame.from_dict(rows, orient="index", columns=["mae", "low", "high", "minus_reference",
                                                                   "paired_low", "paired_high"])
    table.attrs.update(reference="simclr", n_train=100, n_test=56)
    text = describe_comparison(table)
    assert "3 of 4 encoders beat always answering the training median (13.6 years)" in text
    assert "better than simclr (8.5 years; difference in years, paired 95 % interval): **l1** (-1.8, -2.9 to -0.8)." in text
    assert "worse than simclr" in text and "**random init** (+1.4, +0.2 to +3.3)" in text
    assert "not distinguishable from simclr" in text and "**expw** (-0.7, -1.9 to +0.5)" in text
    table.attrs["reference"] = None                        # no reference: only the median sentence
    assert describe_comparison(table).count("simclr") == 0
