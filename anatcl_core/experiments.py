"""The paper's experiment as the book runs it: pretrain each method, embed every cohort, probe the tasks.

Runs live in `<output_dir>/runs/<method>-fold<k>/` and embeddings in `<output_dir>/embeddings/`, so the
chapters that print Tables 2-5 reuse what the pretraining chapter produced instead of recomputing it.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from anatcl_core.data.cohort import Cohort
from anatcl_core.pretrain import METHODS, PretrainConfig, pretrain
from anatcl_core.probe import EmbeddingCache, evaluate_tasks
from anatcl_core.tasks import TaskSpec

COHORT_NAMES = ("openbhb", "adni", "oasis3", "schizconnect", "abide1")


def run_dir(output_dir: str | Path, method: str, fold: int) -> Path:
    return Path(output_dir) / "runs" / f"{method}-fold{fold}"


def pretrain_methods(data_root: str | Path, output_dir: str | Path, methods=METHODS, fold: int = 0,
                     **overrides) -> dict[str, Path]:
    """Pretrain each method on `<data_root>/openbhb` (resuming where a run stopped) -> {method: checkpoint}.

    `overrides` are PretrainConfig fields (epochs, batch_size, max_steps_per_epoch, seed, ...).
    """
    checkpoints = {}
    for method in methods:
        cfg = PretrainConfig(cohort=str(Path(data_root) / "openbhb"), method=method,
                             out=str(run_dir(output_dir, method, fold)), fold=fold, resume=True, **overrides)
        checkpoints[method] = pretrain(cfg)
    return checkpoints


def open_cohorts(data_root: str | Path, names=COHORT_NAMES) -> dict[str, Cohort]:
    """The cohorts of `names` that exist under `data_root`."""
    return {n: Cohort.open(Path(data_root) / n) for n in names if (Path(data_root) / n / "meta.json").exists()}


def method_embeddings(data_root: str | Path, output_dir: str | Path, methods=METHODS, fold: int = 0,
                      device: str = "auto", batch_size: int = 8) -> dict[tuple[str, int], dict]:
    """{(method, fold): {cohort: [N, 512]}} from the runs' checkpoints, embedding only what is not cached."""
    cache = EmbeddingCache(Path(output_dir) / "embeddings", batch_size=batch_size, device=device)
    cohorts = open_cohorts(data_root)
    out = {}
    for method in methods:
        checkpoint = run_dir(output_dir, method, fold) / "checkpoint.pth"
        if not checkpoint.exists():
            raise FileNotFoundError(f"{checkpoint}: no pretrained checkpoint for {method} fold {fold}; "
                                    "run the pretraining chapter (or anatcl pretrain) first")
        out[(method, fold)] = cache.embeddings(checkpoint, cohorts)
    return out


def evaluate_methods(data_root: str | Path, output_dir: str | Path, tasks: list[TaskSpec | str],
                     methods=METHODS, fold: int = 0, seed: int = 0, n_splits: int = 5, **probe_options) -> pd.DataFrame:
    """Linear probes of every method's frozen features on `tasks` -> tidy results (see probe.evaluate_tasks).

    probe_options go to `probe.cross_validate_probe` (e.g. small_class_repeats, grid, inner_splits).
    """
    embeddings = method_embeddings(data_root, output_dir, methods, fold)
    participants = {n: c.participants for n, c in open_cohorts(data_root).items()}
    return evaluate_tasks(embeddings, participants, tasks, n_splits=n_splits, seed=seed, **probe_options)
