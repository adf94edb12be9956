"""Have the encoders learned, and do they differ? Age predicted from frozen features of held-out subjects.

The quickest check after pretraining: a ridge regression on each encoder's features of the subjects pretraining
saw predicts the age of those it did not. Every encoder is scored on the same subjects, so two encoders are
compared by the paired bootstrap of their per-subject absolute errors, which is much tighter than comparing
two separate intervals. `compare_encoders` adds the floor of always answering the training median.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

#: Ridge penalties searched by leave-one-out on the training rows (features are standardised first). Finer
#: and wider than `probe.ALPHA_GRID` on purpose: RidgeCV's leave-one-out is exact and costs the same for any
#: number of penalties, while the probes' nested K-fold search pays per value, across 22 tasks and every fold.
#: Changing either grid changes the book's numbers.
ALPHAS = tuple(np.logspace(-2, 5, 15))


def held_out_age_errors(features: np.ndarray, age: np.ndarray, train: np.ndarray, test: np.ndarray,
                        alphas=ALPHAS) -> np.ndarray:
    """features [N, D], age [N] years, train/test row indices -> absolute errors [len(test)] in years.

    Scaler and penalty are fitted on the `train` rows only; no statistic of a test row reaches the model.
    """
    train, test = np.asarray(train), np.asarray(test)
    if np.intersect1d(train, test).size:
        raise ValueError("train and test rows overlap: the age probe would score subjects it was fitted on")
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.asarray(alphas, dtype=float)))
    ridge.fit(features[train], age[train])
    return np.abs(ridge.predict(features[test]) - age[test])


def bootstrap_mean(values: np.ndarray, seed: int = 0, n_boot: int = 2000) -> tuple[float, float, float]:
    """values [n] -> (mean, 2.5 % and 97.5 % quantiles of the bootstrap distribution of the mean)."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or len(values) == 0:
        raise ValueError(f"expected a non-empty 1-d array of per-subject values, got shape {values.shape}")
    rng = np.random.default_rng(seed)
    boot = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    return float(values.mean()), float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))


def compare_encoders(features: dict[str, np.ndarray], age: np.ndarray, train: np.ndarray, test: np.ndarray,
                     reference: str | None = "simclr", seed: int = 0, n_boot: int = 2000) -> pd.DataFrame:
    """{encoder name: features [N, D]} -> one row per encoder (and the training median) with its held-out age MAE.

    Columns: `mae`, `low`, `high` (bootstrap 95 % interval, years) and, when `reference` is one of the
    encoders, `minus_reference`, `paired_low`, `paired_high`: the paired bootstrap interval of the encoder's
    MAE minus the reference's on the same subjects (below zero: better than the reference).
    """
    age = np.asarray(age, dtype=float)
    errors = {"training median": np.abs(np.median(age[train]) - age[test])}
    errors.update({name: held_out_age_errors(x, age, train, test) for name, x in features.items()})
    rows = []
    for name, err in errors.items():
        mae, low, high = bootstrap_mean(err, seed, n_boot)
        row = {"encoder": name, "mae": mae, "low": low, "high": high}
        if reference in features:
            diff = bootstrap_mean(err - errors[reference], seed, n_boot)
            row.update(minus_reference=diff[0], paired_low=diff[1], paired_high=diff[2])
        rows.append(row)
    table = pd.DataFrame(rows).set_index("encoder")
    table.attrs.update(reference=reference, n_train=len(train), n_test=len(test))
    return table


def plot_comparison(table: pd.DataFrame):
    """`compare_encoders`' table -> a figure of two panels: each encoder's held-out age MAE with its 95 %
    interval (years), and, when the table has them, each encoder minus the reference on the same subjects with
    its paired 95 % interval: the comparison the verdicts rest on.

    Encoders are sorted best first; the dashed line of the first panel is the training median's MAE, the floor
    every encoder should beat; the second panel's zero line is "no different from the reference".
    """
    import matplotlib.pyplot as plt

    paired = "paired_low" in table and table.attrs.get("reference") in table.index
    encoders = table.drop(index="training median", errors="ignore").sort_values("mae", ascending=False)
    fig, axes = plt.subplots(1, 2 if paired else 1, figsize=(12 if paired else 6.5, 0.45 * len(encoders) + 1.6),
                             squeeze=False, sharey=True)
    y = np.arange(len(encoders))
    ax = axes[0, 0]
    ax.errorbar(encoders["mae"], y, xerr=[encoders["mae"] - encoders["low"], encoders["high"] - encoders["mae"]],
                fmt="o", capsize=3)
    ax.set_yticks(y, encoders.index)
    if "training median" in table.index:
        ax.axvline(table.loc["training median", "mae"], ls="--", color="grey", label="training median")
        ax.legend(loc="upper right")
    ax.set_xlabel(f"age MAE on {table.attrs.get('n_test', '?')} held-out subjects\n(years; 95 % bootstrap interval)")
    if paired:
        reference = table.attrs["reference"]
        ax = axes[0, 1]
        diff = encoders["minus_reference"]
        ax.errorbar(diff, y, xerr=[diff - encoders["paired_low"], encoders["paired_high"] - diff], fmt="o",
                    capsize=3, color="C1")
        ax.axvline(0, color="grey", lw=1)
        ax.set_xlabel(f"MAE minus {reference}'s on the same subjects\n(years; paired 95 % interval; below 0: better)")
    fig.tight_layout()
    return fig


def describe_comparison(table: pd.DataFrame) -> str:
    """`compare_encoders`' table -> Markdown sentences that state what this table shows, for prose that must
    follow the run it sits under (another machine or seed gives other digits, and possibly other verdicts).

    An encoder is "better" or "worse" than the reference only when its paired 95 % interval excludes zero.
    """
    def name(encoder: str) -> str:
        return f"**{encoder}**"

    median = table.loc["training median", "mae"] if "training median" in table.index else None
    encoders = table.drop(index="training median", errors="ignore")
    parts = []
    if median is not None:
        beat = [e for e in encoders.index if encoders.loc[e, "high"] < median]
        parts.append(f"{len(beat)} of {len(encoders)} encoders beat always answering the training median "
                     f"({median:.1f} years) with intervals clear of it.")
    reference = table.attrs.get("reference")
    if reference in encoders.index and "paired_low" in table:
        others = encoders.drop(index=reference).sort_values("minus_reference")
        groups = {"better than": others[others["paired_high"] < 0], "worse than": others[others["paired_low"] > 0],
                  "not distinguishable from": others[(others["paired_low"] <= 0) & (others["paired_high"] >= 0)]}
        for verdict, rows in groups.items():
            if len(rows):
                cells = ", ".join(f"{name(e)} ({r.minus_reference:+.1f}, {r.paired_low:+.1f} to {r.paired_high:+.1f})"
                                  for e, r in rows.iterrows())
                parts.append(f"On the same subjects, {verdict} {reference} ({encoders.loc[reference, 'mae']:.1f} "
                             f"years; difference in years, paired 95 % interval): {cells}.")
    return " ".join(parts)
