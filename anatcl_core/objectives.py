"""The loss of one pretraining step for each of the six methods (`methods.Method.objective` says which).

Example::

    loss, logged = compute_loss(cfg, out, n_local, age, desc, age_stats)

The contrastive objectives live in `losses.py`; this module turns an engine's step (projections of every
view, ages, descriptors, possibly on several ranks) into the method's loss. The L1 baseline regresses
age (standardised on the training rows, or in years: `l1_target`) through `AgeRegressor`, the only method
whose network is not the contrastive model.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from anatcl_core.anatomy import AGE_KERNELS
from anatcl_core.distributed import all_gather_tensor, all_gather_with_grad
from anatcl_core.encoder import AnatCLModel
from anatcl_core.losses import anatcl_loss, nt_xent_loss, weighted_contrastive_loss
from anatcl_core.methods import get_method
from anatcl_core.precision import fp32_region

if TYPE_CHECKING:
    from anatcl_core.pretrain import PretrainConfig


class AgeRegressor(nn.Module):
    """The L1 baseline: encoder + linear head to age, standardised or in years (the contrastive head is unused)."""

    def __init__(self, model: AnatCLModel):
        super().__init__()
        self.model = model
        self.regressor = nn.Linear(model.embed_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, 1, X, Y, Z] -> predicted ages [B] float32, in the target's unit (the head in fp32 under autocast)."""
        features = self.model.encoder(x)
        with fp32_region(features):
            return self.regressor(features.float()).squeeze(1)


def compute_loss(cfg: "PretrainConfig", out: torch.Tensor, n_local: int, age: torch.Tensor, desc: torch.Tensor,
                 age_stats: tuple[float, float]) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one step. out: [n_views * n_local, D] projections (or [n_views * n_local] ages for l1).

    Contrastive methods gather projections (with gradients) and targets from every rank, so the loss is the
    one of the global batch; `age` and `desc` are this rank's [n_local] and [n_local, 3, 68].
    """
    objective = cfg.objective
    if objective == "l1":
        mean, std = age_stats if cfg.l1_target == "standardised" else (0.0, 1.0)
        target = ((age - mean) / std).repeat(cfg.n_views)
        loss = F.l1_loss(out.float(), target)
        return loss, {"l1_years": loss.item() * std}
    z = out.float().reshape(cfg.n_views, n_local, -1).transpose(0, 1)      # [n_local, V, D]
    z = all_gather_with_grad(z)
    age, desc = all_gather_tensor(age), all_gather_tensor(desc)
    if objective == "nt-xent":
        return nt_xent_loss(z, cfg.temperature), {}
    if objective in ("yaware", "expw"):
        weights = AGE_KERNELS[cfg.kernel](age, age, cfg.sigma)
        return weighted_contrastive_loss(z, weights, cfg.temperature, objective), {}
    loss, terms = anatcl_loss(z, age, desc, get_method(cfg.method).descriptor, cfg.sigma, cfg.temperature,
                              cfg.lambda_age, cfg.lambda_anat, cfg.kernel)
    return loss, {f"loss_{k}": v.item() for k, v in terms.items()}
