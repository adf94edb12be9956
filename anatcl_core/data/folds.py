"""Subject-level folds for pretraining: a deterministic function of (participants, n_folds, seed), so every method
and every machine gets the same folds. A folds file placed in the cohort's `splits/` folder takes precedence (to
pin folds made elsewhere); otherwise they are made and a copy is kept with the run, never in the data folder,
which may be read-only shared storage."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold


AGE_BINS = (0, 12, 18, 25, 35, 50, 65, 80, 200)   # years; lifespan strata for stratification


def _strata(participants: pd.DataFrame, n_folds: int) -> np.ndarray:
    """site x age-bin labels; strata smaller than n_folds fall back to age bin, then to one pool.

    A pool that is itself smaller than n_folds joins the largest stratum, so every label fills every fold.
    """
    age_bin = pd.cut(participants["age"], AGE_BINS, right=False, labels=False).astype(int).astype(str)
    strata = participants["site"].astype(str) + "|" + age_bin
    for fallback in (age_bin, pd.Series("all", index=participants.index)):
        counts = strata.map(strata.value_counts())
        strata = strata.where(counts >= n_folds, fallback)
    counts = strata.value_counts()
    if counts.min() < n_folds:
        strata = strata.where(strata.map(counts) >= n_folds, counts.index[0])
    return strata.to_numpy()


def make_folds(participants: pd.DataFrame, n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """participants (one row per subject) -> DataFrame [participant_id, fold] stratified by site and age bin."""
    if participants["participant_id"].duplicated().any():
        raise ValueError("make_folds: participant_id must be unique (folds are made by subject)")
    if len(participants) < n_folds:
        raise ValueError(f"make_folds: {len(participants)} subjects cannot fill {n_folds} folds")
    folds = np.empty(len(participants), dtype=int)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(participants)), _strata(participants, n_folds))):
        folds[held_out] = k
    return pd.DataFrame({"participant_id": participants["participant_id"].to_numpy(), "fold": folds})


def load_or_make_folds(cohort_path: str | os.PathLike, participants: pd.DataFrame, n_folds: int = 5,
                       seed: int = 0) -> pd.DataFrame:
    """Read `<cohort>/splits/folds-<n>-seed<seed>.tsv` if someone put it there, else make the folds.

    Returns [participant_id, fold] in participants order. Nothing is written into the cohort's folder (the
    pretraining engine keeps a copy of the folds it used in its run folder).
    """
    path = Path(cohort_path) / "splits" / f"folds-{n_folds}-seed{seed}.tsv"
    if path.exists():
        folds = pd.read_csv(path, sep="\t", dtype={"participant_id": str})
        if list(folds["participant_id"]) != list(participants["participant_id"].astype(str)):
            raise ValueError(f"{path}: participant_id column does not match the cohort's participants.tsv; "
                             "delete the file to make new folds")
    else:
        folds = make_folds(participants, n_folds, seed)
    return folds


def training_rows(participants: pd.DataFrame, folds: pd.DataFrame, fold: int) -> np.ndarray:
    """Row indices used to pretrain fold `fold`: the pretraining pool minus the held-out fold.

    The pool is OpenBHB's `split == "train"` rows when the column exists (its test sets stay untouched for the
    downstream protocol), otherwise every row.
    """
    if fold not in set(folds["fold"]):
        raise ValueError(f"fold {fold} does not exist; folds are {sorted(set(folds['fold']))}")
    pool = participants["split"].eq("train").to_numpy() if "split" in participants else np.ones(len(folds), bool)
    return np.flatnonzero(pool & (folds["fold"].to_numpy() != fold))
