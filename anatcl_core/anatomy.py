"""Desikan-Killiany anatomy: region and measure names, range normalisation, and the
similarities that turn anatomical descriptors into contrastive weights.

Shapes used throughout::

  roi table    [N, 7, 68]  the seven OpenBHB FreeSurfer measures for the 68 cortical regions
  descriptors  [N, 3, 68]  (thickness mm, gray-matter volume mm^3, surface area mm^2) per region

All functions take and return torch tensors of any floating dtype and never loop over pairs.
"""
from __future__ import annotations

import math

import torch

_DK_NAMES = (
    "bankssts", "caudalanteriorcingulate", "caudalmiddlefrontal", "cuneus", "entorhinal",
    "fusiform", "inferiorparietal", "inferiortemporal", "isthmuscingulate", "lateraloccipital",
    "lateralorbitofrontal", "lingual", "medialorbitofrontal", "middletemporal", "parahippocampal",
    "paracentral", "parsopercularis", "parsorbitalis", "parstriangularis", "pericalcarine",
    "postcentral", "posteriorcingulate", "precentral", "precuneus", "rostralanteriorcingulate",
    "rostralmiddlefrontal", "superiorfrontal", "superiorparietal", "superiortemporal",
    "supramarginal", "frontalpole", "temporalpole", "transversetemporal", "insula",
)
#: The 68 cortical regions: 34 left then 34 right, FreeSurfer order (OpenBHB and ENIGMA use it too).
REGIONS: tuple[str, ...] = tuple(f"lh-{r}" for r in _DK_NAMES) + tuple(f"rh-{r}" for r in _DK_NAMES)

#: The seven OpenBHB Desikan channels, in their on-disk order.
CHANNELS: tuple[str, ...] = (
    "surface_area_mm^2",
    "gray_matter_volume_mm^3",
    "average_thickness_mm",
    "thickness_stddev_mm",
    "integrated_rectified_mean_curvature_mm^-1",
    "integrated_rectified_gaussian_curvature_mm^-2",
    "intrinsic_curvature_index",
)

#: The three measures AnatCL uses, in descriptor order (thickness, GMV, area).
MEASURES: tuple[str, ...] = ("average_thickness_mm", "gray_matter_volume_mm^3", "surface_area_mm^2")
MEASURE_CHANNELS: tuple[int, ...] = tuple(CHANNELS.index(m) for m in MEASURES)


def select_measures(roi: torch.Tensor) -> torch.Tensor:
    """roi: [N, 7, 68] OpenBHB table -> [N, 3, 68] (thickness, GMV, area)."""
    if roi.ndim != 3 or tuple(roi.shape[1:]) != (len(CHANNELS), len(REGIONS)):
        raise ValueError(f"roi table: expected shape [N, 7, 68], got {list(roi.shape)}")
    return roi[:, list(MEASURE_CHANNELS), :]


class RangeNormaliser:
    """Per (measure, region) min-max scaling to [0, 1], fitted on training rows only.

    Values outside the training range are clipped, so a test subject can never push a
    descriptor outside the unit cube the weights were designed for. A feature that is
    constant on the training rows maps to 0.5.
    """

    def __init__(self) -> None:
        self.low_: torch.Tensor | None = None
        self.high_: torch.Tensor | None = None

    def fit(self, x: torch.Tensor) -> "RangeNormaliser":
        """x: [N_train, ...] -> stores per-feature low/high of shape x.shape[1:]."""
        if x.ndim < 2 or x.shape[0] == 0:
            raise ValueError(f"RangeNormaliser.fit: expected [N>0, ...] training rows, got {list(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("RangeNormaliser.fit: training rows contain NaN or inf")
        self.low_ = x.amin(dim=0).detach().clone()
        self.high_ = x.amax(dim=0).detach().clone()
        return self

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """x: [N, ...] (same trailing shape as fitted) -> values in [0, 1], same dtype."""
        if self.low_ is None or self.high_ is None:
            raise RuntimeError("RangeNormaliser.transform called before fit")
        if tuple(x.shape[1:]) != tuple(self.low_.shape):
            raise ValueError(f"RangeNormaliser.transform: expected [N, {', '.join(map(str, self.low_.shape))}], "
                             f"got {list(x.shape)}")
        low = self.low_.to(device=x.device, dtype=x.dtype)
        span = (self.high_ - self.low_).to(device=x.device, dtype=x.dtype)
        constant = span <= 0
        scaled = (x - low) / torch.where(constant, torch.ones_like(span), span)
        scaled = torch.where(constant, torch.full_like(scaled, 0.5), scaled)
        return scaled.clamp(0.0, 1.0)

    def fit_transform(self, x: torch.Tensor) -> torch.Tensor:
        return self.fit(x).transform(x)

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.low_ is None or self.high_ is None:
            raise RuntimeError("RangeNormaliser.state_dict called before fit")
        return {"low": self.low_, "high": self.high_}

    @classmethod
    def from_state_dict(cls, state: dict[str, torch.Tensor]) -> "RangeNormaliser":
        norm = cls()
        norm.low_, norm.high_ = state["low"].clone(), state["high"].clone()
        return norm


def _check_pair(a: torch.Tensor, b: torch.Tensor, name: str) -> None:
    if a.ndim != 3 or b.ndim != 3 or a.shape[1:] != b.shape[1:]:
        raise ValueError(f"{name}: expected a [N, K, R] and b [M, K, R] with equal K, R; "
                         f"got {list(a.shape)} and {list(b.shape)}")


def local_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over regions of the cosine between per-region measure vectors (paper Eq. 2).

    a: [N, 3, 68], b: [M, 3, 68] (range-normalised descriptors) -> [N, M] in [-1, 1].
    """
    _check_pair(a, b, "local_similarity")
    a_unit = a / a.norm(dim=1, keepdim=True).clamp_min(eps)   # unit 3-vector per region
    b_unit = b / b.norm(dim=1, keepdim=True).clamp_min(eps)
    return torch.einsum("nkr,mkr->nm", a_unit, b_unit) / a.shape[2]


def global_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Mean over measures of the cosine between whole-cortex 68-vectors (paper Eq. 3).

    a: [N, 3, 68], b: [M, 3, 68] -> [N, M] in [-1, 1].
    """
    _check_pair(a, b, "global_similarity")
    a_unit = a / a.norm(dim=2, keepdim=True).clamp_min(eps)   # unit 68-vector per measure
    b_unit = b / b.norm(dim=2, keepdim=True).clamp_min(eps)
    return torch.einsum("nkr,mkr->nm", a_unit, b_unit) / a.shape[1]


#: Width of `rbf_similarity`, as an RMS difference of range-normalised descriptors: chosen so that the loss
#: row of an anchor has about as many effective positives as with the age kernel (chapter "When does anatomy help?").
DESCRIPTOR_SIGMA = 0.1


def rbf_similarity(a: torch.Tensor, b: torch.Tensor, sigma: float = DESCRIPTOR_SIGMA) -> torch.Tensor:
    """exp(-d_ij^2 / (2 sigma^2)) with d_ij the RMS difference of the two descriptors: an extension, not the paper's.

    a: [N, 3, 68], b: [M, 3, 68] (range-normalised) -> [N, M] in (0, 1]. An RBF kernel on anatomy, as the age
    kernel is on age: near 1 for anatomical neighbours only, where the cosines of Eqs. 2-3 are near 1 for
    almost every pair.
    """
    _check_pair(a, b, "rbf_similarity")
    if not sigma > 0:
        raise ValueError(f"rbf_similarity: sigma must be > 0, got {sigma}")
    squared = torch.cdist(a.flatten(1), b.flatten(1)).square() / (a.shape[1] * a.shape[2])
    return torch.exp(-squared / (2.0 * sigma**2))


#: Descriptor similarities by name: the paper's "local" (Eq. 2) and "global" (Eq. 3), and our "rbf".
SIMILARITIES = {"local": local_similarity, "global": global_similarity, "rbf": rbf_similarity}


def rbf_kernel(y_a: torch.Tensor, y_b: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """exp(-(y_a[i] - y_b[j])^2 / (2 sigma^2)).  y_a: [N], y_b: [M] (years) -> [N, M] in (0, 1]."""
    if y_a.ndim != 1 or y_b.ndim != 1:
        raise ValueError(f"rbf_kernel: expected 1-D targets, got {list(y_a.shape)} and {list(y_b.shape)}")
    if not sigma > 0:
        raise ValueError(f"rbf_kernel: sigma must be > 0, got {sigma}")
    diff = y_a[:, None] - y_b[None, :]
    return torch.exp(-diff.square() / (2.0 * sigma**2))


def gaussian_density_kernel(y_a: torch.Tensor, y_b: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """The normal density of y_a[i] - y_b[j]: rbf_kernel / (sqrt(2 pi) sigma). [N], [M] (years) -> [N, M].

    The authors' earlier code calls this kernel "gaussian" (their ExpW configuration: sigma = 1, so the
    weights peak at 0.40, not 1). The y-Aware loss is blind to the scale of the weights; ExpW's denominator
    exp(logit * (1 - w)) is not, which is why the choice matters there.
    """
    return rbf_kernel(y_a, y_b, sigma) / (math.sqrt(2.0 * math.pi) * sigma)


#: Age kernels by name: "rbf" (peak 1; the released AnatCL runs, `kernel_rbf_sigma2.0`) and "gaussian".
AGE_KERNELS = {"rbf": rbf_kernel, "gaussian": gaussian_density_kernel}
