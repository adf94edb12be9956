"""The knobs of a synthetic world, beyond its size and seed: where healthy anatomy varies, and how big diseases are.

alignment    how much of the healthy between-subject variation in regional anatomy lies along the disease
             effect patterns. The individual term of the latent anatomy (`latent.individual_term`, [N, 2, 68]
             log thickness and area) is a vector of 136 numbers per subject; the disease subspace S is the span
             of the four patterns' effect maps (`effects.pattern_d` x the within-group SD, so in the same log
             units). `alignment = a` in [0, 1] makes a fraction a of the individual term's expected variance lie
             inside S (isotropically) and 1 - a outside it (the model's own variation with its component in S
             removed, rescaled), keeping the total expected variance. a = 0 is the "orthogonal" world (healthy
             people never differ along a disease axis), WORLDS["aligned"] puts 80 % of it on the four
             disease axes. None (the default) leaves the model as it is: its natural fraction is
             `natural_alignment()`, a few percent.
effect_gain  multiplies every cohort's `CohortSpec.effect_scale` (1: the default book's effects).

Everything else is equal between worlds of one seed: the same people (ages, sexes, sites, severities), the
same random draws of the individual term before it is re-mixed, the same folding, noise and images' streams.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy.linalg import subspace_angles

from anatcl_core.anatomy import CHANNELS
from anatcl_core.data.synthetic.effects import PATTERNS, pattern_d
from anatcl_core.data.synthetic.model import AnatomyModel


@dataclass(frozen=True)
class World:
    """alignment: None (the model as is) or a fraction in [0, 1]; effect_gain: > 0, multiplies disease effects."""
    alignment: float | None = None
    effect_gain: float = 1.0

    def __post_init__(self) -> None:
        if self.alignment is not None and not 0.0 <= self.alignment <= 1.0:
            raise ValueError(f"world alignment must be in [0, 1] (or None for the model as is), got {self.alignment}")
        if not self.effect_gain > 0:
            raise ValueError(f"world effect_gain must be > 0, got {self.effect_gain}")

    def as_dict(self) -> dict:
        return asdict(self)


#: The named worlds of the anatomy experiment (benchmarks/bench_anatomy.py).
WORLDS: dict[str, float | None] = {"natural": None, "orthogonal": 0.0, "aligned": 0.8}


def disease_subspace(model: AnatomyModel) -> np.ndarray:
    """[136, 4] orthonormal basis of the span of the disease patterns' log-unit effect maps (thickness, area)."""
    sd = model.within_group_sd()
    maps = np.stack([(pattern_d(p) * sd).reshape(-1) for p in PATTERNS], axis=1)
    basis, _ = np.linalg.qr(maps)
    return basis


def individual_covariance(model: AnatomyModel) -> np.ndarray:
    """[136, 136] covariance of the model's individual term (thickness block, then area block)."""
    blocks = []
    for factor_sd, region_sd, head in ((model.factor_sd_thickness, model.region_sd_thickness, 0.0),
                                       (model.factor_sd_area, model.region_sd_area, model.head_size_sd)):
        loadings = factor_sd[:, None] * model.loadings                    # [K, 68]
        blocks.append(loadings.T @ loadings + region_sd**2 * np.eye(model.n_regions) + head**2)
    n = model.n_regions
    cov = np.zeros((2 * n, 2 * n))
    cov[:n, :n], cov[n:, n:] = blocks
    return cov


def natural_alignment(model: AnatomyModel) -> float:
    """Fraction of the model's own individual variance inside the disease subspace (the world with alignment None)."""
    basis, cov = disease_subspace(model), individual_covariance(model)
    return float(np.trace(basis.T @ cov @ basis) / np.trace(cov))


def align_individual(individual: np.ndarray, model: AnatomyModel, alignment: float,
                     rng: np.random.Generator) -> np.ndarray:
    """individual [N, 2, 68] log factors -> [N, 2, 68] with a fraction `alignment` of its expected variance in
    the disease subspace; draws [N, 4] standard normals from `rng`."""
    n = len(individual)
    basis, cov = disease_subspace(model), individual_covariance(model)
    total = np.trace(cov)
    outside_variance = total - np.trace(basis.T @ cov @ basis)
    x = individual.reshape(n, -1)
    outside = x - (x @ basis) @ basis.T
    inside = rng.standard_normal((n, basis.shape[1])) @ basis.T
    mixed = (outside * np.sqrt((1.0 - alignment) * total / outside_variance)
             + inside * np.sqrt(alignment * total / basis.shape[1]))
    return mixed.reshape(individual.shape)


def _residuals(values: np.ndarray, participants: pd.DataFrame) -> np.ndarray:
    """[N, F] minus its least-squares fit on age (cubic), sex and site -> [N, F]."""
    age = participants["age"].to_numpy(float)
    age = (age - age.mean()) / age.std()
    design = pd.get_dummies(participants["site"].astype(str), drop_first=True, dtype=float).to_numpy()
    design = np.column_stack([np.ones(len(age)), age, age**2, age**3,
                              (participants["sex"] == "M").to_numpy(float), design])
    coef, *_ = np.linalg.lstsq(design, values, rcond=None)
    return values - design @ coef


def measure_alignment(roi: np.ndarray, participants: pd.DataFrame, model: AnatomyModel,
                      controls_only: bool = True) -> dict[str, float]:
    """How much of a cohort's observed healthy variation lies along the disease patterns.

    roi: [N, 7, 68] Desikan table; participants: N rows with age, sex, site, diagnosis. On log thickness and
    log area (what the table reports, with site effects and measurement noise), after removing age, sex and site
    by least squares: `fraction_in_disease_subspace` (of the residual variance), and the principal angles in
    degrees between the residuals' top-4 principal subspace and the disease subspace (`angle_min`, `angle_max`).
    """
    rows = (participants["diagnosis"] == "control").to_numpy() if controls_only else np.ones(len(roi), bool)
    channels = [CHANNELS.index("average_thickness_mm"), CHANNELS.index("surface_area_mm^2")]
    values = np.log(np.asarray(roi, dtype=np.float64)[rows][:, channels, :]).reshape(int(rows.sum()), -1)
    residuals = _residuals(values, participants[rows])
    basis = disease_subspace(model)
    fraction = float(np.square(residuals @ basis).sum() / np.square(residuals).sum())
    _, _, vt = np.linalg.svd(residuals - residuals.mean(0), full_matrices=False)
    angles = np.degrees(subspace_angles(vt[: basis.shape[1]].T, basis))
    return {"n_controls": int(rows.sum()), "fraction_in_disease_subspace": fraction,
            "angle_min": float(angles.min()), "angle_max": float(angles.max())}

