"""A pretraining run's folder and how a run stops: train.log, metrics.csv, SIGTERM and non-finite losses.

RUN/metrics.csv has one row per epoch, rewritten whole and atomically from the history the checkpoint carries
(a kill never leaves half a row, and a resumed run rewrites it from its checkpoint); `status` is "complete", or
says where the epoch stopped. A folder holds one run (starting another there needs --overwrite) and one process
at a time (a lock file). A run stops in one of two ways besides finishing: SIGTERM (`Preempted`, after a
checkpoint at the next step; `--resume` continues exactly) and a non-finite loss (`NonFiniteLoss`, the last good checkpoint untouched).
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.distributed as dist

from anatcl_core.atomic import read_owner, write_atomic, write_owner
from anatcl_core.precision import precision_name

if TYPE_CHECKING:
    from anatcl_core.pretrain import PretrainConfig

log = logging.getLogger("anatcl.pretrain")


class Preempted(Exception):
    """Raised by `pretrain` after SIGTERM, once the checkpoint is written: callers that loop over runs stop too.

    `anatcl pretrain` turns it into exit status 143 (128 + SIGTERM), so a scheduler sees an unfinished job.
    """

    def __init__(self, checkpoint: Path, epoch: int, step: int):
        super().__init__(f"stopped by SIGTERM in epoch {epoch + 1} after {step} step(s); checkpoint {checkpoint}, "
                         "rerun with --resume to continue")
        self.checkpoint, self.epoch, self.step = checkpoint, epoch, step


class NonFiniteLoss(FloatingPointError):
    """Raised by `pretrain` when a step's loss is NaN or infinite; the message names the run, the step, the
    precision and the likely causes. The checkpoint on disk is the last good one, untouched."""


def non_finite_message(cfg: PretrainConfig, epoch: int, step: int, bf16: bool, saved_at: tuple[int, int] | None,
                       bad_subjects: list[str]) -> str:
    """The error of a non-finite loss: what stopped, what is kept, and what to try, most likely cause first."""
    kept = (f"{Path(cfg.out) / 'checkpoint.pth'} ({saved_at[0]} epoch(s) and {saved_at[1]} step(s) done) is kept "
            "unchanged"
            if saved_at else "no checkpoint had been written yet")
    if bad_subjects:
        causes = (f"the input is at fault: non-finite voxels in {', '.join(bad_subjects[:5])}"
                  f"{' and others' if len(bad_subjects) > 5 else ''} of cohort {cfg.cohort}; fix or drop them")
    elif bf16:
        causes = ("likely causes: bf16 autocast (rerun with --no-amp --resume), or a learning rate too high "
                  f"(--lr, now {cfg.lr:g}; the paper: 1e-4)")
    else:
        causes = f"likely cause: a learning rate too high for this batch (--lr, now {cfg.lr:g}; the paper: 1e-4)"
    return (f"{cfg.method}: non-finite loss in epoch {epoch + 1} at step {step + 1} under {precision_name(bf16)}; "
            f"{kept}; {causes}")


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


def write_metrics(path: Path, rows: list[dict]) -> None:
    """RUN/metrics.csv from the run's history (one dict per epoch; the checkpoint holds the same list), rewritten
    whole and atomically: it never disagrees with the checkpoint for longer than one write."""
    write_atomic(path, lambda f: pd.DataFrame(rows).to_csv(f, index=False))


def history_from_csv(path: Path, epochs_done: int) -> list[dict]:
    """The history of a run saved before checkpoints carried it: metrics.csv rows of the finished epochs."""
    if not path.exists():
        return []
    frame = pd.read_csv(path)
    frame = frame[frame["epoch"] <= epochs_done].drop_duplicates("epoch", keep="last")
    return [{k: v for k, v in row.items() if pd.notna(v)} for row in frame.to_dict("records")]


RUN_FILES = ("checkpoint.pth", "config.json", "metrics.csv", "train.log", "folds.tsv", "tensorboard")
LOCK_FILE = ".anatcl-run.lock"


@contextlib.contextmanager
def run_folder_lock(out: Path):
    """Hold `out` for this process while it trains: a second run started into the same folder is refused
    instead of silently replacing the first. A lock left by a process that died (on this host) is taken over."""
    lock = out / LOCK_FILE
    for _ in range(2):
        try:
            write_owner(lock)
            break
        except FileExistsError:
            owner = read_owner(lock)
            if owner is None or not owner.gone():
                # Unreadable counts as in use: it may be a lock another run has created but not yet written.
                pid, host = owner or (0, socket.gethostname())
                raise RunFolderError(f"{out}: in use by process {pid} on {host} (lock file {lock}); wait for it, or "
                                     "choose another --out (delete the lock file only if that process is gone)"
                                     ) from None
            lock.unlink(missing_ok=True)                      # stale: its process is gone
    else:
        raise RunFolderError(f"{out}: could not take the lock file {lock}; another run is starting there")
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


class RunFolderError(ValueError):
    """`--out` holds another run and neither --resume nor --overwrite says what to do with it."""


def claim_run_folder(out: Path, resume: bool, overwrite: bool) -> list[str]:
    """Make `out` this run's folder: refuse one that holds a run unless resuming or overwriting.

    `overwrite` removes only the files a run writes (RUN_FILES), never anything else in the folder. Temporary
    files that a killed process left behind (`.checkpoint.pth.*.tmp`, ...) are removed. Returns what was removed.
    """
    removed = []
    for stale in out.glob(".*.tmp"):
        if any(stale.name.startswith(f".{name}.") for name in RUN_FILES):
            stale.unlink(missing_ok=True)
            removed.append(stale.name)
    existing = [name for name in RUN_FILES if (out / name).exists()]
    if "config.json" in existing and not _is_run_config(out / "config.json"):
        raise RunFolderError(f"{out / 'config.json'}: not the configuration of an anatcl run (no 'method' and "
                             "'cohort' fields); choose another --out, the file would be replaced")
    # a run exists once it has a checkpoint or metrics; a log and config alone are from a start that failed
    if resume or not {"checkpoint.pth", "metrics.csv"} & set(existing):
        return removed
    if not overwrite:
        raise RunFolderError(f"{out}: already holds a run ({describe_run(out)}); add --resume to continue it with "
                             "the same settings, --overwrite to replace it, or choose another --out")
    for name in existing:
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
        removed.append(name)
    return removed


def _is_run_config(path: Path) -> bool:
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and {"method", "cohort", "out"} <= set(config)


def describe_run(out: Path) -> str:
    """'yaware, 3 epoch(s) done' from a run folder's config.json and metrics.csv, as far as they are readable."""
    try:
        method = json.loads((out / "config.json").read_text())["method"]
    except (OSError, ValueError, KeyError, TypeError):
        method = "method unknown"
    try:
        done = int((pd.read_csv(out / "metrics.csv")["status"] == "complete").sum())
    except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
        done = "?"
    return f"{method}, {done} epoch(s) done"


def tensorboard_writer(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: --tensorboard ignored")
        return None
    return SummaryWriter(str(out / "tensorboard"))
