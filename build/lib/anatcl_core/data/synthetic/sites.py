"""Scanner sites: what a site does to the images and to the FreeSurfer-like measures.

Sites do not change anatomy. They change how it is measured:
  images      a global intensity scale (coil, bias-field and segmentation differences) and a noise level
  FreeSurfer  small systematic offsets: thickness (global + regional), area (global), curvature (global)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INTENSITY_SCALE_SD = 0.05
INTENSITY_SCALE_RANGE = (0.85, 1.15)
NOISE_SD_RANGE = (0.01, 0.04)          # GM probability units
THICKNESS_GLOBAL_SD = 0.02             # log units (2 %)
THICKNESS_REGION_SD = 0.008
AREA_GLOBAL_SD = 0.01
CURVATURE_GLOBAL_SD = 0.02


@dataclass(frozen=True)
class SiteEffects:
    """Effects of S sites.

    names: S site labels; intensity_scale [S]; noise_sd [S] (image noise SD);
    thickness_bias [S, 68], area_bias [S, 68], curvature_bias [S]: log offsets of the measures.
    """
    names: tuple[str, ...]
    intensity_scale: np.ndarray
    noise_sd: np.ndarray
    thickness_bias: np.ndarray
    area_bias: np.ndarray
    curvature_bias: np.ndarray

    def as_dict(self) -> dict[str, dict[str, float]]:
        """Per-site image parameters and global measure offsets (for provenance)."""
        return {name: {"intensity_scale": float(self.intensity_scale[s]), "noise_sd": float(self.noise_sd[s]),
                       "thickness_bias": float(self.thickness_bias[s].mean()),
                       "area_bias": float(self.area_bias[s].mean()),
                       "curvature_bias": float(self.curvature_bias[s])}
                for s, name in enumerate(self.names)}


def sample_site_effects(names: tuple[str, ...], n_regions: int, rng: np.random.Generator) -> SiteEffects:
    """Draw the effects of the named sites."""
    n = len(names)
    scale = np.clip(1.0 + INTENSITY_SCALE_SD * rng.standard_normal(n), *INTENSITY_SCALE_RANGE)
    noise = rng.uniform(*NOISE_SD_RANGE, size=n)
    thickness = (THICKNESS_GLOBAL_SD * rng.standard_normal((n, 1))
                 + THICKNESS_REGION_SD * rng.standard_normal((n, n_regions)))
    area = np.repeat(AREA_GLOBAL_SD * rng.standard_normal((n, 1)), n_regions, axis=1)
    curvature = CURVATURE_GLOBAL_SD * rng.standard_normal(n)
    return SiteEffects(tuple(names), scale, noise, thickness, area, curvature)
