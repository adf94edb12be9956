"""Paired comparisons of encoders on one task: the same subjects, the same folds, one bootstrap over subjects.

Example::

    y_hat = {m: out_of_fold_predictions(features[m], y, "classification") for m in features}
    boot = paired_bootstrap(y, y_hat["anatcl-local"], y_hat["yaware"], "classification")
    seed_average([boot, ...])        # mean difference over seeds, its 95 % interval and detectable size

A difference is score(a) - score(b) in the task's metric (`probe.score`: balanced accuracy in % points, or MAE
in the target's unit). Every encoder's probe sees the same folds (`probe_folds.cv_splits` with one seed), so the
bootstrap resamples subjects, not folds, and the same resampled subjects score both encoders.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatcl_core.probe import fit_probe, score
from anatcl_core.probe_folds import cv_splits

#: (z_0.975 + z_0.8): a difference of this many standard errors is detected by a two-sided 5 % test 80 % of the time.
DETECTABLE_SE = 2.8


def out_of_fold_predictions(X: np.ndarray, y: np.ndarray, kind: str, n_splits: int = 5, seed: int = 0,
                            protocol: str = "ours") -> np.ndarray:
    """X [n, d], y [n] -> [n] predictions, each from the probe (`probe.fit_probe`, inner search included) fitted
    on the folds that do not hold that subject. Same y, n_splits and seed: same folds, whatever X."""
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    predictions = np.empty(len(y), dtype=np.float64)
    for k, (train, test) in enumerate(cv_splits(y, kind, n_splits, seed=seed)):
        probe, _ = fit_probe(X[train], y[train], kind, seed=seed + k, protocol=protocol)
        predictions[test] = probe.predict(X[test])
    return predictions


def held_out_predictions(X: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray, kind: str,
                         seed: int = 0, protocol: str = "ours") -> np.ndarray:
    """The probe fitted on rows `train` (scaler and penalty too) -> [len(test)] predictions for rows `test`."""
    train, test = np.asarray(train), np.asarray(test)
    if np.intersect1d(train, test).size:
        raise ValueError("train and test rows overlap: the probe would score subjects it was fitted on")
    probe, _ = fit_probe(np.asarray(X, dtype=np.float64)[train], np.asarray(y)[train], kind, seed=seed,
                         protocol=protocol)
    return probe.predict(np.asarray(X, dtype=np.float64)[test])


def _resampled_scores(y: np.ndarray, y_hat: np.ndarray, kind: str, counts: np.ndarray) -> np.ndarray:
    """Scores on bootstrap resamples given as counts [B, n] (times each subject is drawn) -> [B]."""
    if kind == "regression":
        return counts @ np.abs(y - y_hat) / counts.sum(1)
    recalls = [counts[:, y == c] @ (y_hat[y == c] == c) / counts[:, y == c].sum(1) for c in np.unique(y)]
    return 100.0 * np.mean(recalls, axis=0)


@dataclass(frozen=True)
class PairedBootstrap:
    """score(a) - score(b) on all subjects (`difference`) and on B bootstrap resamples of them (`resampled` [B])."""
    difference: float
    resampled: np.ndarray

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        tail = (1.0 - level) / 2.0
        return float(np.quantile(self.resampled, tail)), float(np.quantile(self.resampled, 1.0 - tail))


def paired_bootstrap(y: np.ndarray, y_hat_a: np.ndarray, y_hat_b: np.ndarray, kind: str, n_boot: int = 2000,
                     seed: int = 0) -> PairedBootstrap:
    """y, y_hat_a, y_hat_b: [n] -> the difference of the two encoders' scores, with the same resampled subjects
    for both. A classification resample is stratified (each class resampled within itself), so every resample
    holds both classes and balanced accuracy is always defined."""
    y, a, b = (np.asarray(v) for v in (y, y_hat_a, y_hat_b))
    if not len(y) == len(a) == len(b):
        raise ValueError(f"y and the two predictions must have one value per subject, got {len(y)}, {len(a)}, {len(b)}")
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_boot, len(y)))
    strata = [np.flatnonzero(y == c) for c in np.unique(y)] if kind == "classification" else [np.arange(len(y))]
    for rows in strata:
        draws = rows[rng.integers(0, len(rows), (n_boot, len(rows)))]
        np.add.at(counts, (np.arange(n_boot)[:, None], draws), 1.0)
    difference = score(kind, y, a) - score(kind, y, b)
    return PairedBootstrap(difference, _resampled_scores(y, a, kind, counts) - _resampled_scores(y, b, kind, counts))


def seed_average(boots: list[PairedBootstrap], level: float = 0.95) -> dict[str, float]:
    """Paired differences of independent seeds (worlds, initialisations, batch orders) -> their mean, its interval
    (resamples averaged across seeds, each seed's subjects resampled independently), the SD of the per-seed
    differences, and `detectable`: the smallest true mean difference this design finds 80 % of the time
    (DETECTABLE_SE x the bootstrap standard error of the mean)."""
    if not boots:
        raise ValueError("seed_average: no paired bootstraps given")
    averaged = PairedBootstrap(float(np.mean([b.difference for b in boots])),
                               np.mean([b.resampled for b in boots], axis=0))
    low, high = averaged.interval(level)
    per_seed = [b.difference for b in boots]
    return {"difference": averaged.difference, "low": low, "high": high, "n_seeds": len(boots),
            "sd_seeds": float(np.std(per_seed, ddof=1)) if len(boots) > 1 else float("nan"),
            "detectable": DETECTABLE_SE * float(np.std(averaged.resampled))}
