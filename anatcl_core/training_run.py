"""A pretraining run's folder and how a run stops: train.log, metrics.csv, SIGTERM and non-finite losses.

RUN/metrics.csv has one row per epoch, rewritten whole and atomically (a kill never leaves half a row);
`status` is "complete", or says where the epoch stopped. A run stops in one of two ways besides finishing:
SIGTERM (`Preempted`, after a checkpoint at the next step; `--resume` continues exactly) and a non-finite
loss (`NonFiniteLoss`, the last good checkpoint untouched).
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.distributed as dist

from anatcl_core.atomic import write_atomic
from anatcl_core.precision import precision_name

if TYPE_CHECKING:
    from anatcl_core.pretrain import PretrainConfig

log = logging.getLogger("anatcl.pretrain")


class Preempted(Exception):
    """Raised by `pretrain` after SIGTERM, once the checkpoint is written: callers that loop over runs stop too.

    `anatcl pretrain` turns it into exit status 143 (128 + SIGTERM), so a scheduler sees an unfinished job.
    """

    def __init__(self, checkpoint: Path, epoch: int, step: int):
        super().__init__(f"stopped by SIGTERM at epoch {epoch} step {step}; checkpoint {checkpoint}, "
                         "rerun with --resume to continue")
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step


class NonFiniteLoss(FloatingPointError):
    """Raised by `pretrain` when a step's loss is NaN or infinite; the message names the run, the step, the
    precision and the likely causes. The checkpoint on disk is the last good one, untouched."""


def non_finite_message(cfg: PretrainConfig, epoch: int, step: int, bf16: bool, saved_at: tuple[int, int] | None,
                       bad_subjects: list[str]) -> str:
    """The error of a non-finite loss: what stopped, what is kept, and what to try, most likely cause first."""
    kept = (f"{Path(cfg.out) / 'checkpoint.pth'} (epoch {saved_at[0]}, step {saved_at[1]}) is kept unchanged"
            if saved_at else "no checkpoint had been written yet")
    if bad_subjects:
        causes = (f"the input is at fault: non-finite voxels in {', '.join(bad_subjects[:5])}"
                  f"{' and others' if len(bad_subjects) > 5 else ''} of cohort {cfg.cohort}; fix or drop them")
    elif bf16:
        causes = ("likely causes: bf16 autocast (rerun with --no-amp --resume), or a learning rate too high "
                  f"(--lr, now {cfg.lr:g}; the paper: 1e-4)")
    else:
        causes = f"likely cause: a learning rate too high for this batch (--lr, now {cfg.lr:g}; the paper: 1e-4)"
    return (f"{cfg.method}: non-finite loss at epoch {epoch} step {step} under {precision_name(bf16)}; {kept}; "
            f"{causes}")


def stop_agreed(requested: bool, world: int, device: torch.device) -> bool:
    """True on every rank as soon as any rank was asked to stop (one scalar all-reduce per step).

    Ranks must leave the loop at the same step: a rank that stopped alone would leave the others waiting
    forever in the next gradient all-reduce, and a scheduler may signal the ranks at different moments.
    """
    if world == 1:
        return requested
    flag = torch.tensor([float(requested)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class StopRequest:
    """SIGTERM (cluster preemption, `kill`) asks for a checkpoint at the next step, then `Preempted`."""

    def __init__(self):
        self.requested = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def setup_logging(out: Path, rank: int) -> None:
    if rank != 0 or any(isinstance(h, logging.FileHandler) and h.baseFilename == str(out / "train.log")
                        for h in log.handlers):
        return
    handler = logging.FileHandler(out / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _write_metrics(path: Path, frame: pd.DataFrame) -> None:
    write_atomic(path, lambda f: frame.to_csv(f, index=False))


def add_metrics_row(path: Path, row: dict) -> None:
    """Add one epoch's row to RUN/metrics.csv (rewritten whole and atomically: columns may differ by row)."""
    old = pd.read_csv(path) if path.exists() else pd.DataFrame()
    _write_metrics(path, pd.concat([old, pd.DataFrame([row])], ignore_index=True))


def drop_metrics_after(path: Path, epoch: int) -> None:
    """On resume from the end of `epoch`: drop rows of later epochs (a stopped epoch is about to run again)."""
    if path.exists():
        old = pd.read_csv(path)
        if (old["epoch"] > epoch).any():
            _write_metrics(path, old[old["epoch"] <= epoch])


def tensorboard_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: --tensorboard ignored")
        return None
    return SummaryWriter(str(out / "tensorboard"))
