"""Lifespan curves of cortical thickness and surface area (log scale, relative to age 20).

Shape of the curves, from the large normative lifespan studies (e.g. Bethlehem et al. 2022,
Frangou et al. 2022): thickness is highest in childhood, falls fast through adolescence, slowly
through adulthood and faster again after ~50; surface area still grows until ~11-12 years and
then shrinks slowly, again faster in old age. Grey-matter volume, their product, therefore falls
by roughly 20-25 % between 20 and 80 years.

Each curve is the sum of three documented terms (log units, ages in years):
  development   D * (exp(-(age - 6) / tau) - exp(-(20 - 6) / tau))   fast change before ~20
  adult slope   -L * (age - 20)                                     steady decline
  late ageing   -Q * max(0, age - 50)^2                              acceleration after 50
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Youngest age the curves are meant for (years); younger ages are clamped to it.
MIN_AGE = 6.0


@dataclass(frozen=True)
class LifespanCurve:
    """Parameters of one curve (see the module docstring); all in log units per year or years."""
    development: float
    development_years: float
    adult_slope: float
    late_ageing: float

    def __call__(self, age: np.ndarray) -> np.ndarray:
        """age [N] years -> log change relative to age 20 [N]."""
        age = np.maximum(np.asarray(age, dtype=np.float64), MIN_AGE)
        development = self.development * (np.exp(-(age - MIN_AGE) / self.development_years)
                                          - np.exp(-(20.0 - MIN_AGE) / self.development_years))
        late = np.maximum(age - 50.0, 0.0) ** 2
        return development - self.adult_slope * (age - 20.0) - self.late_ageing * late


#: Thickness: about 3.1 mm at 6 years, 2.7 at 20, 2.3 at 80 for an average region (log -0.17 at 80).
THICKNESS_CURVE = LifespanCurve(development=0.12, development_years=6.0, adult_slope=0.0022, late_ageing=4e-5)
#: Area: about 9 % smaller at 6 than at its peak near 12, then -0.4 %/year, -25 % at 80 (relative to the peak).
#: The adult decline is steeper than longitudinal estimates (~0.2 %/year): it is calibrated so that a ridge
#: regression on the synthetic OpenBHB tables ranks the measures for age as the paper's Table 6 does on the real
#: one (area and GMV best, thickness and Gaussian curvature worst), see tests/test_synthetic.py.
AREA_CURVE = LifespanCurve(development=-0.15, development_years=4.0, adult_slope=0.004, late_ageing=5e-5)
