"""Batched augmentations for gray-matter volumes, on torch tensors (CPU or GPU).

Every function takes x: [B, 1, X, Y, Z] and a `torch.Generator` on x's device, draws an independent
transformation per volume, and returns a new tensor; the same generator state gives the same output.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _uniform(shape, generator: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=generator, device=device)


def center_crop(x: torch.Tensor, size: tuple[int, int, int]) -> torch.Tensor:
    """Deterministic centre crop (or zero pad where `size` exceeds the grid). x: [B, C, X, Y, Z] -> [B, C, *size]."""
    out = x
    for axis, target in enumerate(size, start=2):
        extent = out.shape[axis]
        if extent > target:
            start = (extent - target) // 2
            out = out.narrow(axis, start, target)
        elif extent < target:
            before = (target - extent) // 2
            out = F.pad(out, _pad_spec(out.ndim, axis, before, target - extent - before))
    return out


def _pad_spec(ndim: int, axis: int, before: int, after: int) -> list[int]:
    """F.pad takes (last axis first) pairs; build the pair list that pads only `axis`."""
    spec = [0, 0] * (ndim - 2)
    position = (ndim - 1 - axis) * 2
    spec[position], spec[position + 1] = before, after
    return spec


def random_crop(x: torch.Tensor, size: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """A random crop of `size` per volume, zero-padding axes shorter than `size`. [B, 1, X, Y, Z] -> [B, 1, *size]."""
    padded = x
    for axis, target in enumerate(size, start=2):
        if padded.shape[axis] < target:
            missing = target - padded.shape[axis]
            padded = F.pad(padded, _pad_spec(padded.ndim, axis, missing // 2, missing - missing // 2))
    slack = torch.tensor([padded.shape[a + 2] - s for a, s in enumerate(size)], device=x.device)
    starts = (_uniform((x.shape[0], 3), generator, x.device) * (slack + 1)).long().clamp_max(slack)
    out = torch.empty((x.shape[0], x.shape[1], *size), dtype=x.dtype, device=x.device)
    for b, (i, j, k) in enumerate(starts.tolist()):
        out[b] = padded[b, :, i:i + size[0], j:j + size[1], k:k + size[2]]
    return out


def random_flip(x: torch.Tensor, generator: torch.Generator, p: float = 0.5, axes: tuple[int, ...] = (0,)
                ) -> torch.Tensor:
    """Flip each volume along each of `axes` (0 = left-right) with probability p."""
    out = x.clone()
    for axis in axes:
        flip = _uniform((x.shape[0],), generator, x.device) < p
        if flip.any():
            out[flip] = out[flip].flip(axis + 2)
    return out


def cutout(x: torch.Tensor, generator: torch.Generator, fraction: float = 0.25, p: float = 0.5) -> torch.Tensor:
    """Zero a random box whose sides are `fraction` of the grid, in each volume with probability p."""
    out = x.clone()
    spatial = torch.tensor(x.shape[2:], device=x.device)
    sides = (spatial.float() * fraction).long().clamp_min(1)
    starts = (_uniform((x.shape[0], 3), generator, x.device) * (spatial - sides + 1)).long()
    apply = _uniform((x.shape[0],), generator, x.device) < p
    for b in torch.nonzero(apply).flatten().tolist():
        i, j, k = starts[b].tolist()
        out[b, :, i:i + sides[0], j:j + sides[1], k:k + sides[2]] = 0
    return out


def gaussian_noise(x: torch.Tensor, generator: torch.Generator, std: float = 0.1, p: float = 0.5) -> torch.Tensor:
    """Add N(0, std^2) noise (std in units of the map, modulated GM is ~[0, 1]) to each volume with probability p."""
    apply = (_uniform((x.shape[0],), generator, x.device) < p).to(x.dtype).view(-1, 1, 1, 1, 1)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + apply * std * noise


def gaussian_blur(x: torch.Tensor, generator: torch.Generator, sigma: tuple[float, float] = (0.1, 1.0),
                  p: float = 0.5) -> torch.Tensor:
    """Separable Gaussian blur with sigma (voxels) drawn uniformly in `sigma`, per volume with probability p."""
    out = x.clone()
    apply = torch.nonzero(_uniform((x.shape[0],), generator, x.device) < p).flatten()
    sigmas = sigma[0] + (sigma[1] - sigma[0]) * _uniform((x.shape[0],), generator, x.device)
    for b in apply.tolist():
        s = float(sigmas[b])
        radius = max(1, int(3 * s + 0.5))
        t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-t ** 2 / (2 * s ** 2))
        kernel = kernel / kernel.sum()
        v = out[b:b + 1]
        for axis in range(3):
            shape = [1, 1, 1, 1, 1]
            shape[axis + 2] = kernel.numel()
            pad = [0, 0, 0, 0, 0, 0]
            pad[(2 - axis) * 2: (2 - axis) * 2 + 2] = [radius, radius]
            v = F.conv3d(F.pad(v, pad, mode="replicate"), kernel.view(shape))
        out[b:b + 1] = v
    return out


def pretraining_augment(x: torch.Tensor, size: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """The default view of contrastive pretraining: random crop to `size`, left-right flip, blur, noise, cutout.

    x: [B, 1, X, Y, Z] -> [B, 1, *size]; one call makes one view of each volume.
    """
    view = random_crop(x, size, generator)
    view = random_flip(view, generator)
    view = gaussian_blur(view, generator)
    view = gaussian_noise(view, generator)
    return cutout(view, generator)
