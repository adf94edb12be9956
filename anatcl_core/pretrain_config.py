"""What defines a pretraining run: `PretrainConfig`, its checks, and the command-line flags made from it.

Each field carries its default and its help text, so `anatcl pretrain --help` and the dataclass cannot
disagree. The defaults are the released AnatCL hyper-parameters where the names of the released weight files
encode them (book/params/paper.yaml lists every token); the book's CPU runs override a few
(book/params/default.yaml). Where the paper and the names are silent (the baselines' details), the
default is ours and the book's "Departures from the paper" page says so.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass, field

from anatcl_core.anatomy import AGE_KERNELS
from anatcl_core.data.augment import AUGMENTATIONS
from anatcl_core.encoder import ARCHITECTURES
from anatcl_core.methods import get_method, method_ids


def _option(default, help: str):
    """A field with a default and the help text of its command-line flag."""
    return field(default=default, metadata={"help": help})


# Fields that may change between a run and its resumption without changing what is being trained.
# Precision (amp) is among them: a run may continue in fp32 after a bf16 attempt, or on another device.
RUNTIME_FIELDS = ("epochs", "device", "num_workers", "compile", "tensorboard", "gpu_resident", "resume", "out",
                  "cohort", "progress", "amp", "overwrite")
# field -> the values it accepts (and the flag's argparse choices)
_CHOICES = {"method": lambda: method_ids(extensions=True), "arch": lambda: tuple(ARCHITECTURES), "augment": lambda: tuple(AUGMENTATIONS),
            "kernel": lambda: tuple(AGE_KERNELS), "l1_target": lambda: ("standardised", "years")}
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

    cohort: str = field(metadata={
        "help": "cohort folder to pretrain on (its training split; layout: data_recipes/README.md)"})
    method: str = field(metadata={"help": "one of the six methods of the paper, or an extension (anatcl_core.methods)"})
    out: str = field(metadata={"help": "run folder: checkpoint.pth, config.json, metrics.csv, folds.tsv, train.log"})
    arch: str = _option("resnet18", "encoder architecture (the paper: resnet18)")
    width: int = _option(64, "stem channels; 64 is the paper's ResNet-18, narrower ones are for CPU runs")
    feat_dim: int = _option(128, "size of the projection the contrastive loss sees")
    epochs: int = _option(300, "epochs to train (the released runs: 300)")
    batch_size: int = _option(32, "global batch, summed over ranks")
    lr: float = _option(1e-4, "Adam learning rate")
    weight_decay: float = _option(5e-5, "Adam weight decay")
    lr_step_epochs: int = _option(10, "multiply the learning rate by lr-gamma every this many epochs")
    lr_gamma: float = _option(0.9, "learning-rate decay factor")
    temperature: float = _option(0.1, "temperature of the contrastive losses")
    n_views: int = _option(2, "augmented views per subject in a batch")
    augment: str = _option("none", "augmentation of each view: none (the released runs: tf_none), the authors' "
                                   "crop, cutout or all, or strong (ours: crop, blur, noise, cutout)")
    kernel: str = _option("rbf", "age kernel of y-Aware, ExpW and AnatCL's age term: rbf (peak 1, the released "
                                 "runs) or gaussian (the normal density, the authors' ExpW configuration)")
    sigma: float = _option(2.0, "width of the age kernel, years")
    l1_target: str = _option("standardised", "what the L1 baseline regresses: standardised (training-row mean "
                                             "and SD, ours) or years (the authors' earlier code)")
    lambda_age: float = _option(1.0, "weight of AnatCL's age term")
    lambda_anat: float = _option(1.0, "weight of AnatCL's anatomical term")
    normalise_descriptors: bool = _option(True, "range-normalise the descriptors on the training rows (as released)")
    fold: int = _option(0, "which of the n-folds training folds to leave out")
    n_folds: int = _option(5, "folds of the training split")
    seed: int = _option(0, "seed of the initialisation, batch order and augmentations")
    max_steps_per_epoch: int = _option(0, "0: every batch; >0 caps an epoch (small CPU runs)")
    amp: bool = _option(False, "bf16 autocast, only when asked (the policy: anatcl_core.precision)")
    channels_last: bool = _option(True, "channels_last_3d memory layout")
    compile: bool = _option(False, "torch.compile the training step")
    gpu_resident: bool = _option(False, "hold the training volumes on the GPU in fp16")
    num_workers: int = _option(0, "data-loading worker processes")
    device: str = _option("auto", "auto (a GPU if there is one), cpu, cuda or cuda:<index>")
    tensorboard: bool = _option(False, "also write TensorBoard logs into the run folder")
    progress: bool = _option(True, "progress bar")
    resume: bool = _option(False, "continue the run in --out from its checkpoint")
    overwrite: bool = _option(False, "replace the run in --out (its files only) instead of refusing")

    def __post_init__(self) -> None:
        get_method(self.method)
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed():
                raise ValueError(f"{name.replace('_', '-')}: expected one of {', '.join(allowed())}, "
                                 f"got {getattr(self, name)!r}")
        for name, (ok, expected) in _RANGES.items():
            value = getattr(self, name)
            finite = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not finite or not ok(value):
                kind = "" if finite else "a finite number "
                raise ValueError(f"{name.replace('_', '-')}: expected {kind}{expected}, got {value!r}")
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per PretrainConfig field (--batch-size, --no-amp, ...), defaults from the dataclass."""
    for f in dataclasses.fields(PretrainConfig):
        flag = "--" + f.name.replace("_", "-")
        required = f.default is dataclasses.MISSING
        help_text = f.metadata.get("help", "") + ("" if required else " (default: %(default)s)")
        if f.type in ("bool", "bool | None"):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parser.add_argument(flag, type=kind, required=required, default=None if required else f.default,
                                choices=_CHOICES[f.name]() if f.name in _CHOICES else None, help=help_text)
