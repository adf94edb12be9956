"""Contrastive objectives of the paper: weighted contrastive loss (y-Aware, ExpW), NT-Xent, and AnatCL.

Notation: N subjects, V views each, D projection size. `z: [N, V, D]` unit vectors, `weights: [N, N]` the
degree of positiveness between subjects (1 on the diagonal for a kernel). Every one of the N*V views is an
anchor; its positives are all *other* views, weighted by `weights` and row-normalised (paper Eq. 1).
"""
from __future__ import annotations

import torch

from anatcl_core.anatomy import AGE_KERNELS, SIMILARITIES

#: How positives are weighted in the denominator: y-Aware (as is) or ExpW (by 1 - w).
WEIGHTINGS = ("yaware", "expw")


def _check(z: torch.Tensor, weights: torch.Tensor, temperature: float, weighting: str) -> None:
    if z.ndim != 3 or z.shape[1] < 1:
        raise ValueError(f"z: expected [N, V, D] unit vectors, got {list(z.shape)}")
    n_views = z.shape[0] * z.shape[1]
    if n_views < 2:
        raise ValueError(f"z: need at least 2 views in total to contrast, got shape {list(z.shape)}")
    if weights.shape != (z.shape[0], z.shape[0]):
        raise ValueError(f"weights: expected [N, N] = [{z.shape[0]}, {z.shape[0]}], got {list(weights.shape)}")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not torch.isfinite(weights).all() or (weights < 0).any():
        raise ValueError("weights must be finite and >= 0")
    if weighting == "expw" and (weights > 1).any():
        raise ValueError("weighting='expw' needs weights in [0, 1]: its denominator uses exp(logit * (1 - w))")


def contrastive_loss_from_logits(logits: torch.Tensor, pos_weights: torch.Tensor, weighting: str = "yaware",
                                 ) -> torch.Tensor:
    """Weighted contrastive loss from anchor-by-candidate logits.

    logits: [A, A] similarity / temperature; pos_weights: [A, A] >= 0 with a zero diagonal (self is excluded
    from numerator and denominator). Returns the mean over anchors of
    -sum_b w_ab / sum_b' w_ab' * (logit_ab - log sum_{t != a} exp(f(logit_at))) with f = id (y-Aware)
    or f(l) = l * (1 - w_at) (ExpW).
    """
    n = logits.shape[0]
    self_mask = torch.eye(n, dtype=torch.bool, device=logits.device)
    row_mass = pos_weights.sum(dim=1, keepdim=True)
    if (row_mass <= 0).any():
        bad = torch.nonzero(row_mass.squeeze(1) <= 0).flatten().tolist()[:5]
        raise ValueError(f"anchors {bad} have no positive (all weights zero): use V >= 2 views or weights with "
                         "off-diagonal mass")
    denominator = logits if weighting == "yaware" else logits * (1.0 - pos_weights)
    log_norm = torch.logsumexp(denominator.masked_fill(self_mask, float("-inf")), dim=1, keepdim=True)
    log_prob = logits - log_norm
    per_anchor = -((pos_weights / row_mass) * log_prob.masked_fill(self_mask, 0.0)).sum(dim=1)
    return per_anchor.mean()


def weighted_contrastive_loss(z: torch.Tensor, weights: torch.Tensor, temperature: float = 0.1,
                              weighting: str = "yaware") -> torch.Tensor:
    """Weighted contrastive loss over all views (paper Eq. 1; y-Aware of Dufumier et al. 2021, ExpW of Barbano et al. 2023).

    z: [N, V, D] unit vectors; weights: [N, N] >= 0, `weights[i, i]` is the weight between two views of
    subject i. Logits are (z_a . z_b - 1) / temperature; the constant shift keeps exp() bounded and leaves
    y-Aware unchanged. Computed in float32 even under autocast. Identity weights give NT-Xent (SimCLR).
    Returns a scalar.
    """
    _check(z, weights, temperature, weighting)
    n, v, d = z.shape
    with torch.autocast(device_type=z.device.type, enabled=False):
        views = z.float().reshape(n * v, d)                       # row a = subject a // V, view a % V
        logits = (views @ views.T - 1.0) / temperature            # [NV, NV]
        expanded = weights.float().repeat_interleave(v, 0).repeat_interleave(v, 1)
        pos = expanded.masked_fill(torch.eye(n * v, dtype=torch.bool, device=z.device), 0.0)
        return contrastive_loss_from_logits(logits, pos, weighting)


def nt_xent_loss(z: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent of SimCLR (Chen et al. 2020): only the other views of the same subject are positives. z: [N, V, D]."""
    eye = torch.eye(z.shape[0], device=z.device, dtype=torch.float32)
    return weighted_contrastive_loss(z, eye, temperature, weighting="yaware")


def anatcl_loss(z: torch.Tensor, age: torch.Tensor, descriptors: torch.Tensor, descriptor: str = "local",
                sigma: float = 2.0, temperature: float = 0.1, lambda_age: float = 1.0, lambda_anat: float = 1.0,
                kernel: str = "rbf") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The AnatCL objective (paper Eq. 4): lambda_age * L(age RBF kernel) + lambda_anat * L(anatomical similarity).

    z: [N, V, D] unit vectors; age: [N] years; descriptors: [N, 3, 68] range-normalised (thickness, GMV, area);
    descriptor: "local" (Eq. 2) or "global" (Eq. 3); kernel: the age kernel, a key of `anatomy.AGE_KERNELS`
    (width `sigma` years). Both terms use y-Aware. Negative similarities (possible
    only for descriptors outside [0, 1]) are clipped to 0 so they act as plain negatives.
    Returns (total loss, {"age": term, "anat": term}).
    """
    if descriptor not in SIMILARITIES:
        raise ValueError(f"descriptor must be one of {sorted(SIMILARITIES)}, got {descriptor!r}")
    if kernel not in AGE_KERNELS:
        raise ValueError(f"kernel must be one of {sorted(AGE_KERNELS)}, got {kernel!r}")
    with torch.autocast(device_type=z.device.type, enabled=False):
        age = age.float()
        descriptors = descriptors.float()
        w_age = AGE_KERNELS[kernel](age, age, sigma)
        w_anat = SIMILARITIES[descriptor](descriptors, descriptors).clamp_min(0.0)
        loss_age = weighted_contrastive_loss(z, w_age, temperature, "yaware")
        loss_anat = weighted_contrastive_loss(z, w_anat, temperature, "yaware")
    total = lambda_age * loss_age + lambda_anat * loss_anat
    return total, {"age": loss_age.detach(), "anat": loss_anat.detach()}
