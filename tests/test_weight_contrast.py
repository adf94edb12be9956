"""Effective positives, the RBF descriptor similarity, and the extension method's place in the registry."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from anatcl_core.anatomy import rbf_similarity
from anatcl_core.experiments import check_methods
from anatcl_core.methods import RELEASED_DESCRIPTORS, get_method, label_of, method_ids
from anatcl_core.pretrain_config import PretrainConfig
from anatcl_core.weight_contrast import contrast_table, effective_positives, enigma_descriptors, weightings


def test_effective_positives_at_the_two_extremes():
    n = 7
    assert effective_positives(torch.ones(n, n), 2).tolist() == pytest.approx([2 * n - 1] * n)
    assert effective_positives(torch.ones(n, n), 1).tolist() == pytest.approx([n - 1] * n)
    assert effective_positives(torch.eye(n), 2).tolist() == pytest.approx([1.0] * n)    # only the own view


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(3, 12), st.integers(1, 3))
def test_effective_positives_lie_between_one_and_every_candidate(seed, n, views):
    w = torch.rand(n, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 1e-3
    w = (w + w.T) / 2
    eff = effective_positives(w, views)
    assert (eff >= 1 - 1e-9).all() and (eff <= (n * views - 1 if views > 1 else n - 1) + 1e-9).all()


def test_rbf_similarity_equals_the_formula_in_float64():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 1, (4, 3, 68)), rng.uniform(0, 1, (5, 3, 68))
    ours = rbf_similarity(torch.tensor(a), torch.tensor(b), 0.2).numpy()
    reference = np.array([[np.exp(-np.mean((x - y) ** 2) / (2 * 0.2**2)) for y in b] for x in a])
    np.testing.assert_allclose(ours, reference, rtol=1e-10)
    assert torch.allclose(torch.diagonal(rbf_similarity(torch.tensor(a), torch.tensor(a))),
                          torch.ones(4, dtype=torch.float64))
    with pytest.raises(ValueError, match="sigma"):
        rbf_similarity(torch.tensor(a), torch.tensor(b), 0.0)


def test_on_real_enigma_subjects_the_papers_weights_are_flat_and_the_rbf_is_not():
    descriptors, age = enigma_descriptors()
    assert descriptors.shape == (20, 3, 68) and descriptors.min() >= 0 and descriptors.max() <= 1
    table = contrast_table(weightings(descriptors, age))
    paper = table.loc[table.index.str.startswith(("local", "global")), "eff_loss_fraction"]
    assert (paper > 0.95).all()
    assert table.loc[table.index.str.startswith("RBF"), "eff_loss_fraction"].item() < 0.5


def test_the_extension_is_trainable_by_name_but_never_a_paper_row_or_released():
    assert "anatcl-rbf" not in method_ids() and "anatcl-rbf" in method_ids(extensions=True)
    assert get_method("anatcl-rbf").released is None and "rbf" not in RELEASED_DESCRIPTORS
    assert "extension" in label_of("anatcl-rbf")
    check_methods(["anatcl-rbf", "yaware"])
    assert PretrainConfig(cohort="x", method="anatcl-rbf", out="y").objective == "anatcl"
