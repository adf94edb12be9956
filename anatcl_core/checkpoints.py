"""Saving and loading encoder checkpoints: the authors' released files and this project's own.

Wherever a path is accepted, so is a released spec 'released:<descriptor>:<fold>' (e.g. 'released:global:0'),
read from the checksummed cache of `anatcl_core.released`.

A checkpoint is a `torch.save`d dict with at least `{'model': state_dict}`; the project's own also carry
`arch`, `feat_dim` and the resolved training `config`. Loading never unpickles code
(`torch.load(weights_only=True)`), infers the architecture from the keys, and refuses partial loads.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from anatcl_core.atomic import write_atomic
from anatcl_core.encoder import ARCHITECTURES, AnatCLModel
from anatcl_core import released
from anatcl_core.released import is_released_spec, parse_released_spec, released_path, sha256_hex

# Defined here before the cache moved to released.py; kept so that existing imports still work.
RELEASED_WEIGHTS_BASE = released.RELEASED_WEIGHTS_BASE
released_weights_url = released.released_weights_url

# Plain containers that released training scripts store beside the weights; none of them runs code.
_SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be loaded as an AnatCL model; the message names the file and why."""


def load_released(descriptor: str = "global", fold: int = 0, cache_dir: str | os.PathLike | None = None,
                  device: str | torch.device = "cpu") -> AnatCLModel:
    """The authors' released weights for `descriptor` ('global' or 'local') and `fold` (0-4), in eval mode.

    Read from the checksummed cache (`cache_dir`, else $ANATCL_HOME, else ~/.cache/anatcl), downloaded into it
    once (at least 134 MB; see `anatcl_core.released`). Same as `load_checkpoint(f"released:{descriptor}:{fold}")`.
    """
    return load_checkpoint(released_path(descriptor, fold, cache_dir), arch="resnet18", device=device)


def resolve_checkpoint(spec: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A checkpoint path, or a released spec such as 'released:global:0' -> the local file it names.

    A spec is resolved through the released-weights cache (downloading once, checksum verified); a path is
    returned as a Path, unchecked (loading it says what is wrong with it).
    """
    if is_released_spec(spec):
        return released_path(*parse_released_spec(spec), cache_dir=cache_dir)
    return Path(spec)


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
        # torch's message runs over several lines; the name of the refused global is what the user needs
        named = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        raise CheckpointError(
            f"{path}: refused to load: the file contains Python objects that would run code when unpickled "
            f"(torch.load(weights_only=True) only accepts tensors and plain containers; this file asks for "
            f"{named.group(1) if named else 'an unsupported global'}). If you trust the file, "
            f"re-save its state dict: torch.save({{'model': obj['model']}}, new_path)") from None
    except Exception as err:   # arbitrary bytes trip the unpickler in arbitrary ways (IndexError, KeyError, ...)
        detail = " ".join(str(err).split())[:160] or type(err).__name__
        raise CheckpointError(f"{path}: not a torch checkpoint (unreadable: empty, truncated or corrupt: {detail}); "
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

    `path` is a file, or a released spec 'released:<descriptor>:<fold>' (`resolve_checkpoint`).
    `arch=None` infers the architecture from the keys; an explicit `arch` that disagrees is an error.
    Missing, unexpected or mis-shaped keys are errors naming the keys: there is no partial load.
    """
    path = resolve_checkpoint(path)
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


def save_released_format(path: str | os.PathLike, model: AnatCLModel) -> Path:
    """Write `{'model': state_dict}` atomically: the layout of the authors' released files, nothing else.

    Loading such a file infers the architecture from its keys, as for the released weights, so a model of
    ours saved this way exercises their code path (the book's "own data" chapter puts one in a weights cache).
    """
    model = getattr(model, "module", model)          # unwrap DistributedDataParallel
    state = getattr(model, "_orig_mod", model).state_dict()
    return write_atomic(path, lambda f: torch.save({"model": state}, f))


def file_digest(path: str | os.PathLike, length: int = 16) -> str:
    """First `length` hex digits of the file's SHA-256 (names caches of a checkpoint's embeddings)."""
    return sha256_hex(path)[:length]
