"""Shared fixtures: a tiny cohort on a coarse grid whose images and tables both carry age.

Before any kernel runs: cap the CPU kernels as `anatcl book` does (anatcl_core/precision.py), so the suite
computes the same numbers on AVX2 and AVX-512 machines (torch reads the variables at its first kernel, not at
import; tests/test_precision.py checks that they took effect).
"""
from anatcl_core.precision import apply_reproducible_cpu_env

apply_reproducible_cpu_env()

import numpy as np  # noqa: E402
import pandas as pd
import pytest

from anatcl_core.data.cohort import write_cohort  # noqa: E402

TINY_SHAPE = (16, 20, 16)          # 9 mm voxels over the MNI field of view: enough for five stride-2 stages
TINY_AFFINE = np.array([[-9.0, 0, 0, 72], [0, 9.0, 0, -90], [0, 0, 9.0, -72], [0, 0, 0, 1]])


def make_tiny_cohort(path, n=24, seed=0):
    rng = np.random.default_rng(seed)
    age = rng.uniform(10, 80, n)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, s) for s in TINY_SHAPE], indexing="ij"))
    brain = np.exp(-3 * (grid ** 2).sum(0))                              # a blob of "gray matter"
    atrophy = 1 - 0.006 * (age - 10)                                     # gray matter thins with age
    volumes = brain[None] * atrophy[:, None, None, None] + 0.05 * rng.standard_normal((n, *TINY_SHAPE))
    roi = rng.uniform(0.5, 1.5, (n, 7, 68)) * np.array([1500, 5000, 2.5, 0.6, 10, 2, 1.5])[None, :, None]
    roi[:, :3] *= atrophy[:, None, None]
    participants = pd.DataFrame({
        "participant_id": [f"sub-{i:03d}" for i in range(n)], "age": age,
        "sex": rng.choice(["M", "F"], n), "site": rng.choice(["s1", "s2"], n), "diagnosis": "control"})
    return write_cohort(path, participants, volumes.astype(np.float32), roi.astype(np.float32), TINY_AFFINE,
                        provenance={"source": "tests/conftest.py tiny cohort", "seed": seed})


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory):
    return make_tiny_cohort(tmp_path_factory.mktemp("cohorts") / "tiny")
