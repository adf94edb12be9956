"""The five synthetic cohorts: diagnosis classes, their proportions, ages, sexes and sites.

Proportions follow the paper's cohorts (section 3.1): OpenBHB healthy only; ADNI 633 controls,
712 MCI (split here into stable and progressive) and 409 AD; OASIS-3 685 subjects of whom 88 AD;
SchizConnect 180 / 102 / 74 / 11 / 9; ABIDE I 556 / 339 / 93 / 7. Age and sex distributions are
those typical of each study (e.g. ADNI elderly, ABIDE mostly children and adolescents, mostly male).
Every class gets at least `min_per_class` subjects whatever N, so that each task can run.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

#: (weight, mean, sd, low, high) components of an age mixture, in years.
AgeMixture = tuple[tuple[float, float, float, float, float], ...]


@dataclass(frozen=True)
class ClassSpec:
    """One diagnosis class: code (COLUMNS.md), paper count, age mixture, fraction of males."""
    code: str
    paper_count: int
    age: AgeMixture
    male_fraction: float


@dataclass(frozen=True)
class CohortSpec:
    """A synthetic cohort.

    classes: its diagnosis classes; n_sites: scanner sites; external_sites: how many of them
    (the last ones) are held out as OpenBHB's external test set (0: no `split` column);
    effect_scale: multiplies the Cohen's d maps of its diagnoses.
    """
    name: str
    classes: tuple[ClassSpec, ...]
    n_sites: int
    effect_scale: float = 1.0
    external_sites: int = 0
    min_per_class: int = 6

    @property
    def paper_n(self) -> int:
        return sum(c.paper_count for c in self.classes)

    @property
    def site_names(self) -> tuple[str, ...]:
        return tuple(f"{self.name}-site{s:02d}" for s in range(self.n_sites))


def _adult(mean: float, sd: float, low: float, high: float) -> AgeMixture:
    return ((1.0, mean, sd, low, high),)


COHORTS: dict[str, CohortSpec] = {spec.name: spec for spec in (
    CohortSpec("openbhb", (ClassSpec("control", 3984, ((0.2, 12, 3, 6, 18), (0.5, 24, 4, 18, 35),
                                                       (0.3, 55, 17, 35, 86)), 0.48),),
               n_sites=16, external_sites=3),
    CohortSpec("adni", (ClassSpec("control", 633, _adult(73, 6, 55, 92), 0.45),
                        ClassSpec("smci", 420, _adult(72, 7.5, 55, 92), 0.6),
                        ClassSpec("pmci", 292, _adult(74, 7, 55, 92), 0.6),
                        ClassSpec("ad", 409, _adult(75, 8, 55, 92), 0.55)),
               n_sites=12, effect_scale=1.0),
    CohortSpec("oasis3", (ClassSpec("control", 597, _adult(68, 9, 42, 95), 0.42),
                          ClassSpec("ad", 88, _adult(75, 8, 50, 95), 0.5)),
               n_sites=3, effect_scale=1.0),
    CohortSpec("schizconnect", (ClassSpec("control", 180, _adult(36, 12, 18, 65), 0.6),
                                ClassSpec("scz_broad", 102, _adult(37, 12, 18, 65), 0.75),
                                ClassSpec("scz_strict", 74, _adult(38, 11, 18, 65), 0.78),
                                ClassSpec("schizoaffective", 11, _adult(38, 11, 18, 65), 0.6),
                                ClassSpec("bipolar", 9, _adult(35, 12, 18, 65), 0.5)),
               n_sites=4, effect_scale=1.5),
    CohortSpec("abide1", (ClassSpec("control", 556, ((0.7, 13, 3, 6.5, 20), (0.3, 26, 8, 18, 60)), 0.82),
                          ClassSpec("autism", 339, ((0.7, 13, 3, 6.5, 20), (0.3, 25, 8, 18, 60)), 0.88),
                          ClassSpec("asperger", 93, ((0.7, 13, 3, 6.5, 20), (0.3, 25, 8, 18, 60)), 0.9),
                          ClassSpec("pdd_nos", 7, ((0.7, 12, 3, 6.5, 20), (0.3, 24, 8, 18, 60)), 0.85)),
               n_sites=17, effect_scale=2.0),
)}

INTERNAL_TEST_FRACTION = 0.1
EXTERNAL_TEST_FRACTION = 0.1
SITE_DIRICHLET_ALPHA = 3.0    # unequal site sizes, none tiny


def class_counts(spec: CohortSpec, n_subjects: int) -> dict[str, int]:
    """Subjects per class: paper proportions (largest-remainder rounding), each class at least
    min(min_per_class, n_subjects // n_classes), the extra taken from the largest class."""
    weights = np.array([c.paper_count for c in spec.classes], dtype=np.float64)
    exact = weights / weights.sum() * n_subjects
    counts = np.floor(exact).astype(int)
    counts[np.argsort(-(exact - counts), kind="stable")[: n_subjects - counts.sum()]] += 1
    floor = min(spec.min_per_class, n_subjects // len(counts))
    while counts.min() < floor:
        counts[np.argmin(counts)] += 1
        counts[np.argmax(counts)] -= 1
    return {c.code: int(k) for c, k in zip(spec.classes, counts)}


def sample_ages(mixture: AgeMixture, n: int, rng: np.random.Generator) -> np.ndarray:
    """n ages (years) from a mixture of truncated normals -> [n] float64, rounded to 0.01 years."""
    weights = np.array([m[0] for m in mixture])
    component = rng.choice(len(mixture), size=n, p=weights / weights.sum())
    ages = np.empty(n)
    for k, (_, mean, sd, low, high) in enumerate(mixture):
        chosen = component == k
        a, b = (low - mean) / sd, (high - mean) / sd
        ages[chosen] = stats.truncnorm.rvs(a, b, loc=mean, scale=sd, size=int(chosen.sum()), random_state=rng)
    return np.round(ages, 2)


def assign_sites(spec: CohortSpec, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Site index of each subject [n], and the OpenBHB split [n] (None without held-out sites).

    With held-out sites, EXTERNAL_TEST_FRACTION of the subjects come from the last
    `external_sites` sites (external_test); of the others, INTERNAL_TEST_FRACTION are internal_test.
    """
    proportions = rng.dirichlet(np.full(spec.n_sites, SITE_DIRICHLET_ALPHA))
    if spec.external_sites == 0:
        return rng.choice(spec.n_sites, size=n, p=proportions), None
    n_internal_sites = spec.n_sites - spec.external_sites
    n_external = int(round(EXTERNAL_TEST_FRACTION * n))
    internal, external = proportions[:n_internal_sites], proportions[n_internal_sites:]
    site = np.concatenate([rng.choice(n_internal_sites, size=n - n_external, p=internal / internal.sum()),
                           n_internal_sites + rng.choice(spec.external_sites, size=n_external,
                                                         p=external / external.sum())])
    split = np.array(["train"] * (n - n_external) + ["external_test"] * n_external, dtype=object)
    internal_test = rng.choice(n - n_external, size=int(round(INTERNAL_TEST_FRACTION * (n - n_external))),
                               replace=False)
    split[internal_test] = "internal_test"
    order = rng.permutation(n)
    return site[order], split[order]


def sample_participants(spec: CohortSpec, n_subjects: int, rng: np.random.Generator) -> pd.DataFrame:
    """The participants table of a synthetic cohort (without phenotype columns), N rows.

    Columns: participant_id, age (years), sex (M/F), site, diagnosis, and split for OpenBHB.
    """
    counts = class_counts(spec, n_subjects)
    parts = []
    for cls in spec.classes:
        k = counts[cls.code]
        parts.append(pd.DataFrame({"age": sample_ages(cls.age, k, rng),
                                   "sex": np.where(rng.random(k) < cls.male_fraction, "M", "F"),
                                   "diagnosis": cls.code}))
    table = pd.concat(parts, ignore_index=True).iloc[rng.permutation(n_subjects)].reset_index(drop=True)
    site, split = assign_sites(spec, n_subjects, rng)
    table.insert(0, "participant_id", [f"sub-{spec.name}{i:05d}" for i in range(n_subjects)])
    table.insert(3, "site", np.asarray(spec.site_names, dtype=object)[site])
    if split is not None:
        table["split"] = split
    return table[["participant_id", "age", "sex", "site", "diagnosis"]
                 + (["split"] if split is not None else [])]


def site_index(spec: CohortSpec, sites: pd.Series) -> np.ndarray:
    """Site labels -> [N] int index into spec.site_names."""
    lookup = {name: s for s, name in enumerate(spec.site_names)}
    return sites.map(lookup).to_numpy(dtype=np.int64)
