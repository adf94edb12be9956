"""The pretraining engine for the six methods of the paper, on CPU, one GPU or several (torchrun).

Example::

    anatcl pretrain --cohort data/openbhb --method anatcl-local --out runs/anatcl-local-f0 --fold 0
    torchrun --nproc_per_node=4 -m anatcl_core.pretrain --cohort ... --method ... --out ...

Writes RUN/checkpoint.pth (latest; loads with `anatcl_core.load_checkpoint`), RUN/config.json, RUN/metrics.csv,
RUN/train.log. Every random draw (batch order, augmentations) is derived from (seed, epoch, step, rank), so a
resumed run replays exactly the batches an uninterrupted run would have seen.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from tqdm.auto import tqdm

from anatcl_core.anatomy import RangeNormaliser, select_measures
from anatcl_core.atomic import check_writable_folder, write_atomic
from anatcl_core.checkpoints import save_checkpoint
from anatcl_core.data.augment import training_crop
from anatcl_core.data.batches import TrainingSet, batch_loader, epoch_plan, make_views, step_generator
from anatcl_core.data.cohort import Cohort
from anatcl_core.data.folds import load_or_make_folds, training_rows
from anatcl_core.distributed import is_distributed
from anatcl_core.encoder import ARCHITECTURES, AnatCLModel
from anatcl_core.methods import get_method, method_ids
from anatcl_core.objectives import AgeRegressor, compute_loss
from anatcl_core.precision import bf16_autocast, cpu_description, precision_name, resolve_device, use_bf16
from anatcl_core.training_run import (NonFiniteLoss, Preempted, StopRequest, claim_run_folder, history_from_csv, log,
                                      non_finite_message, run_folder_lock, setup_logging, stop_agreed,
                                      tensorboard_writer, write_metrics)

# Fields that may change between a run and its resumption without changing what is being trained.
# Precision (amp) is among them: a run may continue in fp32 after a bf16 attempt, or on another device.
RUNTIME_FIELDS = ("epochs", "device", "num_workers", "compile", "tensorboard", "gpu_resident", "resume", "out",
                  "cohort", "progress", "amp", "overwrite")
# field -> (test, what is expected): checked before any work, so a typo costs nothing
_RANGES = {
    "width": (lambda v: v >= 1, ">= 1 (64 for the paper's ResNet-18)"), "feat_dim": (lambda v: v >= 1, ">= 1"),
    "epochs": (lambda v: v >= 1, ">= 1"), "batch_size": (lambda v: v >= 2, ">= 2 (a contrastive batch needs pairs)"),
    "lr": (lambda v: 0 < v < 1, "in (0, 1); the paper: 1e-4"), "weight_decay": (lambda v: v >= 0, ">= 0"),
    "lr_step_epochs": (lambda v: v >= 1, ">= 1"), "lr_gamma": (lambda v: 0 < v <= 1, "in (0, 1]"),
    "temperature": (lambda v: v > 0, "> 0"), "sigma": (lambda v: v > 0, "> 0 (years)"),
    "lambda_age": (lambda v: v >= 0, ">= 0"), "lambda_anat": (lambda v: v >= 0, ">= 0"),
    "n_folds": (lambda v: v >= 2, ">= 2"), "seed": (lambda v: v >= 0, ">= 0"),
    "max_steps_per_epoch": (lambda v: v >= 0, ">= 0 (0: every batch)"), "num_workers": (lambda v: v >= 0, ">= 0"),
}


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run. Defaults are the released AnatCL hyper-parameters."""

    cohort: str
    method: str
    out: str
    arch: str = "resnet18"
    width: int = 64                 # stem channels; 64 is the paper's ResNet, narrower ones are for CPU runs
    feat_dim: int = 128
    epochs: int = 300
    batch_size: int = 32            # global batch, summed over ranks
    lr: float = 1e-4
    weight_decay: float = 5e-5
    lr_step_epochs: int = 10
    lr_gamma: float = 0.9
    temperature: float = 0.1
    n_views: int = 2
    sigma: float = 2.0              # years, RBF age kernel
    lambda_age: float = 1.0
    lambda_anat: float = 1.0
    normalise_descriptors: bool = True
    fold: int = 0
    n_folds: int = 5
    seed: int = 0
    max_steps_per_epoch: int = 0    # 0: all batches; >0 caps an epoch (small CPU runs)
    amp: bool = False               # bf16 autocast, only when asked (anatcl_core.precision)
    channels_last: bool = True
    compile: bool = False
    gpu_resident: bool = False      # hold the training volumes on the GPU in fp16
    num_workers: int = 0
    device: str = "auto"
    tensorboard: bool = False
    progress: bool = True
    resume: bool = False
    overwrite: bool = False         # replace the run in `out` (its files only) instead of refusing

    def __post_init__(self) -> None:
        get_method(self.method)
        for name, (ok, expected) in _RANGES.items():
            value = getattr(self, name)
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not finite or not ok(value):
                kind = "" if finite else "a finite number "
                raise ValueError(f"{name.replace('_', '-')}: expected {kind}{expected}, got {value!r}")
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"arch: expected one of {sorted(ARCHITECTURES)}, got {self.arch!r}")
        if not 0 <= self.fold < self.n_folds:
            raise ValueError(f"fold: expected 0 to {self.n_folds - 1} (n-folds {self.n_folds}), got {self.fold}")
        if self.resume and self.overwrite:
            raise ValueError("--resume continues the run in --out and --overwrite replaces it: give one of them")
        if self.n_views < 1 or (self.objective == "nt-xent" and self.n_views < 2):
            raise ValueError(f"n-views: expected >= 1 (>= 2 for simclr, whose only positives are other views), "
                             f"got {self.n_views}")

    @property
    def objective(self) -> str:
        """The loss this run computes (`methods.Method.objective`)."""
        return get_method(self.method).objective

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- engine

def train_step(cfg: PretrainConfig, step_fn: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingSet,
               x: torch.Tensor, positions, crop: tuple[int, int, int], generator: torch.Generator,
               age_stats: tuple[float, float], bf16: bool) -> tuple[float, dict[str, float]]:
    """One optimiser step on this rank's shard: x [b, 1, X, Y, Z] volumes at `positions` into `data`.

    Augments n_views views of each volume on the model's device, runs the model (bf16 autocast when asked),
    and steps the optimiser on the method's loss. Returns (loss, the loss's logged terms).
    """
    device = generator.device
    views = make_views(x.to(device, non_blocking=True), cfg.n_views, crop, generator)
    if cfg.channels_last:
        views = views.contiguous(memory_format=torch.channels_last_3d)
    pos = positions.numpy() if isinstance(positions, torch.Tensor) else positions
    age, desc = data.age[pos].to(device), data.descriptors[pos].to(device)
    with bf16_autocast(device, bf16):
        output = step_fn(views)
    loss, terms = compute_loss(cfg, output, len(pos), age, desc, age_stats)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item(), terms


def _check_resumable(saved: dict, cfg: PretrainConfig, path: Path) -> None:
    now = cfg.to_dict()
    # a field added after the run was saved had its default value then (e.g. width 64 before widths existed)
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)}
    saved = {k: saved.get(k, defaults[k]) for k in now}
    diff = {k: (saved[k], now[k]) for k in now if k not in RUNTIME_FIELDS and saved[k] != now[k]}
    if diff:
        lines = ", ".join(f"{k}: saved {a!r} vs now {b!r}" for k, (a, b) in sorted(diff.items()))
        raise ValueError(f"{path}: cannot resume, the configuration differs from the saved run ({lines}); "
                         "use a new --out or the same settings")


def pretrain(cfg: PretrainConfig) -> Path:
    """Run (or resume) pretraining; returns RUN/checkpoint.pth. Call under torchrun for several processes.

    On SIGTERM it checkpoints at the next step and raises `Preempted`.
    """
    rank, world = (dist.get_rank(), dist.get_world_size()) if is_distributed() else (0, 1)
    device = resolve_device(cfg.device)
    cohort = Cohort.open(cfg.cohort)             # a bad cohort is refused before the run folder is touched
    fingerprint = cohort.fingerprint()
    out = check_writable_folder(cfg.out, "--out")
    with run_folder_lock(out) if rank == 0 else contextlib.nullcontext():
        removed = claim_run_folder(out, cfg.resume, cfg.overwrite) if rank == 0 else []
        setup_logging(out, rank)
        if removed:
            log.info("removed from %s: %s", out, ", ".join(removed))
        return _train(cfg, out, cohort, fingerprint, device, rank, world)


def _train(cfg: PretrainConfig, out: Path, cohort: Cohort, fingerprint: str, device: torch.device, rank: int,
           world: int) -> Path:
    """The body of `pretrain` once the run folder is claimed (and locked on rank 0)."""
    ckpt_path, metrics_path = out / "checkpoint.pth", out / "metrics.csv"
    folds = load_or_make_folds(cfg.cohort, cohort.participants, cfg.n_folds, cfg.seed) if rank == 0 else None
    if world > 1:
        dist.barrier()                           # rank 0 wrote the folds file; the others read it now
    folds = folds if folds is not None else load_or_make_folds(cfg.cohort, cohort.participants, cfg.n_folds, cfg.seed)
    rows = training_rows(cohort.participants, folds, cfg.fold)
    normaliser = None
    if cfg.normalise_descriptors:
        normaliser = RangeNormaliser().fit(select_measures(torch.as_tensor(cohort.roi[rows], dtype=torch.float32)))
    data = TrainingSet(cohort, rows, normaliser, device, cfg.gpu_resident and device.type == "cuda")
    age_stats = (float(data.age.mean()), float(data.age.std()))
    crop = training_crop(cohort.shape)
    bf16 = use_bf16(device, cfg.amp)

    torch.manual_seed(cfg.seed)                  # same initial weights on every rank
    model = AnatCLModel(cfg.arch, cfg.feat_dim, cfg.width)
    net: nn.Module = AgeRegressor(model) if cfg.objective == "l1" else model
    net = net.to(device)
    if cfg.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, cfg.lr_step_epochs, cfg.lr_gamma)
    start_epoch, start_step, saved_at = 0, 0, None
    history: list[dict] = []                     # one row per finished epoch, saved in every checkpoint
    partial: dict = {}                           # sums of an epoch stopped by SIGTERM, continued on resume
    if cfg.resume and ckpt_path.exists():
        saved = torch.load(ckpt_path, map_location=device, weights_only=True)
        _check_resumable(saved["config"], cfg, ckpt_path)
        if saved.get("cohort_fingerprint", fingerprint) != fingerprint:
            raise ValueError(f"{ckpt_path}: cannot resume, --cohort {cfg.cohort} is not the cohort this run trained "
                             f"on (content fingerprint {fingerprint}, saved {saved['cohort_fingerprint']}); give "
                             "that cohort, or a new --out")
        net.load_state_dict(saved["net"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        start_epoch, start_step = saved["epoch"], saved["step"]
        saved_at = (start_epoch, start_step)
        history = list(saved["history"]) if "history" in saved else history_from_csv(metrics_path, start_epoch)
        partial = dict(saved.get("partial", {}))
        log.info("resumed from %s at epoch %d step %d", ckpt_path, start_epoch, start_step)
        if rank == 0:
            write_metrics(metrics_path, history)  # the checkpoint's history wins over whatever the CSV says
    elif cfg.resume:
        log.info("--resume given but %s does not exist: starting a new run", ckpt_path)
    if rank == 0:
        write_atomic(out / "config.json", lambda f: f.write(json.dumps(cfg.to_dict(), indent=2).encode()))
        log.info("%s on %s in %s; %s", cfg.method, device, precision_name(bf16), cpu_description())

    if world > 1:
        if device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        # On CPU (gloo) SyncBatchNorm is unavailable: each rank normalises its own shard (ghost batch norm).
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                                  find_unused_parameters=cfg.objective == "l1")
    step_fn = torch.compile(net) if cfg.compile else net

    def save(epoch: int, step: int, partial_epoch: dict | None = None) -> None:
        nonlocal saved_at
        saved_at = (epoch, step)
        if rank != 0:
            return
        bare = net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
        save_checkpoint(ckpt_path, model, net=bare.state_dict(), optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(), epoch=epoch, step=step, config=cfg.to_dict(),
                        normaliser=normaliser.state_dict() if normaliser else {}, age_stats=list(age_stats),
                        rows=torch.as_tensor(rows), cohort_fingerprint=fingerprint, history=history,
                        partial=partial_epoch or {})

    stop = StopRequest()
    tb = tensorboard_writer(out) if cfg.tensorboard and rank == 0 else None
    try:
        for epoch in range(start_epoch, cfg.epochs):
            plan = epoch_plan(len(data), cfg.batch_size, cfg.seed, epoch, rank, world)
            if cfg.max_steps_per_epoch:
                plan = plan[:cfg.max_steps_per_epoch]
            first = start_step if epoch == start_epoch else 0
            net.train()
            resumed = partial if epoch == start_epoch and first else {}
            sums: dict[str, float] = dict(resumed.get("sums", {}))
            n_steps, t0 = int(resumed.get("n_steps", 0)), time.perf_counter() - float(resumed.get("seconds", 0.0))
            loader = batch_loader(data, plan, first, cfg.num_workers)
            bar = tqdm(loader, total=len(plan) - first, desc=f"{cfg.method} epoch {epoch + 1}/{cfg.epochs}",
                       disable=rank != 0 or not cfg.progress, leave=False)
            for step, (x, positions) in enumerate(bar, start=first):
                gen = step_generator(cfg.seed, epoch, step, rank, device)
                loss, terms = train_step(cfg, step_fn, optimizer, data, x, positions, crop, gen, age_stats, bf16)
                if not math.isfinite(loss):
                    bad = [str(cohort.participants["participant_id"].iloc[data.rows[p]])
                           for p, ok in zip(np.asarray(positions), torch.isfinite(x.flatten(1)).all(1)) if not ok]
                    message = non_finite_message(cfg, epoch, step, bf16, saved_at, bad)
                    if rank == 0:
                        log.error(message)
                        write_metrics(metrics_path, history + [{"epoch": epoch + 1, "loss": loss,
                                                                "status": f"non-finite loss at step {step + 1}"}])
                    raise NonFiniteLoss(message)
                for k, v in {"loss": loss, **terms}.items():
                    sums[k] = sums.get(k, 0.0) + v
                n_steps += 1
                bar.set_postfix(loss=f"{loss:.4f}")
                if stop_agreed(stop.requested, world, device):
                    save(epoch, step + 1, {"sums": sums, "n_steps": n_steps, "seconds": time.perf_counter() - t0})
                    log.info("SIGTERM: checkpoint written at epoch %d step %d", epoch, step + 1)
                    raise Preempted(ckpt_path, epoch, step + 1)
            seconds = time.perf_counter() - t0
            history.append({"epoch": epoch + 1, **{k: v / max(n_steps, 1) for k, v in sums.items()},
                            "lr": optimizer.param_groups[0]["lr"], "seconds": seconds,
                            "volumes_per_s": n_steps * cfg.batch_size * cfg.n_views / seconds, "status": "complete"})
            scheduler.step()
            save(epoch + 1, 0)                   # the checkpoint first: metrics.csv is rewritten from it
            if rank == 0:
                write_metrics(metrics_path, history)
                log.info(json.dumps(history[-1]))
                if tb is not None:
                    for k, v in history[-1].items():
                        if k != "status":
                            tb.add_scalar(k, v, epoch + 1)
    finally:
        stop.restore()
        if tb is not None:
            tb.close()
    return ckpt_path


# ----------------------------------------------------------------------------- command line

def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per PretrainConfig field (--batch-size, --no-amp, ...), defaults from the dataclass."""
    for f in dataclasses.fields(PretrainConfig):
        flag = "--" + f.name.replace("_", "-")
        required = f.default is dataclasses.MISSING
        if f.type in ("bool", "bool | None"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, required=required, default=None if required else f.default,
                                choices=method_ids() if f.name == "method" else None)


def run(args: argparse.Namespace) -> int:
    names = {f.name for f in dataclasses.fields(PretrainConfig)}
    cfg = PretrainConfig(**{k: v for k, v in vars(args).items() if k in names})
    distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    if distributed:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    try:
        path = pretrain(cfg)
    except Preempted as stopped:
        print(f"anatcl pretrain: {stopped}", file=sys.stderr)
        return 143
    finally:
        if distributed:
            dist.destroy_process_group()
    if not distributed or int(os.environ["RANK"]) == 0:
        print(f"checkpoint: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m anatcl_core.pretrain` (what torchrun starts): the same flags and errors as `anatcl pretrain`."""
    from anatcl_core.cli import OneLineParser, guarded
    parser = OneLineParser(prog="python -m anatcl_core.pretrain", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return guarded(parser.prog, run, parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
