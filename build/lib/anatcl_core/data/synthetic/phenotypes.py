"""Clinical phenotype columns of SchizConnect and ABIDE I: some carried by anatomy, some not.

Each score is a latent liability (standard normal) cut into the scale's ordinal levels, or a
continuous IQ score. Anatomy-driven liabilities mix a standardised anatomical index with noise
(weight `beta`); anatomy-free ones are pure noise, independent of anatomy *and* diagnosis, so
no image or table model can beat chance on them (the paper finds such scores at ~50 %).
The anatomical indices use the subject's individual log GMV deviation (not age, sex or disease),
which both the images and the Desikan tables carry:

  motor index       mean over precentral, postcentral, paracentral, caudal middle frontal and
                    superior frontal (both hemispheres); low = thinner/smaller motor cortex
  asymmetry index   left minus right mean over pars opercularis/triangularis, precentral, superior
                    temporal, transverse temporal and supramarginal (language/hand areas)
  total index       mean over all 68 regions
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from anatcl_core.anatomy import REGIONS
from anatcl_core.data.synthetic.latent import LatentAnatomy

MOTOR_REGIONS = ("precentral", "postcentral", "paracentral", "caudalmiddlefrontal", "superiorfrontal")
LATERALISED_REGIONS = ("parsopercularis", "parstriangularis", "precentral", "superiortemporal",
                       "transversetemporal", "supramarginal")

#: column -> how it is generated (also stored in meta.json provenance).
PHENOTYPE_ORIGIN: dict[str, str] = {
    "aims_overall": "anatomy: low motor index (beta 0.6) + patient vs control shift",
    "aims_upper": "anatomy: 0.8 x aims_overall liability + noise",
    "aims_lower": "anatomy-free: independent noise (no anatomy, no diagnosis)",
    "depression": "anatomy-free: independent noise (no anatomy, no diagnosis)",
    "gait": "anatomy-free: independent noise (no anatomy, no diagnosis)",
    "handedness": "anatomy: reduced leftward asymmetry index (beta 0.6) raises non-right-handedness",
    "fiq": "anatomy (weak): total index (beta 0.4) + diagnosis offset; fiq ~ (viq + piq) / 2",
    "viq": "anatomy (weak): shares fiq's general factor",
    "piq": "anatomy (weak): shares fiq's general factor",
}

AIMS_CUTS = (0.0, 0.5, 1.1, 1.8)            # liability -> 0 none, 1 minimal, 2 mild, 3 moderate, 4 severe
DEPRESSION_CUTS = (0.3, 1.0, 1.8)           # -> 0 absent, 1 mild, 2 moderate, 3 severe
GAIT_CUTS = (0.3, 1.1, 1.8, 2.5)            # -> 0 normal ... 4
CONTROL_AIMS_SHIFT = -1.0
NON_RIGHT_HANDED = 0.15
LEFT_AMONG_NON_RIGHT = 0.75
CONTROLS_ASSESSED = 0.15                    # fraction of SchizConnect controls with clinical ratings
IQ_OFFSETS = {"control": 8.0, "autism": -4.0, "asperger": 4.0, "pdd_nos": -2.0}


def region_mask(names: tuple[str, ...], hemisphere: str | None = None) -> np.ndarray:
    """[68] bool: regions whose name is in `names` (and in 'lh' / 'rh' when given)."""
    return np.array([r.split("-", 1)[1] in names and (hemisphere is None or r.startswith(hemisphere))
                     for r in REGIONS])


def standardise(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit SD across subjects (a constant gives zeros)."""
    sd = x.std()
    return (x - x.mean()) / (sd if sd > 0 else 1.0)


def anatomical_indices(latent: LatentAnatomy) -> dict[str, np.ndarray]:
    """Standardised motor, asymmetry and total indices -> dict of [N] arrays."""
    individual_gmv = latent.individual.sum(axis=1)                                     # [N, 68]
    left = individual_gmv[:, region_mask(LATERALISED_REGIONS, "lh")].mean(axis=1)
    right = individual_gmv[:, region_mask(LATERALISED_REGIONS, "rh")].mean(axis=1)
    return {"motor": standardise(individual_gmv[:, region_mask(MOTOR_REGIONS)].mean(axis=1)),
            "asymmetry": standardise(left - right),
            "total": standardise(individual_gmv.mean(axis=1))}


def liability(index: np.ndarray, beta: float, rng: np.random.Generator) -> np.ndarray:
    """beta * index + sqrt(1 - beta^2) * noise -> [N] with unit variance."""
    return beta * index + np.sqrt(1.0 - beta**2) * rng.standard_normal(len(index))


def ordinal(values: np.ndarray, cuts: tuple[float, ...]) -> np.ndarray:
    """Liability -> ordinal level 0..len(cuts) as float (NaN-able)."""
    return np.digitize(values, cuts).astype(np.float64)


def handedness(index: np.ndarray, shift: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """'right' / 'left' / 'ambidextrous' [N]: less leftward asymmetry -> more often not right-handed."""
    value = liability(-index, 0.6, rng) + shift
    non_right = value > stats.norm.ppf(1.0 - NON_RIGHT_HANDED)
    left = rng.random(len(index)) < LEFT_AMONG_NON_RIGHT
    return np.where(non_right, np.where(left, "left", "ambidextrous"), "right").astype(object)


def missing(values: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Copy of values with a random `fraction` set to NaN (not assessed)."""
    out = np.asarray(values, dtype=object if values.dtype == object else np.float64).copy()
    out[rng.random(len(out)) < fraction] = np.nan
    return out


def schizconnect_phenotypes(latent: LatentAnatomy, diagnosis: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """aims_overall/upper/lower, depression, handedness, gait -> DataFrame [N rows].

    Ratings exist for every patient and for CONTROLS_ASSESSED of the controls (NaN otherwise).
    """
    index = anatomical_indices(latent)
    is_control = np.asarray(diagnosis) == "control"
    aims = liability(-index["motor"], 0.6, rng) + np.where(is_control, CONTROL_AIMS_SHIFT, 0.0)
    upper = 0.8 * aims + 0.6 * rng.standard_normal(len(aims))
    table = pd.DataFrame({
        "aims_overall": ordinal(aims, AIMS_CUTS),
        "aims_upper": ordinal(upper, AIMS_CUTS),
        "aims_lower": ordinal(rng.standard_normal(len(aims)), AIMS_CUTS),
        "depression": ordinal(rng.standard_normal(len(aims)), DEPRESSION_CUTS),
        "handedness": missing(handedness(index["asymmetry"], np.zeros(len(aims)), rng), 0.05, rng),
        "gait": ordinal(rng.standard_normal(len(aims)), GAIT_CUTS),
    })
    not_assessed = is_control & (rng.random(len(aims)) >= CONTROLS_ASSESSED)
    rated = ["aims_overall", "aims_upper", "aims_lower", "depression", "gait"]
    table.loc[not_assessed, rated] = np.nan
    return table


def abide_phenotypes(latent: LatentAnatomy, diagnosis: np.ndarray, rng: np.random.Generator) -> pd.DataFrame:
    """handedness, fiq, viq, piq (WASI standard scores) -> DataFrame [N rows], some NaN."""
    index = anatomical_indices(latent)
    diagnosis = np.asarray(diagnosis)
    is_autism = np.isin(diagnosis, ["autism", "asperger", "pdd_nos"])
    general = liability(index["total"], 0.4, rng)
    offset = np.array([IQ_OFFSETS.get(code, 0.0) for code in diagnosis])
    viq = 100 + offset + 15 * (0.85 * general + 0.53 * rng.standard_normal(len(general)))
    piq = 100 + offset + 15 * (0.85 * general + 0.53 * rng.standard_normal(len(general)))
    fiq = (viq + piq) / 2 + 3 * rng.standard_normal(len(general))
    scores = {name: missing(np.clip(np.round(v), 40, 160), fraction, rng)
              for name, v, fraction in (("fiq", fiq, 0.04), ("viq", viq, 0.1), ("piq", piq, 0.1))}
    hand = missing(handedness(index["asymmetry"], np.where(is_autism, 0.25, 0.0), rng), 0.1, rng)
    return pd.DataFrame({"handedness": hand, **scores})


#: cohort name -> phenotype generator
PHENOTYPES = {"schizconnect": schizconnect_phenotypes, "abide1": abide_phenotypes}
