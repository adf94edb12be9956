"""Augmentations: shapes, bounds, determinism, exact centre crop, noise statistics, the named recipes."""
from __future__ import annotations

import pytest
import torch

from anatcl_core.data import augment
from anatcl_core.data.batches import make_views


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


@pytest.mark.parametrize("recipe", list(augment.AUGMENTATIONS))
def test_every_recipe_gives_the_training_crop_deterministically(batch, recipe):
    pipeline = augment.pretraining_augmentation((61, 73, 61), recipe)
    x = batch / batch.max()
    a, b = pipeline(x, seeded(9)), pipeline(x, seeded(9))
    assert a.shape == (4, 1, 61, 64, 61) and a.dtype == x.dtype
    assert torch.equal(a, b)
    if recipe != "none":           # the random ones change with the seed (cutout: its box does)
        assert any(not torch.equal(a, pipeline(x, seeded(s))) for s in range(10, 14))


def test_none_gives_identical_views_equal_to_the_centre_crop(batch):
    views = make_views(batch, 2, (61, 64, 61), seeded(0), "none")
    assert torch.equal(views[:4], views[4:])
    assert torch.equal(views[:4], augment.center_crop(batch, (61, 64, 61)))


@pytest.mark.parametrize("recipe", list(augment.AUGMENTATIONS))
def test_no_recipe_swaps_the_hemispheres(recipe):
    """The descriptors keep lh and rh, so tissue on the left of the image must stay on the left."""
    x = torch.zeros(8, 1, 61, 73, 61)
    x[:, :, 8:22, 20:50, 20:40] = 1.0                  # a block in the left half (x < 30)
    for seed in range(5):
        view = augment.pretraining_augment(x, (61, 64, 61), seeded(seed), recipe)
        left, right = view[:, :, :30].sum(dim=(1, 2, 3, 4)), view[:, :, 31:].sum(dim=(1, 2, 3, 4))
        assert (left > 10 * right.clamp_min(1e-3)).all(), (recipe, seed)


def test_the_authors_cutout_is_a_32_voxel_cube_on_the_cat12_grid():
    x = torch.ones(6, 1, *augment.CAT12_SHAPE)
    out = augment._authors_cutout(x, seeded(1))
    zeroed = (out == 0).sum(dim=(1, 2, 3, 4))
    assert set(zeroed.tolist()) <= {0, 32 ** 3} and 0 < int((zeroed > 0).sum()) < 6    # p = 0.5 per volume


def test_an_unknown_recipe_is_refused(batch):
    with pytest.raises(ValueError, match="augment: expected one of none, crop, cutout, all, strong, got 'flip'"):
        augment.pretraining_augment(batch, (61, 64, 61), seeded(0), "flip")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_pipeline_runs_on_gpu(batch):
    x = (batch / batch.max()).cuda()
    generator = torch.Generator(device="cuda").manual_seed(0)
    out = augment.pretraining_augmentation((61, 73, 61), "strong")(x, generator)
    assert out.is_cuda and out.shape == (4, 1, 61, 64, 61)
