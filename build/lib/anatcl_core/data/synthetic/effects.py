"""Regional diagnosis effects: Cohen's d maps for thickness and area, per diagnosis code.

Sources of the regional patterns:
  schizophrenia, bipolar   ENIGMA case-control d for thickness and surface area (real data)
  autism                   ENIGMA meta-analysis d for thickness; no area table exists, so area d = 0
  alzheimer                the well-known atrophy pattern of Alzheimer's disease: strongest in the
                           entorhinal cortex, then parahippocampal, temporal pole, inferior/middle
                           temporal and fusiform gyri, the posterior cingulate/isthmus, precuneus
                           and inferior parietal lobule; a mild global thinning elsewhere; area
                           follows at 30 % of the thickness effect
A diagnosis code mixes patterns with weights (e.g. schizoaffective = half schizophrenia, half
bipolar; the MCI stages are graded fractions of the Alzheimer pattern). Effects are converted to
log units by multiplying d by the within-group SD of the model (`AnatomyModel.within_group_sd`).
"""
from __future__ import annotations

import numpy as np

from anatcl_core.anatomy import REGIONS
from anatcl_core.data.enigma import cohens_d

#: Alzheimer's thickness d per region name (both hemispheres); regions not listed get GLOBAL_AD_D.
ALZHEIMER_THICKNESS_D: dict[str, float] = {
    "entorhinal": -1.2, "parahippocampal": -0.9, "temporalpole": -0.8, "inferiortemporal": -0.8,
    "middletemporal": -0.7, "fusiform": -0.7, "isthmuscingulate": -0.6, "bankssts": -0.5,
    "precuneus": -0.5, "inferiorparietal": -0.5, "posteriorcingulate": -0.4, "supramarginal": -0.3,
    "superiortemporal": -0.3,
}
GLOBAL_AD_D = -0.1
AD_AREA_FRACTION = 0.3

PATTERNS: tuple[str, ...] = ("schizophrenia", "bipolar", "autism", "alzheimer")

#: diagnosis code -> ((pattern, weight), ...); `control` has no effect.
DIAGNOSIS_PATTERNS: dict[str, tuple[tuple[str, float], ...]] = {
    "control": (),
    "scz_broad": (("schizophrenia", 1.0),),
    "scz_strict": (("schizophrenia", 1.25),),   # strict criteria: more severe, chronic cases
    "schizoaffective": (("schizophrenia", 0.5), ("bipolar", 0.5)),
    "bipolar": (("bipolar", 1.0),),
    "autism": (("autism", 1.0),),
    "asperger": (("autism", 0.8),),
    "pdd_nos": (("autism", 0.9),),
    "smci": (("alzheimer", 0.3),),   # stable MCI: mild, prodromal atrophy
    "pmci": (("alzheimer", 0.65),),  # progressive MCI: most of the way to AD
    "ad": (("alzheimer", 1.0),),
}


def alzheimer_d() -> np.ndarray:
    """The Alzheimer's pattern -> [2, 68] Cohen's d (thickness, area)."""
    thickness = np.array([ALZHEIMER_THICKNESS_D.get(r.split("-", 1)[1], GLOBAL_AD_D) for r in REGIONS])
    return np.stack([thickness, AD_AREA_FRACTION * thickness])


def pattern_d(pattern: str) -> np.ndarray:
    """Cohen's d map of one pattern -> [2, 68] (thickness, area)."""
    if pattern == "alzheimer":
        return alzheimer_d()
    if pattern == "autism":
        return np.stack([cohens_d("autism", "thickness"), np.zeros(len(REGIONS))])
    if pattern in ("schizophrenia", "bipolar"):
        return np.stack([cohens_d(pattern, "thickness"), cohens_d(pattern, "area")])
    raise KeyError(f"unknown pattern {pattern!r}; known: {list(PATTERNS)}")


def diagnosis_d(code: str) -> np.ndarray:
    """Cohen's d map of a diagnosis code (weighted sum of its patterns) -> [2, 68]."""
    if code not in DIAGNOSIS_PATTERNS:
        raise KeyError(f"unknown diagnosis {code!r}; known: {sorted(DIAGNOSIS_PATTERNS)}")
    d = np.zeros((2, len(REGIONS)))
    for pattern, weight in DIAGNOSIS_PATTERNS[code]:
        d += weight * pattern_d(pattern)
    return d


def diagnosis_sources() -> dict[str, str]:
    """Where each pattern comes from (for provenance records)."""
    return {
        "schizophrenia": "ENIGMA scz_case-controls_CortThick.csv / _CortSurf.csv (d_icv)",
        "bipolar": "ENIGMA bd_case-controls_CortThick_adult.csv / bd_case-controls_CortSurf_adult.csv (d_icv)",
        "autism": "ENIGMA asd_meta-analysis_case-controls_CortThick.csv (d_icv); area d = 0",
        "alzheimer": "medial-temporal/posterior pattern (anatcl_core.data.synthetic.effects.ALZHEIMER_THICKNESS_D)",
    }
