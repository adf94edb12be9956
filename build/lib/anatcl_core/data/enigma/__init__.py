"""Real ENIGMA tables shipped with the package (BSD-3, see LICENSE and README.md beside this file).

Two kinds of tables, both in the Desikan-Killiany order of `anatcl_core.anatomy.REGIONS`::

  effect sizes      case-control Cohen's d per cortical region ([68] float64), from the ENIGMA
                    consortium meta-/mega-analyses (schizophrenia, bipolar disorder, autism)
  example subjects  20 real subjects from one site (10 controls, 10 epilepsy patients) with their
                    regional cortical thickness (mm) and surface area (mm^2)

The synthetic cohorts take their regional disease patterns and their baseline regional thickness
and area from these tables; the book shows the example subjects next to synthetic ones.
`adjusted_cohens_d` measures the same kind of effect on a cohort of ours, to compare with these maps.
"""
from __future__ import annotations

from importlib import resources
from typing import NamedTuple

import numpy as np
import pandas as pd

from anatcl_core.anatomy import REGIONS

#: (disorder, measure) -> summary-statistics file; measure is "thickness" or "area".
EFFECT_SIZE_FILES: dict[tuple[str, str], str] = {
    ("schizophrenia", "thickness"): "scz_case-controls_CortThick.csv",
    ("schizophrenia", "area"): "scz_case-controls_CortSurf.csv",
    ("bipolar", "thickness"): "bd_case-controls_CortThick_adult.csv",
    ("bipolar", "area"): "bd_case-controls_CortSurf_adult.csv",
    ("autism", "thickness"): "asd_meta-analysis_case-controls_CortThick.csv",
}


def _enigma_name(region: str) -> str:
    """'lh-bankssts' -> 'L_bankssts' (the ENIGMA spelling of a REGIONS entry)."""
    hemisphere, name = region.split("-", 1)
    return f"{'L' if hemisphere == 'lh' else 'R'}_{name}"


ENIGMA_REGIONS: tuple[str, ...] = tuple(_enigma_name(r) for r in REGIONS)


def _read_csv(*parts: str) -> pd.DataFrame:
    with resources.files(__name__).joinpath(*parts).open("r", encoding="utf-8") as handle:
        return pd.read_csv(handle)


def effect_size_file(disorder: str, measure: str) -> str:
    """Name of the summary-statistics CSV for (disorder, measure); KeyError lists what exists."""
    try:
        return EFFECT_SIZE_FILES[(disorder, measure)]
    except KeyError:
        raise KeyError(f"no ENIGMA effect sizes for ({disorder!r}, {measure!r}); "
                       f"available: {sorted(EFFECT_SIZE_FILES)}") from None


def cohens_d(disorder: str, measure: str) -> np.ndarray:
    """Case-control Cohen's d (ICV-adjusted, `d_icv`) per region -> [68] in REGIONS order.

    Negative d means patients have thinner cortex / smaller area than controls.
    """
    table = _read_csv("summary_statistics", effect_size_file(disorder, measure))
    by_region = table.set_index("Structure")["d_icv"]
    missing = [r for r in ENIGMA_REGIONS if r not in by_region.index]
    if missing:
        raise ValueError(f"{effect_size_file(disorder, measure)}: regions {missing} missing")
    d = by_region.loc[list(ENIGMA_REGIONS)].to_numpy(dtype=np.float64)
    if not np.isfinite(d).all():
        raise ValueError(f"{effect_size_file(disorder, measure)}: non-finite d_icv values")
    return d


class ExampleSubjects(NamedTuple):
    """The ENIGMA Toolbox example data: 20 subjects of one site.

    ::

        covariates: SubjID, Dx (0 control, 1 patient), SDx, Age (years), Sex (1 M, 2 F), Handedness, AO,
                    DURILL, ICV (mm^3), one row per subject;
        thickness:  [20, 68] mean cortical thickness (mm), columns REGIONS, index SubjID;
        area:       [20, 68] surface area (mm^2), columns REGIONS, index SubjID.
    """
    covariates: pd.DataFrame
    thickness: pd.DataFrame
    area: pd.DataFrame


def _regional(table: pd.DataFrame, suffix: str) -> pd.DataFrame:
    """Keep the 68 `L_<region><suffix>` columns, renamed to REGIONS, indexed by SubjID."""
    columns = [f"{name}{suffix}" for name in ENIGMA_REGIONS]
    out = table.set_index("SubjID")[columns].astype(np.float64)
    out.columns = list(REGIONS)
    return out


def load_example_subjects() -> ExampleSubjects:
    """The 20 real subjects of the ENIGMA Toolbox (`xdata`), aligned on SubjID."""
    covariates = _read_csv("xdata", "cov.csv")
    thickness = _regional(_read_csv("xdata", "metr2_CortThick.csv"), "_thickavg")
    area = _regional(_read_csv("xdata", "metr3_CortSurf.csv"), "_surfavg")
    order = covariates["SubjID"]
    return ExampleSubjects(covariates.reset_index(drop=True), thickness.loc[order], area.loc[order])


def control_means() -> tuple[np.ndarray, np.ndarray]:
    """Mean regional (thickness mm, area mm^2) of the 10 example controls -> two [68] arrays."""
    subjects = load_example_subjects()
    controls = (subjects.covariates["Dx"] == 0).to_numpy()
    return (subjects.thickness.to_numpy()[controls].mean(axis=0),
            subjects.area.to_numpy()[controls].mean(axis=0))


def adjusted_cohens_d(participants: pd.DataFrame, measure: np.ndarray, cases: list[str]) -> np.ndarray:
    """Case-control effect per region, adjusted for age, age², sex and site -> [R] (Cohen's d units).

    participants: rows with columns age (years), sex ("M"/"F"), site, diagnosis; measure: [N, R] positive
    regional values (e.g. thickness in mm) in the same row order; cases: the diagnosis codes counted as
    cases (the others but "control" are left out). log(measure) ~ case + 1 + age + age² + sex + site is
    fitted by least squares on cases and controls; d = case coefficient / residual SD (dof = rows - rank).
    With no covariate variation this is the textbook (mean_case - mean_control) / pooled SD of log(measure).
    """
    keep = participants["diagnosis"].isin(list(cases) + ["control"]).to_numpy()
    part = participants[keep]
    age = (part["age"].to_numpy(float) - part["age"].mean()) / 10
    design = np.column_stack([part["diagnosis"].isin(cases).to_numpy(float), np.ones(len(part)), age, age**2,
                              (part["sex"] == "M").to_numpy(float),
                              pd.get_dummies(part["site"], drop_first=True).to_numpy(float)])
    y = np.log(np.asarray(measure, dtype=np.float64)[keep])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ beta
    dof = max(len(part) - np.linalg.matrix_rank(design), 1)
    return beta[0] / np.sqrt((residual**2).sum(axis=0) / dof)
