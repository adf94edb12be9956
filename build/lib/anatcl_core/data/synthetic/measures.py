"""The Desikan table [N, 7, 68] of a cohort, computed from its latent anatomy like FreeSurfer would report it.

Channels (anatcl_core.anatomy.CHANNELS order) and how each is made, per region r:
  0 area (mm^2)                 base_area * exp(log area factor + site offset + measurement noise)
  1 GMV (mm^3)                  thickness * area * exp(noise)        -- the same volume the image carries
  2 thickness mean (mm)         base_thickness * exp(log thickness factor + site offset + noise)
  3 thickness std (mm)          ~26 % of the thickness, following half of its log factor
  4 mean curvature (mm^-1)      c0[r] * exp(0.8 * thickness age term + folding + site offset): ageing
                                flattens the cortex, but more weakly than it thins it
  5 Gaussian curvature (mm^-2)  g0[r] * (mean curvature / c0)^2 * exp(noise)
  6 intrinsic curvature index   area * Gaussian curvature / (4 pi) * exp(noise) (integrated over the region)
Baseline curvature is higher in small regions (c0 ~ 0.13 mm^-1 x (median area / area)^0.2).
Measurement noise: 5 % for regional thickness, 1 % for area, 4 % for volume (FreeSurfer's regional thickness
is its least repeatable measure). These levels, the curvature's age fraction and the curvature noises are
calibrated so that the ridge study of the paper's Table 6 ranks the measures as it does on real OpenBHB.
"""
from __future__ import annotations

import numpy as np

from anatcl_core.data.synthetic.latent import LatentAnatomy
from anatcl_core.data.synthetic.model import AnatomyModel
from anatcl_core.data.synthetic.sites import SiteEffects

MEASUREMENT_SD = np.array([0.05, 0.01, 0.04])   # log units: thickness, area, GMV
THICKNESS_STD_RATIO = 0.26
THICKNESS_STD_NOISE_SD = 0.06
MEAN_CURVATURE_REFERENCE = 0.13      # mm^-1
GAUSSIAN_CURVATURE_REFERENCE = 0.03  # mm^-2
CURVATURE_AGE_FRACTION = 0.8
GAUSSIAN_CURVATURE_NOISE_SD = 0.15
CURVATURE_INDEX_NOISE_SD = 0.2


def baseline_curvature(base_area: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference (mean curvature mm^-1, Gaussian curvature mm^-2) per region -> two [68]."""
    mean_curvature = MEAN_CURVATURE_REFERENCE * (np.median(base_area) / base_area) ** 0.2
    gaussian = GAUSSIAN_CURVATURE_REFERENCE * (mean_curvature / MEAN_CURVATURE_REFERENCE) ** 2
    return mean_curvature, gaussian


def desikan_table(model: AnatomyModel, latent: LatentAnatomy, site_index: np.ndarray, sites: SiteEffects,
                  rng: np.random.Generator) -> np.ndarray:
    """Latent anatomy + site offsets + measurement noise -> [N, 7, 68] float32 (CHANNELS order).

    site_index: [N] index into `sites` of each subject's site.
    """
    n, n_regions = len(latent), model.n_regions
    noise = MEASUREMENT_SD[None, :, None] * rng.standard_normal((n, 3, n_regions))
    log_factor = latent.log_factors
    thickness = model.base_thickness * np.exp(log_factor[:, 0] + sites.thickness_bias[site_index] + noise[:, 0])
    area = model.base_area * np.exp(log_factor[:, 1] + sites.area_bias[site_index] + noise[:, 1])
    gmv = thickness * area * np.exp(noise[:, 2])
    thickness_std = (THICKNESS_STD_RATIO * model.base_thickness
                     * np.exp(0.5 * log_factor[:, 0] + THICKNESS_STD_NOISE_SD * rng.standard_normal((n, n_regions))))
    c0, g0 = baseline_curvature(model.base_area)
    log_curvature = (CURVATURE_AGE_FRACTION * latent.age[:, 0] + latent.folding
                     + sites.curvature_bias[site_index][:, None])
    mean_curvature = c0 * np.exp(log_curvature)
    gaussian = g0 * np.exp(2.0 * log_curvature + GAUSSIAN_CURVATURE_NOISE_SD * rng.standard_normal((n, n_regions)))
    curvature_index = (area * gaussian / (4.0 * np.pi)
                       * np.exp(CURVATURE_INDEX_NOISE_SD * rng.standard_normal((n, n_regions))))
    table = np.stack([area, gmv, thickness, thickness_std, mean_curvature, gaussian, curvature_index], axis=1)
    return table.astype(np.float32)
