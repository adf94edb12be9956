"""Parameters of the latent anatomy: regional baselines, how each region ages, how subjects vary.

A subject's cortex is described per Desikan-Killiany region by log-scale factors applied to a
baseline anatomy (the mean of the 10 real ENIGMA example controls):

  log thickness[r] = age term + sex term + individual term + diagnosis term      (same for area)
  GMV[r]           = thickness[r] * area[r]   (so log GMV = log thickness + log area)

Individual variation is correlated across regions the way real cortex is: a few shared factors
with smooth spatial loadings (global, anterior-posterior, superior-inferior, left-right), computed
from the atlas region centroids, plus independent regional noise. Thickness and area get
independent factors (they are largely independent genetically and across people); area has in
addition a global head-size factor. All numbers are log units (0.01 = 1 %).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from anatcl_core.anatomy import REGIONS
from anatcl_core.data.enigma import control_means
from anatcl_core.data.synthetic.lifespan import AREA_CURVE, THICKNESS_CURVE, LifespanCurve
from anatcl_core.data.synthetic.templates import atlas_centroids_mm

#: Desikan-Killiany lobes, used for how strongly a region's thickness follows the lifespan curve.
LOBES: dict[str, tuple[str, ...]] = {
    "frontal": ("caudalmiddlefrontal", "lateralorbitofrontal", "medialorbitofrontal", "paracentral",
                "parsopercularis", "parsorbitalis", "parstriangularis", "precentral",
                "rostralmiddlefrontal", "superiorfrontal", "frontalpole"),
    "parietal": ("inferiorparietal", "postcentral", "precuneus", "superiorparietal", "supramarginal"),
    "temporal": ("bankssts", "entorhinal", "fusiform", "inferiortemporal", "middletemporal",
                 "parahippocampal", "superiortemporal", "temporalpole", "transversetemporal"),
    "occipital": ("cuneus", "lateraloccipital", "lingual", "pericalcarine"),
    "cingulate": ("caudalanteriorcingulate", "isthmuscingulate", "posteriorcingulate",
                  "rostralanteriorcingulate"),
    "insula": ("insula",),
}
#: Frontal and parietal association cortex thin fastest with age, primary visual cortex least.
LOBE_AGE_SENSITIVITY: dict[str, float] = {
    "frontal": 1.2, "parietal": 1.1, "temporal": 1.0, "occipital": 0.7, "cingulate": 0.8, "insula": 1.1,
}

#: Log thickness difference of males by lobe: after scaling for brain size, women's cortex is
#: slightly thicker, most in frontal and parietal association cortex.
MALE_THICKNESS_BY_LOBE: dict[str, float] = {
    "frontal": -0.025, "parietal": -0.025, "temporal": -0.005, "occipital": 0.0, "cingulate": -0.01, "insula": -0.005,
}

FACTOR_NAMES: tuple[str, ...] = ("global", "anterior_posterior", "superior_inferior", "left_right")


def region_name(region: str) -> str:
    """'lh-insula' -> 'insula'."""
    return region.split("-", 1)[1]


def lobe_of(region: str) -> str:
    """Lobe of a REGIONS entry."""
    name = region_name(region)
    return next(lobe for lobe, names in LOBES.items() if name in names)


def factor_loadings(centroids_mm: np.ndarray) -> np.ndarray:
    """Spatially smooth loadings of the shared factors -> [4, 68].

    centroids_mm: [68, 3] MNI (x, y, z). Rows: 1 everywhere; y and z centroid coordinates scaled to
    unit standard deviation; the sign of x (left -1, right +1).
    """
    y, z = (centroids_mm[:, axis] - centroids_mm[:, axis].mean() for axis in (1, 2))
    return np.stack([np.ones(len(centroids_mm)), y / y.std(), z / z.std(), np.sign(centroids_mm[:, 0])])


@dataclass(frozen=True)
class AnatomyModel:
    """All parameters of the latent anatomy (arrays are per region, in REGIONS order).

    base_thickness [68] mm, base_area [68] mm^2: the reference anatomy (log factors 0), i.e. a woman
    of 20 years without disease; taken from the real ENIGMA controls (adults, both sexes).
    age_sensitivity [68]: multiplies the thickness lifespan curve (area: latent.AREA_AGE_CONTRAST x the excess).
    loadings [K, 68]: shared-factor loadings; factor_sd_thickness / factor_sd_area [K] their sizes.
    region_sd_thickness / region_sd_area: independent regional noise; head_size_sd: global area factor.
    male_thickness [68] / male_area: log difference of males (0 to 2.5 % thinner by lobe, 11 % more area).
    """
    base_thickness: np.ndarray
    base_area: np.ndarray
    age_sensitivity: np.ndarray
    loadings: np.ndarray
    male_thickness: np.ndarray
    thickness_curve: LifespanCurve = THICKNESS_CURVE
    area_curve: LifespanCurve = AREA_CURVE
    factor_sd_thickness: np.ndarray = field(default_factory=lambda: np.array([0.04, 0.015, 0.012, 0.008]))
    factor_sd_area: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.025, 0.02, 0.012]))
    region_sd_thickness: float = 0.035
    region_sd_area: float = 0.05
    head_size_sd: float = 0.06
    male_area: float = 0.11

    @property
    def n_regions(self) -> int:
        return len(self.base_thickness)

    def within_group_sd(self) -> np.ndarray:
        """SD of the individual term among people of one age and sex -> [2, 68] (thickness, area).

        Diagnosis effects are Cohen's d in these units, as ENIGMA's are relative to the control SD.
        """
        thickness = np.sqrt(((self.factor_sd_thickness[:, None] * self.loadings) ** 2).sum(0)
                            + self.region_sd_thickness ** 2)
        area = np.sqrt(((self.factor_sd_area[:, None] * self.loadings) ** 2).sum(0)
                       + self.region_sd_area ** 2 + self.head_size_sd ** 2)
        return np.stack([thickness, area])


@functools.cache
def default_anatomy_model() -> AnatomyModel:
    """The model used by the synthetic cohorts: baselines from the ENIGMA controls, loadings from the atlas."""
    thickness, area = control_means()
    sensitivity = np.array([LOBE_AGE_SENSITIVITY[lobe_of(r)] for r in REGIONS])
    male_thickness = np.array([MALE_THICKNESS_BY_LOBE[lobe_of(r)] for r in REGIONS])
    return AnatomyModel(base_thickness=thickness, base_area=area, age_sensitivity=sensitivity,
                        loadings=factor_loadings(atlas_centroids_mm()), male_thickness=male_thickness)
