"""Augmentations: shapes, bounds, determinism, exact centre crop, involutive flips, noise statistics."""
from __future__ import annotations

import pytest
import torch

from anatcl_core.data import augment


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture()
def batch() -> torch.Tensor:
    """[4, 1, 61, 73, 61] distinct values everywhere, so crops can be located exactly."""
    return torch.arange(4 * 61 * 73 * 61, dtype=torch.float32).reshape(4, 1, 61, 73, 61)


def test_crop_size_keeps_released_ratio():
    assert augment.training_crop((121, 145, 121)) == (121, 128, 121)
    assert augment.training_crop((61, 73, 61)) == (61, 64, 61)


def test_center_crop_is_exact(batch):
    out = augment.center_crop(batch, (61, 64, 61))
    assert out.shape == (4, 1, 61, 64, 61)
    assert torch.equal(out, batch[:, :, :, 4:68, :])


def test_center_crop_pads_when_larger(batch):
    out = augment.center_crop(batch, (63, 73, 61))
    assert out.shape == (4, 1, 63, 73, 61)
    assert torch.equal(out[:, :, 1:62], batch) and out[:, :, 0].abs().sum() == 0


def test_random_crop_within_bounds_and_deterministic(batch):
    size = (50, 64, 40)
    out = augment.random_crop(batch, size, seeded(3))
    assert out.shape == (4, 1, *size)
    for b in range(4):
        start = int(out[b, 0, 0, 0, 0] - batch[b, 0, 0, 0, 0])
        x, rest = divmod(start, 73 * 61)
        y, z = divmod(rest, 61)
        assert 0 <= x <= 61 - 50 and 0 <= y <= 73 - 64 and 0 <= z <= 61 - 40
        assert torch.equal(out[b], batch[b, :, x:x + 50, y:y + 64, z:z + 40])
    assert torch.equal(out, augment.random_crop(batch, size, seeded(3)))
    assert not torch.equal(out, augment.random_crop(batch, size, seeded(4)))


def test_flips_are_involutions(batch):
    for axis in range(3):
        assert torch.equal(batch.flip(2 + axis).flip(2 + axis), batch)
    always = augment.random_flip(batch, seeded(0), axes=(0, 1, 2), p=1.0)
    assert torch.equal(always, batch.flip(2).flip(3).flip(4))
    assert torch.equal(augment.random_flip(always, seeded(0), axes=(0, 1, 2), p=1.0), batch)
    assert torch.equal(augment.random_flip(batch, seeded(0), p=0.0), batch)


def test_cutout_zeroes_one_box_per_sample():
    x = torch.ones(8, 1, 20, 24, 20)
    out = augment.random_cutout(x, seeded(1), p=1.0, fraction=(0.2, 0.5))
    for b in range(8):
        zero = (out[b, 0] == 0).nonzero()
        lo, hi = zero.min(0).values, zero.max(0).values
        box_volume = int(torch.prod(hi - lo + 1))
        assert len(zero) == box_volume                          # the zeros form one box
        assert 0.2**3 * x[0, 0].numel() * 0.5 <= box_volume <= 0.5**3 * x[0, 0].numel()
    assert torch.equal(augment.random_cutout(x, seeded(1), p=0.0), x)


def test_noise_statistics():
    x = torch.zeros(2, 1, 40, 40, 40)
    out = augment.gaussian_noise(x, seeded(5), p=1.0, sigma=(0.2, 0.2))
    assert abs(float(out.mean())) < 0.01
    assert abs(float(out.std()) - 0.2) < 0.01
    assert torch.equal(augment.gaussian_noise(x, seeded(5), p=0.0), x)


def test_blur_preserves_mass_and_smooths():
    x = torch.zeros(2, 1, 21, 21, 21)
    x[:, :, 10, 10, 10] = 1.0
    out = augment.gaussian_blur(x, torch.tensor([1.0, 2.0]))
    assert out.shape == x.shape
    assert torch.allclose(out.sum(dim=(1, 2, 3, 4)), torch.ones(2), atol=1e-4)
    assert out[1].max() < out[0].max() < 1.0
    assert torch.allclose(out[0, 0, 10, 10, 9], out[0, 0, 10, 10, 11]) and torch.allclose(out[0, 0, 9, 10, 10], out[0, 0, 10, 9, 10])


def test_default_pipeline_shape_dtype_and_determinism(batch):
    pipeline = augment.default_pretraining_augmentation((61, 73, 61))
    x = batch / batch.max()
    a, b = pipeline(x, seeded(9)), pipeline(x, seeded(9))
    assert a.shape == (4, 1, 61, 64, 61) and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, pipeline(x, seeded(10)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_pipeline_runs_on_gpu(batch):
    x = (batch / batch.max()).cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    out = augment.default_pretraining_augmentation((61, 73, 61))(x, generator)
    assert out.is_cuda and out.shape == (4, 1, 61, 64, 61)
