"""The synthetic world's knobs: alignment does what it says (measured), worlds of a seed differ only there."""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from anatcl_core.data.cohort import CohortError
from anatcl_core.data.synthetic import simulate_tables, write_synthetic_cohorts
from anatcl_core.data.synthetic.latent import individual_term
from anatcl_core.data.synthetic.model import default_anatomy_model
from anatcl_core.data.synthetic.world import (WORLDS, World, align_individual, disease_subspace,
                                              individual_covariance, measure_alignment, natural_alignment)

MODEL = default_anatomy_model()


def test_covariance_is_the_empirical_covariance_of_the_individual_term():
    x = individual_term(MODEL, 40000, np.random.default_rng(0)).reshape(40000, -1)
    empirical = np.cov(x, rowvar=False)
    cov = individual_covariance(MODEL)
    assert np.abs(empirical - cov).max() < 0.05 * np.abs(cov).max()
    assert np.trace(cov) == pytest.approx(np.square(MODEL.within_group_sd()).sum())


@settings(max_examples=12, deadline=None)
@given(st.floats(0.0, 1.0))
def test_alignment_puts_that_fraction_of_the_variance_in_the_disease_subspace(alignment):
    rng = np.random.default_rng(1)
    x = individual_term(MODEL, 20000, rng)
    mixed = align_individual(x, MODEL, alignment, rng).reshape(20000, -1)
    basis = disease_subspace(MODEL)
    total = np.square(mixed).sum() / len(mixed)
    assert total == pytest.approx(np.trace(individual_covariance(MODEL)), rel=0.03)          # total kept
    assert np.square(mixed @ basis).sum() / len(mixed) / total == pytest.approx(alignment, abs=0.02)


def test_measured_alignment_orders_the_worlds_and_the_angles_follow():
    measured = {}
    for name, alignment in WORLDS.items():
        tables = simulate_tables("openbhb", 600, 0, world=World(alignment))
        measured[name] = measure_alignment(tables.roi, tables.participants, MODEL)
    fractions = {k: v["fraction_in_disease_subspace"] for k, v in measured.items()}
    assert fractions["orthogonal"] < 0.05 < fractions["natural"] < fractions["aligned"]
    assert measured["orthogonal"]["angle_min"] > 80          # no principal direction near a disease pattern
    assert measured["aligned"]["angle_max"] < 20             # all four principal directions near them
    assert 0.3 < natural_alignment(MODEL) < 0.5


def test_worlds_of_one_seed_share_everything_but_the_individual_term():
    a, b = (simulate_tables("schizconnect", 150, 3, world=World(x)) for x in (0.0, 0.8))
    design = ["participant_id", "age", "sex", "site", "diagnosis"]          # phenotypes may follow anatomy
    assert a.participants[design].equals(b.participants[design])
    np.testing.assert_array_equal(a.latent.folding, b.latent.folding)
    np.testing.assert_array_equal(a.latent.severity, b.latent.severity)
    np.testing.assert_array_equal(a.latent.diagnosis, b.latent.diagnosis)
    assert not np.allclose(a.latent.individual, b.latent.individual)


def test_the_default_world_draws_exactly_what_it_drew_before_the_knob():
    plain = simulate_tables("adni", 80, 2)
    np.testing.assert_array_equal(plain.roi, simulate_tables("adni", 80, 2, world=World()).roi)
    individual = individual_term(MODEL, 80, np.random.default_rng(0))
    assert individual.shape == plain.latent.individual.shape


def test_effect_gain_scales_the_disease_term_only():
    a, b = (simulate_tables("adni", 80, 0, world=World(None, g)) for g in (1.0, 2.0))
    np.testing.assert_allclose(b.latent.diagnosis, 2.0 * a.latent.diagnosis)
    np.testing.assert_array_equal(a.latent.individual, b.latent.individual)


@pytest.mark.parametrize("kwargs", [{"alignment": 1.5}, {"alignment": -0.1}, {"effect_gain": 0.0}])
def test_world_refuses_values_out_of_range(kwargs):
    with pytest.raises(ValueError, match="world"):
        World(**kwargs)


def test_a_cohort_of_another_world_is_refused_in_one_line(tmp_path):
    write_synthetic_cohorts(tmp_path, 24, 3.0, 0, cohorts=("oasis3",), progress=False, world=World(0.0))
    meta = json.loads((tmp_path / "oasis3" / "meta.json").read_text())
    assert meta["provenance"]["world"] == {"alignment": 0.0, "effect_gain": 1.0}
    with pytest.raises(CohortError) as refused:
        write_synthetic_cohorts(tmp_path, 24, 3.0, 0, cohorts=("oasis3",), progress=False, world=World(0.8))
    assert "meta.json" in str(refused.value) and "world" in str(refused.value) and "\n" not in str(refused.value)
    assert write_synthetic_cohorts(tmp_path, 24, 3.0, 0, cohorts=("oasis3",), progress=False,
                                   world=World(0.0)) == {"oasis3": None}        # same world: kept
