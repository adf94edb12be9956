"""The pretraining engine for the six methods of the paper, on CPU, one GPU or several (torchrun).

Example::

    anatcl pretrain --cohort data/openbhb --method anatcl-local --out runs/anatcl-local-f0 --fold 0
    torchrun --nproc_per_node=4 -m anatcl_core.pretrain --cohort ... --method ... --out ...

Writes RUN/checkpoint.pth (latest; loads with `anatcl_core.load_checkpoint`), RUN/config.json, RUN/metrics.csv,
RUN/folds.tsv (the pretraining folds, made from the cohort and the seed),
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
from pathlib import Path

import numpy as np
import pandas as pd
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
from anatcl_core.encoder import AnatCLModel
from anatcl_core.objectives import AgeRegressor, compute_loss
from anatcl_core.pretrain_config import RUNTIME_FIELDS, PretrainConfig, add_arguments
from anatcl_core.precision import bf16_autocast, cpu_description, precision_name, resolve_device, use_bf16
from anatcl_core.training_run import (NonFiniteLoss, Preempted, StopRequest, claim_run_folder, history_from_csv, log,
                                      non_finite_message, run_folder_lock, setup_logging, stop_agreed,
                                      tensorboard_writer, write_metrics)

# ----------------------------------------------------------------------------- engine

def train_step(cfg: PretrainConfig, step_fn: nn.Module, optimizer: torch.optim.Optimizer, data: TrainingSet,
               x: torch.Tensor, positions, crop: tuple[int, int, int], generator: torch.Generator,
               age_stats: tuple[float, float], bf16: bool) -> tuple[float, dict[str, float]]:
    """One optimiser step on this rank's shard: x [b, 1, X, Y, Z] volumes at `positions` into `data`.

    Augments n_views views of each volume on the model's device, runs the model (bf16 autocast when asked),
    and steps the optimiser on the method's loss. Returns (loss, the loss's logged terms).
    """
    device = generator.device
    views = make_views(x.to(device, non_blocking=True), cfg.n_views, crop, generator, cfg.augment)
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


# What runs saved before a field existed did, where that is not the field's default.
_BEFORE_THE_FIELD = {"augment": "crop, flip, blur, noise and cutout (saved before --augment existed)"}


def _check_resumable(saved: dict, cfg: PretrainConfig, path: Path) -> None:
    now = cfg.to_dict()
    # a field added after the run was saved had its default value then (e.g. width 64 before widths existed),
    # except where the behaviour before the field differs from its default
    defaults = {f.name: f.default for f in dataclasses.fields(PretrainConfig)} | _BEFORE_THE_FIELD
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
    folds = check_run_inputs(cfg, cohort)
    fingerprint = cohort.fingerprint()
    out = check_writable_folder(cfg.out, "--out")
    with run_folder_lock(out) if rank == 0 else contextlib.nullcontext():
        removed = claim_run_folder(out, cfg.resume, cfg.overwrite) if rank == 0 else []
        setup_logging(out, rank)
        if removed:
            log.info("removed from %s: %s", out, ", ".join(removed))
        if rank == 0:                            # the run records its folds (the cohort's folder is only read)
            write_atomic(out / "folds.tsv", lambda f: folds.to_csv(f, sep="\t", index=False))
        return _train(cfg, out, cohort, folds, fingerprint, device, rank, world)


def check_run_inputs(cfg: PretrainConfig, cohort: Cohort) -> pd.DataFrame:
    """What can be refused before the run folder is written: an --out inside the data folder (which is only
    read), and folds or a batch that the cohort's training rows cannot fill. Returns the folds
    [participant_id, fold] (deterministic, so every rank computes the same)."""
    out, data = Path(cfg.out).resolve(), Path(cfg.cohort).resolve()
    if out == data or data in out.parents:
        raise ValueError(f"--out {out}: inside the cohort folder {data}, which pretraining only reads; "
                         "choose a run folder elsewhere")
    folds = load_or_make_folds(cfg.cohort, cohort.participants, cfg.n_folds, cfg.seed)
    n_rows = len(training_rows(cohort.participants, folds, cfg.fold))
    if n_rows < cfg.batch_size:
        raise ValueError(f"--batch-size {cfg.batch_size}: fold {cfg.fold} leaves {n_rows} training subjects in "
                         f"{cfg.cohort}; expected a batch size of at most {n_rows}")
    return folds


def _train(cfg: PretrainConfig, out: Path, cohort: Cohort, folds: pd.DataFrame, fingerprint: str,
           device: torch.device, rank: int, world: int) -> Path:
    """The body of `pretrain` once the run folder is claimed (and locked on rank 0)."""
    ckpt_path, metrics_path = out / "checkpoint.pth", out / "metrics.csv"
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
