"""Sampling the latent anatomy of a cohort: per subject and region, log-scale factors by cause.

The model::

    log factor [N, 2, 68] = age + sex + individual + diagnosis      (measure axis: thickness, area)

age         lifespan curve of the measure x the region's age sensitivity
sex         males: 0-2.5 % thinner (frontal/parietal most), 11 % more area (everywhere)
individual  shared spatial factors + head size (area) + independent regional noise
diagnosis   severity x effect_scale x Cohen's d map of the diagnosis x the model's within-group SD;
            severity ~ Gamma(mean 1, SD 0.5) per patient, because patients differ in how affected they are
folding     [N, 68] individual deviation of log mean curvature (shared + regional), which with the
            age term drives the curvature measures; it does not enter the grey-matter volume
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatcl_core.data.synthetic.effects import diagnosis_d
from anatcl_core.data.synthetic.model import AnatomyModel
from anatcl_core.data.synthetic.world import align_individual

AREA_AGE_CONTRAST = 1.5  # area's lobe-to-lobe age contrast relative to thickness's
SEVERITY_SHAPE = 4.0      # Gamma shape: mean 1, SD 1 / sqrt(4) = 0.5
FOLDING_SHARED_SD = 0.04
FOLDING_REGION_SD = 0.05


@dataclass(frozen=True)
class LatentAnatomy:
    """Log-scale factors relative to the model's baseline, split by cause.

    age, sex, individual, diagnosis: [N, 2, 68] (thickness, area); folding: [N, 68];
    severity: [N] disease severity (0 for controls).
    """
    age: np.ndarray
    sex: np.ndarray
    individual: np.ndarray
    diagnosis: np.ndarray
    folding: np.ndarray
    severity: np.ndarray

    def __len__(self) -> int:
        return len(self.age)

    @property
    def log_factors(self) -> np.ndarray:
        """[N, 2, 68] total log factor of thickness and area."""
        return self.age + self.sex + self.individual + self.diagnosis

    @property
    def log_gmv(self) -> np.ndarray:
        """[N, 68] log factor of grey-matter volume (thickness x area)."""
        return self.log_factors.sum(axis=1)


def age_term(model: AnatomyModel, age: np.ndarray) -> np.ndarray:
    """age [N] years -> [N, 2, 68] log factors from the lifespan curves."""
    thickness = model.thickness_curve(age)[:, None] * model.age_sensitivity[None, :]
    # Area ages with a stronger lobe contrast than thickness (calibrated to Table 6, see lifespan.AREA_CURVE).
    area_sensitivity = 1.0 + AREA_AGE_CONTRAST * (model.age_sensitivity - 1.0)
    area = model.area_curve(age)[:, None] * area_sensitivity[None, :]
    return np.stack([thickness, area], axis=1)


def sex_term(model: AnatomyModel, male: np.ndarray) -> np.ndarray:
    """male [N] bool -> [N, 2, 68] log factors."""
    shift = np.stack([model.male_thickness, np.full(model.n_regions, model.male_area)])      # [2, 68]
    return np.asarray(male, dtype=np.float64)[:, None, None] * shift[None]


def individual_term(model: AnatomyModel, n: int, rng: np.random.Generator) -> np.ndarray:
    """[N, 2, 68] correlated individual variation (shared factors, head size, regional noise)."""
    n_factors = len(model.loadings)
    scores = rng.standard_normal((n, 2, n_factors))
    factor_sd = np.stack([model.factor_sd_thickness, model.factor_sd_area])            # [2, K]
    shared = np.einsum("nmk,mk,kr->nmr", scores, factor_sd, model.loadings)
    head_size = model.head_size_sd * rng.standard_normal(n)
    regional = rng.standard_normal((n, 2, model.n_regions))
    regional *= np.array([model.region_sd_thickness, model.region_sd_area])[None, :, None]
    shared[:, 1, :] += head_size[:, None]
    return shared + regional


def diagnosis_term(model: AnatomyModel, diagnosis: np.ndarray, severity: np.ndarray,
                   effect_scale: float) -> np.ndarray:
    """diagnosis [N] codes, severity [N] -> [N, 2, 68] log factors."""
    sd = model.within_group_sd()
    maps = {code: diagnosis_d(code) * sd for code in np.unique(diagnosis)}
    effect = np.stack([maps[code] for code in diagnosis]) if len(diagnosis) else np.zeros((0, 2, model.n_regions))
    return effect_scale * severity[:, None, None] * effect


def sample_severity(diagnosis: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[N] severity: 0 for controls, Gamma(mean 1, SD 0.5) for everyone else."""
    draws = rng.gamma(SEVERITY_SHAPE, 1.0 / SEVERITY_SHAPE, size=len(diagnosis))
    return np.where(np.asarray(diagnosis) == "control", 0.0, draws)


def sample_folding(n: int, n_regions: int, rng: np.random.Generator) -> np.ndarray:
    """[N, 68] individual log mean-curvature deviation."""
    shared = FOLDING_SHARED_SD * rng.standard_normal((n, 1))
    return shared + FOLDING_REGION_SD * rng.standard_normal((n, n_regions))


def sample_latent_anatomy(model: AnatomyModel, age: np.ndarray, male: np.ndarray, diagnosis: np.ndarray,
                          rng: np.random.Generator, effect_scale: float = 1.0,
                          alignment: float | None = None) -> LatentAnatomy:
    """Draw the latent anatomy of N subjects.

    age [N] years, male [N] bool, diagnosis [N] codes (see effects.DIAGNOSIS_PATTERNS);
    effect_scale multiplies every diagnosis effect (1 = ENIGMA-sized effects); alignment: the world's knob
    (`world.align_individual`; None leaves the individual term as the model draws it).
    """
    diagnosis = np.asarray(diagnosis, dtype=object)
    n = len(diagnosis)
    severity = sample_severity(diagnosis, rng)
    individual = individual_term(model, n, rng)
    folding = sample_folding(n, model.n_regions, rng)
    if alignment is not None:              # drawn last, so worlds of one seed share every other draw
        individual = align_individual(individual, model, alignment, rng)
    return LatentAnatomy(
        age=age_term(model, np.asarray(age, dtype=np.float64)),
        sex=sex_term(model, np.asarray(male, dtype=bool)),
        individual=individual,
        diagnosis=diagnosis_term(model, diagnosis, severity, effect_scale),
        folding=folding,
        severity=severity,
    )
