"""What one pretraining step sees: the training rows of a cohort, the batches of an epoch, the augmented views.

Every random draw is derived from (seed, epoch, step, rank), so a resumed run, or a run on more ranks,
replays exactly the batches and views an uninterrupted single-process run would have seen.
"""
from __future__ import annotations

import numpy as np
import torch

from anatcl_core.anatomy import RangeNormaliser, select_measures
from anatcl_core.data import augment
from anatcl_core.data.cohort import Cohort


class TrainingSet:
    """The training rows of a cohort: volumes [n, X, Y, Z] (memory-mapped or on the GPU), ages, descriptors."""

    def __init__(self, cohort: Cohort, rows: np.ndarray, normaliser: RangeNormaliser | None,
                 device: torch.device, gpu_resident: bool):
        self.cohort, self.rows = cohort, np.asarray(rows)
        self.age = torch.as_tensor(cohort.participants["age"].to_numpy()[self.rows], dtype=torch.float32)
        desc = select_measures(torch.as_tensor(cohort.roi[self.rows], dtype=torch.float32))
        self.descriptors = normaliser.transform(desc) if normaliser is not None else desc
        self.resident = None
        if gpu_resident:
            # fp16 halves the footprint; OpenBHB at 1.5 mm is about 27 GB this way
            self._sorted_rows = np.sort(self.rows)
            self.resident = torch.from_numpy(np.asarray(cohort.volumes[self._sorted_rows])).to(device, torch.float16)

    def __len__(self) -> int:
        return len(self.rows)

    def volumes(self, positions: np.ndarray) -> torch.Tensor:
        """positions into self.rows -> [b, 1, X, Y, Z] float32 (on the GPU when resident, else CPU)."""
        if self.resident is not None:
            index = torch.as_tensor(np.searchsorted(self._sorted_rows, self.rows[positions]), device=self.resident.device)
            return self.resident[index].float().unsqueeze(1)
        rows = self.rows[positions]
        order = np.argsort(rows)                      # sequential reads from the memmap, then restore order
        block = np.asarray(self.cohort.volumes[rows[order]], dtype=np.float32)
        return torch.from_numpy(block[np.argsort(order)]).unsqueeze(1)


class _BatchReader(torch.utils.data.Dataset):
    """Lets DataLoader workers read pre-planned batches from the memmap in parallel with training."""

    def __init__(self, data: TrainingSet, plan: list[np.ndarray]):
        self.data, self.plan = data, plan

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        positions = self.plan[step]
        return self.data.volumes(positions), torch.as_tensor(positions)


def epoch_plan(n: int, batch_size: int, seed: int, epoch: int, rank: int, world: int) -> list[np.ndarray]:
    """This rank's share of every global batch of the epoch: positions [batch_size // world] per step.

    The permutation depends only on (seed, epoch), so every rank agrees and a resumed run replays it.
    """
    if batch_size % world:
        raise ValueError(f"batch_size {batch_size} is not divisible by the {world} ranks")
    if n < batch_size:
        raise ValueError(f"{n} training subjects cannot fill one batch of {batch_size}")
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    local = batch_size // world
    return [perm[s * batch_size + rank * local: s * batch_size + (rank + 1) * local] for s in range(n // batch_size)]


def step_generator(seed: int, epoch: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """Augmentation stream of one step on one rank."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence([seed, epoch, step, rank]).generate_state(1)[0]))
    return gen


def make_views(x: torch.Tensor, n_views: int, crop: tuple[int, int, int], generator: torch.Generator,
               recipe: str = "strong") -> torch.Tensor:
    """x: [b, 1, X, Y, Z] -> ``[b * n_views, 1, *crop]``, view-major (all first views, then all second views...).

    `recipe` names the augmentation (`augment.AUGMENTATIONS`); under "none" every view is the same centre crop.
    """
    return torch.cat([augment.pretraining_augment(x, crop, generator, recipe) for _ in range(n_views)], dim=0)


def batch_loader(data: TrainingSet, plan: list[np.ndarray], first: int, num_workers: int):
    if data.resident is not None or num_workers == 0:
        return ((data.volumes(p), p) for p in plan[first:])
    reader = _BatchReader(data, plan[first:])
    return torch.utils.data.DataLoader(reader, batch_size=None, num_workers=num_workers, pin_memory=True,
                                       prefetch_factor=2)
