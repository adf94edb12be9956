"""Objectives against a plain float64 loop over the formulas, plus invariants (hypothesis)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from anatcl_core.anatomy import AGE_KERNELS, gaussian_density_kernel, global_similarity, local_similarity, rbf_kernel
from anatcl_core.losses import (anatcl_loss, contrastive_loss_from_logits, nt_xent_loss,
                                weighted_contrastive_loss)


def reference_loss(z, weights, temperature, method):
    """Paper Eq. 1 (y-Aware) / ExpW written anchor by anchor in float64."""
    z, weights = np.asarray(z, dtype=np.float64), np.asarray(weights, dtype=np.float64)
    n, v, _ = z.shape
    anchors = [(i, p) for i in range(n) for p in range(v)]
    total = 0.0
    for i, p in anchors:
        others = [(j, q) for j, q in anchors if (j, q) != (i, p)]
        logit = {o: (z[i, p] @ z[o[0], o[1]] - 1.0) / temperature for o in others}
        if method == "yaware":
            denom = sum(math.exp(logit[o]) for o in others)
        else:
            denom = sum(math.exp(logit[o] * (1.0 - weights[i, o[0]])) for o in others)
        mass = sum(weights[i, j] for j, _ in others)
        total += -sum(weights[i, j] / mass * (logit[(j, q)] - math.log(denom)) for j, q in others)
    return total / len(anchors)


def reference_nt_xent(z, temperature):
    """SimCLR's NT-Xent: each other view of the same subject is a positive, every other view a negative."""
    z = np.asarray(z, dtype=np.float64)
    n, v, _ = z.shape
    flat = z.reshape(n * v, -1)
    sim = flat @ flat.T / temperature
    losses = []
    for a in range(n * v):
        denom = sum(math.exp(sim[a, b]) for b in range(n * v) if b != a)
        positives = [b for b in range(n * v) if b != a and b // v == a // v]
        losses.append(-np.mean([sim[a, b] - math.log(denom) for b in positives]))
    return float(np.mean(losses))


def random_inputs(n, v, d, seed, symmetric=True):
    gen = torch.Generator().manual_seed(seed)
    z = torch.nn.functional.normalize(torch.randn(n, v, d, generator=gen, dtype=torch.float64), dim=-1)
    w = torch.rand(n, n, generator=gen, dtype=torch.float64)
    if symmetric:
        w = (w + w.T) / 2
    w.fill_diagonal_(1.0)
    return z, w


@pytest.mark.parametrize("method", ["yaware", "expw"])
@pytest.mark.parametrize("n, v, d", [(2, 2, 4), (3, 2, 8), (5, 3, 16), (4, 1, 6), (6, 2, 3)])
@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
def test_weighted_loss_equals_loop(method, n, v, d, temperature):
    z, w = random_inputs(n, v, d, seed=n * 100 + v * 10 + d, symmetric=(d % 2 == 0))
    got = weighted_contrastive_loss(z, w, temperature, method)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(reference_loss(z, w, temperature, method), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("n, v", [(2, 2), (4, 2), (3, 3)])
def test_identity_weights_give_nt_xent(n, v):
    z, _ = random_inputs(n, v, 8, seed=7)
    expected = reference_nt_xent(z, 0.1)
    assert nt_xent_loss(z, 0.1).item() == pytest.approx(expected, rel=1e-5)
    assert weighted_contrastive_loss(z, torch.eye(n), 0.1).item() == pytest.approx(expected, rel=1e-5)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(2, 6), v=st.integers(1, 3), seed=st.integers(0, 10_000), method=st.sampled_from(["yaware", "expw"]))
def test_permuting_subjects_leaves_the_loss_unchanged(n, v, seed, method):
    z, w = random_inputs(n, v, 5, seed, symmetric=False)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    a = weighted_contrastive_loss(z, w, 0.2, method)
    b = weighted_contrastive_loss(z[perm], w[perm][:, perm], 0.2, method)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), shift=st.floats(-50, 50), scale=st.floats(0.01, 100))
def test_yaware_ignores_logit_shift_and_weight_scale(seed, shift, scale):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(7, 7, generator=gen, dtype=torch.float64) * 3
    w = torch.rand(7, 7, generator=gen, dtype=torch.float64).fill_diagonal_(0.0)
    base = contrastive_loss_from_logits(logits, w, "yaware")
    torch.testing.assert_close(contrastive_loss_from_logits(logits + shift, w, "yaware"), base)
    torch.testing.assert_close(contrastive_loss_from_logits(logits, w * scale, "yaware"), base)


def test_expw_differs_from_yaware_and_meets_it_as_weights_vanish():
    z, _ = random_inputs(4, 2, 8, seed=1)
    eye = torch.eye(4, dtype=torch.float64)
    # With identity weights ExpW multiplies the other-view logit by 1 - 1 = 0 in its denominator.
    assert weighted_contrastive_loss(z, eye, 0.1, "expw") != weighted_contrastive_loss(z, eye, 0.1, "yaware")
    tiny = torch.full((4, 4), 1e-9, dtype=torch.float64)   # (1 - w) -> 1: the denominators coincide
    torch.testing.assert_close(weighted_contrastive_loss(z, tiny, 0.1, "expw"),
                               weighted_contrastive_loss(z, tiny, 0.1, "yaware"), rtol=1e-6, atol=1e-6)


def test_gradients_are_finite_and_bf16_autocast_computes_in_float32():
    z, w = random_inputs(8, 2, 16, seed=5)
    z32 = z.float().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        projected = torch.nn.functional.normalize(z32 @ torch.eye(16), dim=-1)  # runs in bf16 under autocast
        loss = weighted_contrastive_loss(projected, w.float(), 0.1, "expw")
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(z32.grad).all() and z32.grad.abs().sum() > 0
    exact = weighted_contrastive_loss(projected.detach().float(), w.float(), 0.1, "expw")
    torch.testing.assert_close(loss.detach(), exact)


def test_extreme_temperature_stays_finite():
    z, w = random_inputs(6, 2, 4, seed=9)
    assert torch.isfinite(weighted_contrastive_loss(z, w, 1e-3, "yaware"))
    assert torch.isfinite(weighted_contrastive_loss(z, w, 1e-3, "expw"))


@pytest.mark.parametrize("descriptor, similarity", [("local", local_similarity), ("global", global_similarity)])
def test_anatcl_objective_is_the_weighted_sum_of_its_two_terms(descriptor, similarity):
    z, _ = random_inputs(6, 2, 8, seed=11)
    gen = torch.Generator().manual_seed(0)
    age = torch.rand(6, generator=gen) * 60 + 10
    desc = torch.rand(6, 3, 68, generator=gen)
    total, terms = anatcl_loss(z, age, desc, descriptor, sigma=2.0, lambda_age=0.7, lambda_anat=1.3)
    age_term = reference_loss(z, rbf_kernel(age.double(), age.double(), 2.0), 0.1, "yaware")
    anat_term = reference_loss(z, similarity(desc.double(), desc.double()), 0.1, "yaware")
    assert terms["age"].item() == pytest.approx(age_term, rel=1e-5)
    assert terms["anat"].item() == pytest.approx(anat_term, rel=1e-5)
    assert total.item() == pytest.approx(0.7 * age_term + 1.3 * anat_term, rel=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(z=torch.zeros(4, 8)), r"\[N, V, D\]"),
    (dict(weights=torch.ones(3, 3)), r"\[N, N\] = \[4, 4\]"),
    (dict(weighting="supcon"), "weighting must be one of"),
    (dict(temperature=0.0), "temperature"),
    (dict(weights=-torch.ones(4, 4)), ">= 0"),
    (dict(weights=2 * torch.ones(4, 4), weighting="expw"), r"weights in \[0, 1\]"),
    (dict(z=torch.nn.functional.normalize(torch.ones(4, 1, 8), dim=-1), weights=torch.eye(4)), "no positive"),
])
def test_bad_inputs_raise(kwargs, match):
    args = dict(z=torch.nn.functional.normalize(torch.randn(4, 2, 8), dim=-1), weights=torch.eye(4),
                temperature=0.1, weighting="yaware")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        weighted_contrastive_loss(**args)
    with pytest.raises(ValueError, match="descriptor must be"):
        anatcl_loss(args["z"] if args["z"].ndim == 3 else torch.zeros(4, 2, 8), torch.ones(4),
                    torch.rand(4, 3, 68), descriptor="regional")


def test_the_gaussian_age_kernel_is_the_normal_density_of_the_age_difference():
    age = torch.tensor([20.0, 21.5, 35.0, 80.0], dtype=torch.float64)
    for sigma in (1.0, 2.0):
        expected = np.array([[math.exp(-(a - b) ** 2 / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)
                              for b in age.tolist()] for a in age.tolist()])
        np.testing.assert_allclose(gaussian_density_kernel(age, age, sigma).numpy(), expected, rtol=1e-12)
    assert AGE_KERNELS["rbf"] is rbf_kernel and AGE_KERNELS["gaussian"] is gaussian_density_kernel


def test_expw_with_the_gaussian_kernel_equals_the_authors_formula():
    """The authors' KernelizedSupCon(method="expw", kernel=gaussian, sigma=1), written out in float64 numpy
    (logits minus each row's maximum, which is the self-similarity 1 / tau; their tau / base_tau factor left
    out, as in our loss)."""
    rng = np.random.default_rng(3)
    n, v, d, tau = 6, 2, 5, 0.1
    z = rng.standard_normal((n, v, d))
    z /= np.linalg.norm(z, axis=2, keepdims=True)
    age = rng.uniform(20, 30, n)
    features = np.concatenate([z[:, k] for k in range(v)])                    # view-major, as theirs
    kernel = np.exp(-(age[:, None] - age[None, :]) ** 2 / 2) / math.sqrt(2 * math.pi)
    mask = np.tile(kernel, (v, v))
    off_diagonal = 1.0 - np.eye(n * v)
    dots = features @ features.T / tau
    logits = dots - dots.max(axis=1, keepdims=True)
    uniformity = np.log((np.exp(logits * (1 - mask)) * off_diagonal).sum(axis=1, keepdims=True))
    positive = mask * off_diagonal
    expected = np.mean(-((positive * (logits - uniformity)).sum(axis=1) / positive.sum(axis=1)))
    weights = gaussian_density_kernel(torch.tensor(age), torch.tensor(age), 1.0)
    ours = weighted_contrastive_loss(torch.tensor(z), weights, tau, weighting="expw")
    assert float(ours) == pytest.approx(expected, rel=1e-5)
