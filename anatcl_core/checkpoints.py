"""Saving and loading encoder checkpoints: the authors' released files and this project's own.

A checkpoint is a `torch.save`d dict with at least `{'model': state_dict}`; the project's own also carry
`arch`, `feat_dim` and the resolved training `config`. Loading never unpickles code
(`torch.load(weights_only=True)`), infers the architecture from the keys, and refuses partial loads.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from anatcl_core.atomic import write_atomic
from anatcl_core.encoder import ARCHITECTURES, AnatCLModel
from anatcl_core.methods import RELEASED_DESCRIPTORS

#: Released AnatCL weights (ResNet-18, 5 folds per descriptor), as listed by the authors' `anatcl` 0.0.3 package.
RELEASED_WEIGHTS_BASE = "https://gitlab.di.unito.it/barbano/anatcl-pretrained/-/raw/main/"
_RELEASED_RUN = ("0_obhn64_resnet18_amp_yaware_adam_tf_none_lr0.0001_step_step10_rate0.9_wd5e-05_bsz32_"
                 "trainall_False_temp0.1_views2_kernel_rbf_sigma2.0_alpha1.0_anat_desikan_normTrue_subsetTrue_"
                 "{descriptor}_lambd1.0_fold{fold}_splits5_trial0/weights.pth")

# Plain containers that released training scripts store beside the weights; none of them runs code.
_SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded as an AnatCL model; the message names the file and why."""


def released_weights_url(descriptor: str = "global", fold: int = 0) -> str:
    """URL of the authors' AnatCL ResNet-18 weights for `descriptor` in RELEASED_DESCRIPTORS and `fold` in 0..4."""
    if descriptor not in RELEASED_DESCRIPTORS:
        raise ValueError(f"descriptor must be one of {RELEASED_DESCRIPTORS}, got {descriptor!r}")
    if fold not in range(5):
        raise ValueError(f"fold must be one of 0..4, got {fold!r}")
    return RELEASED_WEIGHTS_BASE + _RELEASED_RUN.format(descriptor=descriptor, fold=fold)


def load_released(descriptor: str = "global", fold: int = 0, cache_dir: str | os.PathLike | None = None,
                  device: str | torch.device = "cpu") -> AnatCLModel:
    """Download (once, into the torch hub cache or `cache_dir`) and load the authors' released weights.

    Needs network access; nothing in the tests or the default book calls it.
    """
    url = released_weights_url(descriptor, fold)
    cache = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "anatcl"
    target = cache / f"anatcl-{descriptor}-fold{fold}.pth"
    if not target.exists():
        cache.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), progress=True)  # writes to a temp file, then moves
    return load_checkpoint(target, arch="resnet18", device=device)


def infer_architecture(state: dict[str, torch.Tensor]) -> tuple[str, int, int]:
    """(arch, feat_dim, width) from state-dict keys: blocks per stage, bottleneck convs, the stem's channels."""
    depths = []
    for stage in range(1, 5):
        blocks = {int(m.group(1)) for k in state if (m := re.match(rf"encoder\.layer{stage}\.(\d+)\.", k))}
        depths.append(max(blocks) + 1 if blocks else 0)
    bottleneck = any(re.match(r"encoder\.layer\d\.\d+\.conv3\.weight$", k) for k in state)
    for arch, (block, arch_depths) in ARCHITECTURES.items():
        if tuple(depths) == arch_depths and (block.expansion == 4) == bottleneck:
            head, stem = state.get("head.2.weight"), state.get("encoder.conv1.weight")
            return (arch, int(head.shape[0]) if head is not None else 128,
                    int(stem.shape[0]) if stem is not None else 64)
    raise CheckpointError(f"no known architecture has {depths} blocks per stage"
                          f"{' with bottlenecks' if bottleneck else ''}; known: "
                          + ", ".join(f"{a} {d}" for a, (_, d) in ARCHITECTURES.items()))


def _read(path: Path, map_location) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS), warnings.catch_warnings():
            warnings.simplefilter("ignore")          # torch warns about old pickle protocols; the error says enough
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "Unsupported global" not in str(err):      # random bytes, an HTML error page, a text file, ...
            raise CheckpointError(f"{path}: not a torch checkpoint (not a torch.save archive, nor a pickle of "
                                  "tensors and plain containers); expected a file written by torch.save") from None
        raise CheckpointError(
            f"{path}: refused to load: the file contains Python objects that would run code when unpickled "
            f"(torch.load(weights_only=True) only accepts tensors and plain containers). If you trust the file, "
            f"re-save its state dict: torch.save({{'model': obj['model']}}, new_path). Detail: {err}") from None
    except Exception as err:   # arbitrary bytes trip the unpickler in arbitrary ways (IndexError, KeyError, ...)
        detail = " ".join(str(err).split())[:160] or type(err).__name__
        raise CheckpointError(f"{path}: not a readable torch checkpoint (empty, truncated or corrupt: {detail}); "
                              "expected a file written by torch.save") from None


def _state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    state = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        found = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(f"{path}: expected a dict with a 'model' state dict of tensors; found {found}")
    # DistributedDataParallel and torch.compile wrap parameter names; the weights are the same.
    return {re.sub(r"^(module\.|_orig_mod\.)+", "", k): v for k, v in state.items()}


def load_checkpoint(path: str | os.PathLike, arch: str | None = None, device: str | torch.device = "cpu",
                    ) -> AnatCLModel:
    """Load a released AnatCL file or one of this project's checkpoints into an `AnatCLModel` in eval mode.

    `arch=None` infers the architecture from the keys; an explicit `arch` that disagrees is an error.
    Missing, unexpected or mis-shaped keys are errors naming the keys: there is no partial load.
    """
    path = Path(path)
    state = _state_dict_of(_read(path, map_location="cpu"), path)
    if not any(k.startswith("encoder.") for k in state):
        raise CheckpointError(f"{path}: no 'encoder.*' keys; first keys are {sorted(state)[:5]}")
    inferred, feat_dim, width = infer_architecture(state)
    if arch is not None and arch != inferred:
        raise CheckpointError(f"{path}: arch={arch!r} was requested but the weights are a {inferred}")
    model = AnatCLModel(inferred, feat_dim=feat_dim, width=width)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{path}: state dict does not match {inferred}: "
                              f"missing keys {missing[:10]}{' ...' if len(missing) > 10 else ''}, "
                              f"unexpected keys {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    bad = [f"{k}: file {list(v.shape)} vs model {list(expected[k].shape)}"
           for k, v in state.items() if v.shape != expected[k].shape]
    if bad:
        raise CheckpointError(f"{path}: tensor shapes do not match {inferred}: " + "; ".join(bad[:10]))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()


def save_checkpoint(path: str | os.PathLike, model: AnatCLModel, **extra: Any) -> Path:
    """Write `{'model': state_dict, 'arch', 'feat_dim', 'width', **extra}` atomically (temp file in the same folder, then rename).

    A process killed mid-write leaves the previous file at `path` intact. `extra` must hold only tensors and
    plain containers so the file loads with weights_only=True.
    """
    model = getattr(model, "module", model)          # unwrap DistributedDataParallel
    model = getattr(model, "_orig_mod", model)       # unwrap torch.compile
    payload = {"model": model.state_dict(), "arch": model.arch, "feat_dim": model.feat_dim, "width": model.width,
               **extra}
    return write_atomic(path, lambda f: torch.save(payload, f))


def file_digest(path: str | os.PathLike, length: int = 16) -> str:
    """First `length` hex digits of the file's SHA-256 (names caches of a checkpoint's embeddings)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:length]
