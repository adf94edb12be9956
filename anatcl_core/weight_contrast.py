"""How much a contrastive weighting tells candidates apart: the numbers behind "the anatomical weights are flat".

Example::

    weights = weightings(descriptors, age)          # {"age (RBF, σ = 2)": [N, N], "local": ..., ...}
    contrast_table(weights)                         # one row per weighting

The y-Aware loss divides an anchor's weights by their sum, so only their inequality matters. With V views per
subject, an anchor view's candidates are its own other V - 1 views (weight w_ii) and V views of every other
subject j (weight w_ij); its effective number of positives is (sum of weights)^2 / (sum of squared weights):
every candidate when all weights are equal, about one when one candidate dominates.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from anatcl_core.anatomy import (DESCRIPTOR_SIGMA, RangeNormaliser, global_similarity, local_similarity,
                                 rbf_kernel, rbf_similarity)
from anatcl_core.data.enigma import load_example_subjects


def effective_positives(weights: torch.Tensor, n_views: int = 2) -> torch.Tensor:
    """weights [N, N] >= 0 -> [N] effective positives of an anchor view among its N * V - 1 candidates.

    n_views = 1 counts other subjects only (out of N - 1), the anchor's own views left out.
    """
    if weights.ndim != 2 or weights.shape[0] != weights.shape[1]:
        raise ValueError(f"weights: expected [N, N], got {list(weights.shape)}")
    w = weights.double()
    off = w.masked_fill(torch.eye(len(w), dtype=torch.bool), 0.0)
    own = (n_views - 1) * torch.diagonal(w)
    total = own + n_views * off.sum(1)
    return total.square() / (own * torch.diagonal(w) + n_views * off.square().sum(1))


def contrast_table(weightings: dict[str, torch.Tensor], n_views: int = 2) -> pd.DataFrame:
    """{name: [N, N] weights} -> per weighting: mean and SD of the off-diagonal weights, and the mean effective
    positives among other subjects (`eff_subjects`, of N - 1) and in the loss's row (`eff_loss`, of N V - 1),
    each also as a fraction of its maximum."""
    rows = []
    for name, w in weightings.items():
        n = len(w)
        off = w[~torch.eye(n, dtype=torch.bool)].double()
        subjects = effective_positives(w, 1).mean().item()
        loss = effective_positives(w, n_views).mean().item()
        rows.append({"weighting": name, "n_subjects": n, "mean_weight": off.mean().item(),
                     "sd_weight": off.std().item(), "eff_subjects": subjects, "eff_subjects_fraction": subjects / (n - 1),
                     "eff_loss": loss, "eff_loss_fraction": loss / (n * n_views - 1)})
    return pd.DataFrame(rows).set_index("weighting")


def weightings(descriptors: torch.Tensor, age: torch.Tensor | None = None, age_sigma: float = 2.0,
               descriptor_sigma: float = DESCRIPTOR_SIGMA) -> dict[str, torch.Tensor]:
    """descriptors [N, 3, 68] range-normalised, age [N] years (optional) -> {weighting: [N, N]}: the age kernel of
    the released runs, the paper's local and global similarities, and our RBF on descriptor distance."""
    out = {} if age is None else {f"age (RBF, σ = {age_sigma:g})": rbf_kernel(age, age, age_sigma)}
    out.update({"local (paper Eq. 2)": local_similarity(descriptors, descriptors),
                "global (paper Eq. 3)": global_similarity(descriptors, descriptors),
                f"RBF on anatomy (σ = {descriptor_sigma:g}, extension)": rbf_similarity(descriptors, descriptors,
                                                                                      descriptor_sigma)})
    return out


def enigma_descriptors() -> tuple[torch.Tensor, torch.Tensor]:
    """The 20 real ENIGMA Toolbox subjects -> (descriptors [20, 3, 68] range-normalised on themselves, age [20]).

    The toolbox gives thickness and area only; grey-matter volume is taken as thickness x area, as the synthetic
    generator makes it (FreeSurfer's own volume differs from that product by a few percent)."""
    subjects = load_example_subjects()
    thickness, area = (torch.tensor(t.to_numpy(), dtype=torch.float64) for t in (subjects.thickness, subjects.area))
    descriptors = torch.stack([thickness, thickness * area, area], dim=1)
    age = torch.tensor(subjects.covariates["Age"].to_numpy(np.float64))
    return RangeNormaliser().fit_transform(descriptors), age
