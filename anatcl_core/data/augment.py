"""Batched 3-D augmentations of grey-matter maps, on CPU or GPU.

Every function takes x: [B, C, X, Y, Z] (C = 1 for GM maps) and returns a tensor of the same
batch size, channels, dtype and device. Random ones take a `torch.Generator`: all random draws
are made on the generator's device and moved to x's device, so a seeded generator gives the
same augmentations on CPU and, with a CUDA generator, on GPU; each sample gets its own draw.
Spatial axes are numbered 0, 1, 2 (X, Y, Z), i.e. tensor dims 2, 3, 4.

The released AnatCL weights saw 121 x 128 x 121 crops of the 121 x 145 x 121 CAT12 grid;
`training_crop` keeps that ratio on any grid (61 x 64 x 61 at 3 mm): the crop the engine trains on and
embedding centre-crops to.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

CAT12_SHAPE = (121, 145, 121)
RELEASED_CROP = (121, 128, 121)


def _check_volume_batch(x: torch.Tensor, name: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{name}: expected [B, C, X, Y, Z], got {list(x.shape)}")


def _uniform(generator: torch.Generator, size: Sequence[int], device: torch.device) -> torch.Tensor:
    """U[0, 1) of `size` drawn on the generator's device, returned on `device` (float32)."""
    return torch.rand(tuple(size), generator=generator, device=generator.device).to(device)


def training_crop(shape: Sequence[int], reference: Sequence[int] = CAT12_SHAPE,
                  reference_crop: Sequence[int] = RELEASED_CROP) -> tuple[int, int, int]:
    """Crop size with the released crop's ratio: (121, 145, 121) -> (121, 128, 121); (61, 73, 61) -> (61, 64, 61)."""
    return tuple(min(int(s), round(s * c / r)) for s, c, r in zip(shape, reference_crop, reference))


def pad_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Zero-pad spatial axes symmetrically up to `size` (axes already at least that large are kept)."""
    _check_volume_batch(x, "pad_to")
    padding = []
    for axis in (2, 1, 0):        # F.pad lists the last dim first
        missing = max(int(size[axis]) - x.shape[2 + axis], 0)
        padding += [missing // 2, missing - missing // 2]
    return F.pad(x, padding) if any(padding) else x


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Deterministic central crop (zero padding first where x is smaller) -> ``[B, C, *size]``.

    Offsets are (dim - size) // 2, the evaluation crop matching `random_crop`'s training crops.
    """
    x = pad_to(x, size)
    starts = [(x.shape[2 + a] - int(size[a])) // 2 for a in range(3)]
    return x[:, :, starts[0]:starts[0] + size[0], starts[1]:starts[1] + size[1], starts[2]:starts[2] + size[2]]


def random_crop(x: torch.Tensor, size: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """Per-sample uniformly placed crop (zero padding first where x is smaller) -> ``[B, C, *size]``."""
    x = pad_to(x, size)
    slack = torch.tensor([x.shape[2 + a] - int(size[a]) for a in range(3)], dtype=torch.float32)
    starts = (_uniform(generator, (len(x), 3), torch.device("cpu")) * (slack + 1)).long()
    crops = [x[b, :, s[0]:s[0] + size[0], s[1]:s[1] + size[1], s[2]:s[2] + size[2]]
             for b, s in enumerate(starts.tolist())]
    return torch.stack(crops)


def random_cutout(x: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                  fraction: tuple[float, float] | Sequence[tuple[float, float]] = (0.1, 0.4),
                  value: float = 0.0) -> torch.Tensor:
    """With probability p per sample, set one random box to `value`.

    The box's side along each axis is a uniform fraction (in `fraction`, one (low, high) pair for every
    axis or one per axis) of that axis; equal ends give a fixed side. Its position is uniform in the volume.
    """
    _check_volume_batch(x, "random_cutout")
    batch, spatial = len(x), x.shape[2:]
    ranges = fraction if isinstance(fraction[0], (tuple, list)) else [fraction] * 3
    draws = _uniform(generator, (batch, 7), x.device)
    box = torch.ones((batch, *spatial), dtype=torch.bool, device=x.device)
    for axis, n in enumerate(spatial):
        low, high = ranges[axis]
        if low == high:         # a fixed side, rounded so that 32 / 121 of 121 voxels is exactly 32
            side = torch.full((batch,), float(round(low * n)), device=x.device)
        else:
            side = torch.floor((low + (high - low) * draws[:, axis]) * n)
        start = torch.floor(draws[:, 3 + axis] * (n - side + 1))
        coordinate = torch.arange(n, device=x.device)[None, :]
        inside = (coordinate >= start[:, None]) & (coordinate < (start + side)[:, None])          # [B, n]
        shape = [batch, 1, 1, 1]
        shape[1 + axis] = n
        box &= inside.view(shape)
    box &= (draws[:, 6] < p)[:, None, None, None]
    return x.masked_fill(box[:, None], value)


def gaussian_noise(x: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                   sigma: tuple[float, float] = (0.0, 0.1)) -> torch.Tensor:
    """With probability p per sample, add N(0, s^2) noise, s ~ U(sigma) drawn per sample (x's units)."""
    _check_volume_batch(x, "gaussian_noise")
    draws = _uniform(generator, (len(x), 2), x.device)
    scale = (sigma[0] + (sigma[1] - sigma[0]) * draws[:, 0]) * (draws[:, 1] < p)
    noise = torch.randn(tuple(x.shape), generator=generator, device=generator.device).to(x.device, x.dtype)
    return x + scale.to(x.dtype)[:, None, None, None, None] * noise


def gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """sigmas [K] (voxels) -> [K, 2 * radius + 1] normalised 1-D Gaussian kernels (sigma 0: identity)."""
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=sigmas.device)
    safe = sigmas.clamp_min(1e-6)[:, None]
    kernels = torch.exp(-0.5 * (offsets[None, :] / safe) ** 2)
    return kernels / kernels.sum(dim=1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with one sigma (voxels) per sample; sigmas [B] -> x blurred, zero borders.

    The batch is folded into channels so a single grouped conv3d per axis blurs every sample
    with its own kernel.
    """
    _check_volume_batch(x, "gaussian_blur")
    batch, channels = x.shape[:2]
    radius = max(1, math.ceil(3 * float(sigmas.max())))
    kernels = gaussian_kernels(sigmas.to(x.device, torch.float32), radius).to(x.dtype)
    kernels = kernels.repeat_interleave(channels, dim=0)                                  # [B*C, k]
    out = x.reshape(1, batch * channels, *x.shape[2:])
    for axis in range(3):
        shape = [batch * channels, 1, 1, 1, 1]
        shape[2 + axis] = 2 * radius + 1
        padding = [0, 0, 0]
        padding[axis] = radius
        out = F.conv3d(out, kernels.view(shape), padding=tuple(padding), groups=batch * channels)
    return out.reshape(x.shape)


def random_blur(x: torch.Tensor, generator: torch.Generator, p: float = 0.5,
                sigma: tuple[float, float] = (0.1, 1.0)) -> torch.Tensor:
    """With probability p per sample, Gaussian blur with sigma ~ U(sigma) voxels (else unchanged)."""
    draws = _uniform(generator, (len(x), 2), x.device)
    sigmas = sigma[0] + (sigma[1] - sigma[0]) * draws[:, 0]
    blurred = gaussian_blur(x, sigmas)
    return torch.where((draws[:, 1] < p)[:, None, None, None, None], blurred, x)


#: The authors' cutout: one 32-voxel (48 mm) cube on the 121 x 145 x 121 grid, p = 0.5; as fractions of
#: each axis, so the box keeps its size in millimetres on coarser grids.
AUTHORS_CUTOUT_FRACTION = tuple((32 / n, 32 / n) for n in CAT12_SHAPE)

#: Augmentation recipes by name. The first four are the `--tf` choices of the authors' earlier training
#: code (EIDOSLAB/contrastive-brain-age-prediction); the released AnatCL runs are named `tf_none`.
AUGMENTATIONS = {
    "none": "no augmentation: every view is the same centre crop (the released AnatCL runs)",
    "crop": "a random crop of each view (the authors' `crop`)",
    "cutout": "one 48 mm cube zeroed with p = 0.5, then the centre crop (the authors' `cutout`)",
    "all": "the cube cutout, then a random crop (the authors' `all`)",
    "strong": "random crop, Gaussian blur, Gaussian noise and a random-size cutout (ours, each p = 0.5)",
}


def _authors_cutout(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return random_cutout(x, generator, p=0.5, fraction=AUTHORS_CUTOUT_FRACTION)


def pretraining_augment(x: torch.Tensor, size: Sequence[int], generator: torch.Generator,
                        recipe: str = "strong") -> torch.Tensor:
    """One contrastive view of each volume under `recipe` (a key of AUGMENTATIONS):
    x `[B, C, X, Y, Z]` -> `[B, C, *size]`.

    Every recipe ends at `size` (the `training_crop` of the grid), deterministic ones by a centre crop, so
    views always have the shape the encoder embeds. No recipe flips left and right: the anatomical
    descriptors keep their hemispheres, and a flipped image would pair lh measures with rh tissue.
    "strong": blur before noise keeps the noise white; cutout last keeps its box exactly 0. Noise SD up
    to 0.1 and blur up to 1 voxel are small next to GM probabilities in [0, 1].
    """
    if recipe == "none":
        return center_crop(x, size)
    if recipe == "crop":
        return random_crop(x, size, generator)
    if recipe == "cutout":
        return center_crop(_authors_cutout(x, generator), size)
    if recipe == "all":
        return random_crop(_authors_cutout(x, generator), size, generator)
    if recipe == "strong":
        view = random_crop(x, size, generator)
        view = random_blur(view, generator)
        view = gaussian_noise(view, generator)
        return random_cutout(view, generator)
    raise ValueError(f"augment: expected one of {', '.join(AUGMENTATIONS)}, got {recipe!r}")


def pretraining_augmentation(grid_shape: Sequence[int], recipe: str = "strong") -> Transform:
    """`pretraining_augment` with the released crop ratio for volumes on `grid_shape`, as a Transform."""
    size = training_crop(grid_shape)
    return lambda x, generator: pretraining_augment(x, size, generator, recipe)
