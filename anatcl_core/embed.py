"""Frozen-encoder features for every subject of a cohort, or for one's own NIfTI maps: what the probes consume.

The features are the 512-d encoder features (the authors' anatcl package `forward` returns the same); the 128-d
projection is `model(x)`/head, used only by the contrastive loss. (512 is the paper's ResNet-18, 8 x width in
general.)

Example::

    anatcl embed --checkpoint runs/yaware-f0/checkpoint.pth --cohort data/adni --out adni.npy
    anatcl embed --checkpoint released:global:0 --cohort data/adni --out adni.npy   (downloads once, then cached)
    anatcl embed --checkpoint released:global:0 --images derivatives/cat12/ --out features.tsv

Also here: `EmbeddingCache`, the on-disk cache of a checkpoint's features that `anatcl probe` and the
book's chapters read.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from tqdm.auto import tqdm

from anatcl_core.atomic import remove_stale_files, write_atomic
from anatcl_core.checkpoints import file_digest, is_released_spec, load_checkpoint, resolve_checkpoint
from anatcl_core.data.augment import center_crop, training_crop
from anatcl_core.data.cohort import GRIDS, Cohort
from anatcl_core.encoder import AnatCLModel, check_volume_batch
from anatcl_core.feature_files import FEATURE_FORMATS, check_features_out, write_features
from anatcl_core.images import GMMap, find_images, inspect_maps, read_map
from anatcl_core.methods import RELEASED_DESCRIPTORS
from anatcl_core.precision import bf16_autocast, resolve_device, use_bf16
from anatcl_core.released import parse_released_spec

#: Said wherever features are produced: which output they are, so nobody probes the projection by mistake.
FEATURES_NOTE = ("512-d encoder features (the authors' anatcl package `forward` returns the same); the 128-d "
                 "projection is `model(x)`/head, used only by the contrastive loss")


class NonFiniteVolumes(ValueError):
    """Volumes holding NaN or infinite voxels: their features would be NaN, so they are refused by name."""


@torch.inference_mode()
def embed_volumes(model: AnatCLModel, volumes: np.ndarray, batch_size: int = 8, device: str = "auto",
                  amp: bool = False, channels_last: bool = True, crop: tuple[int, int, int] | None = None,
                  compile: bool = False, progress: bool = True, ids: list[str] | None = None) -> np.ndarray:
    """volumes: [N, X, Y, Z] (array or memmap) -> [N, model.embed_dim] float32 encoder features (head dropped;
    512 for the paper's ResNet-18, 8 x width in general).

    These are the 512-d encoder features (the authors' anatcl package `forward` returns the same); the 128-d
    projection is `model(x)`/head, used only by the contrastive loss.

    Each volume is centre-cropped to `crop` (default: the training crop of its grid, 121 x 128 x 121 at 1.5 mm),
    then encoded in batches: in fp32, or under bf16 autocast with `amp=True` (the policy and its reasons:
    `anatcl_core.precision`).
    `compile=True` runs the encoder through `torch.compile` with inductor's freezing (BatchNorm folded into
    the convolutions, weights pre-packed): it pays a one-off compilation of tens of seconds, so it is worth it
    for large cohorts only. A volume with a NaN or infinite voxel is an error naming it (by `ids`, if given).

    Args:
        model: the encoder to run (its projection head is not used); moved to the chosen device and put in
            eval mode.
        volumes: ``[N, X, Y, Z]`` grey-matter maps on the cohort's grid (e.g. ``Cohort.volumes``, a memmap),
            float16 or float32; read ``batch_size`` subjects at a time and cast to float32.
        batch_size: volumes per forward pass (default 8), an int >= 1; it bounds the memory used, not the
            features.
        device: ``"auto"`` (default: this rank's GPU under torchrun, else the GPU if there is one, else the
            CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:<index>"``.
        amp: encode under bf16 autocast (default False: fp32); the features are returned in float32 either way.
        channels_last: hold the model and each batch in the channels-last 3-D memory format (default True).
        crop: ``(X, Y, Z)`` size in voxels of the centre crop, zero-padded where a volume is smaller; default
            None: the training crop of the volumes' grid (``anatcl_core.data.augment.training_crop``).
        compile: run the encoder through ``torch.compile`` (default False; see above). The last, short batch
            is padded to ``batch_size`` so that one compilation serves every batch.
        progress: show a progress bar over the batches (default True).
        ids: ``[N]`` subject ids, row i for ``volumes[i]``, used only to name volumes with non-finite voxels in
            the error; default None names them by row.

    Returns:
        ``[N, model.embed_dim]`` float32 array of encoder features, row i for ``volumes[i]``.

    Raises:
        NonFiniteVolumes: a volume holds a NaN or infinite voxel (the first five such volumes are named).
        ValueError: ``batch_size`` is not an int >= 1, ``device`` is not an available device, or ``amp=True``
            on a device without bf16 autocast.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    dev = resolve_device(device)
    model = model.to(dev).eval()
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    encoder = torch.compile(model.encoder, options={"freezing": True}) if compile else model.encoder
    crop = crop or training_crop(tuple(volumes.shape[1:]))
    bf16 = use_bf16(dev, amp)
    features = np.empty((len(volumes), model.embed_dim), dtype=np.float32)
    for start in tqdm(range(0, len(volumes), batch_size), desc="embedding", disable=not progress, leave=False):
        block = np.asarray(volumes[start:start + batch_size], dtype=np.float32)
        finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
        if not finite.all():
            bad = [ids[start + i] if ids is not None else f"row {start + i}" for i in np.flatnonzero(~finite)]
            raise NonFiniteVolumes(f"non-finite voxels in {', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''}:"
                             " expected finite grey-matter values; fix or drop these volumes")
        x = center_crop(torch.from_numpy(block).unsqueeze(1).to(dev), crop)
        check_volume_batch(x)
        if compile and len(block) < batch_size:
            # pad the last batch: one static shape means one compilation (eval-mode BN is per sample)
            x = torch.cat([x, x.new_zeros((batch_size - len(block), *x.shape[1:]))])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with bf16_autocast(dev, bf16):
            out = encoder(x)
        features[start:start + len(block)] = out[:len(block)].float().cpu().numpy()
    return features


def embed_cohort(model: AnatCLModel | str | os.PathLike, cohort: Cohort | str | os.PathLike, **kwargs) -> np.ndarray:
    """Features [N, D] for every subject of `cohort` (a Cohort or its folder) with a model, a checkpoint path or a
    released spec ('released:global:0'); `kwargs` go to `embed_volumes`.

    These are the 512-d encoder features (the authors' anatcl package `forward` returns the same); the 128-d
    projection is `model(x)`/head, used only by the contrastive loss.
    """
    if not isinstance(model, AnatCLModel):
        model = load_checkpoint(model)
    if not isinstance(cohort, Cohort):
        cohort = Cohort.open(cohort)
    try:
        return embed_volumes(model, cohort.volumes, ids=cohort.participants["participant_id"].tolist(), **kwargs)
    except NonFiniteVolumes as err:
        raise NonFiniteVolumes(f"{cohort.path / 'vbm.npy'}: {err}") from None


def embed_maps(model: AnatCLModel, maps: list[GMMap], batch_size: int = 8, device: str = "auto",
               amp: bool = False, progress: bool = True, voxel_size: float = 1.5) -> np.ndarray:
    """[N, D] float32 features of checked maps (`anatcl_core.images.inspect_maps`), row i for maps[i].

    These are the 512-d encoder features (the authors' anatcl package `forward` returns the same); the 128-d
    projection is `model(x)`/head, used only by the contrastive loss. Each map is read (and resampled to the
    CAT12 grid if it is on another MNI grid) only when its batch is due, so memory holds `batch_size` maps of
    121 x 145 x 121 float32 (8.5 MB each); then centre crop to 121 x 128 x 121 and encoding as `embed_volumes`.
    `voxel_size` names the grid of `GRIDS` the encoder was trained on: 1.5 (CAT12, the released weights) or 3.0
    (this project's CPU-sized encoders, whose maps are resampled to 61 x 73 x 61 and cropped to 61 x 64 x 61).
    """
    features = np.empty((len(maps), model.embed_dim), dtype=np.float32)
    with tqdm(total=len(maps), desc="embedding", unit="image", disable=not progress, leave=False) as bar:
        for start in range(0, len(maps), batch_size):
            batch = maps[start:start + batch_size]
            block = np.stack([read_map(m, GRIDS[voxel_size]) for m in batch])
            features[start:start + len(batch)] = embed_volumes(
                model, block, batch_size=len(batch), device=device, amp=amp, progress=False,
                ids=[str(m.path) for m in batch])
            bar.update(len(batch))
    return features


def embed_images(model: AnatCLModel | str | os.PathLike, images: list[str | os.PathLike], **kwargs
                 ) -> tuple[list[str], np.ndarray]:
    """(participant ids [N], [N, D] float32 features) for NIfTI maps: files, folders or glob patterns.

    These are the 512-d encoder features (the authors' anatcl package `forward` returns the same); the 128-d
    projection is `model(x)`/head, used only by the contrastive loss. `model` is a model, a checkpoint path or
    a released spec; every map's header and id is checked before the model is loaded (`anatcl_core.images`);
    `kwargs` go to `embed_maps`.
    """
    maps = inspect_maps(find_images(images), GRIDS[kwargs.get("voxel_size", 1.5)])
    if not isinstance(model, AnatCLModel):
        model = load_checkpoint(model)
    return [m.participant_id for m in maps], embed_maps(model, maps, **kwargs)


def save_features(path: str | os.PathLike, features: np.ndarray) -> Path:
    """np.save to a temporary file beside `path`, then rename: a killed run never leaves a partial file."""
    return write_atomic(path, lambda f: np.save(f, features))


@dataclass
class EmbeddingCache:
    """Embeddings of cohorts by checkpoints, cached as `<root>/<checkpoint sha256 prefix>/<cohort>.npy`.

    A `<cohort>.source` file beside each array records the cohort's content fingerprint
    (`Cohort.fingerprint`: tables in full, volumes sampled), so a regenerated cohort of the same name, or one
    whose volumes were replaced, is embedded again. The encoder is loaded only when some cohort is not cached.
    `load_model(path, device)` and `embed_cohort(model, cohort, batch_size=, device=, progress=)` default to
    `load_checkpoint` and `embed_cohort` (tests replace them to count calls).
    """

    root: Path
    batch_size: int = 8
    device: str = "auto"
    progress: bool = True           # a progress bar while a cohort is embedded
    load_model: Callable[[Path, str], Any] | None = field(default=None, repr=False)
    embed_cohort: Callable[..., np.ndarray] | None = field(default=None, repr=False)

    def path_for(self, checkpoint: str | os.PathLike, cohort_name: str) -> Path:
        return Path(self.root) / file_digest(resolve_checkpoint(checkpoint)) / f"{cohort_name}.npy"

    def embeddings(self, checkpoint: str | os.PathLike, cohorts: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """checkpoint file (or released spec) + {name: Cohort} -> {name: [N, D] float32 features}, embedding
        what is not cached."""
        checkpoint = resolve_checkpoint(checkpoint)
        model = None
        out = {}
        for name, cohort in cohorts.items():
            path = self.path_for(checkpoint, name)
            remove_stale_files(path.parent, f".{name}.*.tmp")      # of a run killed while saving
            source = path.with_suffix(".source")
            fingerprint = cohort.fingerprint()
            if path.exists() and source.exists() and source.read_text().strip() == fingerprint:
                out[name] = np.load(path)
                continue
            if model is None:
                model = self._load(Path(checkpoint))
            features = np.asarray(self._embed(model, cohort))
            write_atomic(path, lambda f: np.save(f, features))
            write_atomic(source, lambda f: f.write(fingerprint.encode()))
            out[name] = features
        return out

    def _embed(self, model: Any, cohort: Any) -> np.ndarray:
        embed = self.embed_cohort or embed_cohort
        return embed(model, cohort, batch_size=self.batch_size, device=self.device, progress=self.progress)

    def _load(self, checkpoint: Path) -> Any:
        if self.load_model is not None:
            return self.load_model(checkpoint, self.device)
        return load_checkpoint(checkpoint)           # on CPU; embedding moves it to `device`


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from anatcl_core.cli import int_at_least
    parser.description = ("Extract features for a cohort folder or for CAT12 grey-matter maps (NIfTI, MNI "
                          f"space). The features are the {FEATURES_NOTE}.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="FILE|released:D:F",
                        help="a checkpoint of this project, a released AnatCL file, or released:DESCRIPTOR:FOLD "
                             "(e.g. released:global:0) for the authors' weights, downloaded once into $ANATCL_HOME "
                             "(default ~/.cache/anatcl) and SHA-256 checked")
    source.add_argument("--released", choices=RELEASED_DESCRIPTORS,
                        help="the authors' weights; same as --checkpoint released:DESCRIPTOR:FOLD")
    parser.add_argument("--fold", type=int, choices=range(5), default=None,
                        help="fold of the released weights (0-4, default 0); only with --released")
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--cohort", help="cohort folder (participants.tsv, vbm.npy, desikan_roi.npy, meta.json: "
                                       "data_recipes/README.md)")
    data.add_argument("--images", nargs="+", metavar="PATH",
                      help="CAT12 mwp1 grey-matter maps in MNI space (1.5 mm, 121 x 145 x 121; maps on another "
                           "MNI grid are resampled, native-space maps refused): NIfTI files, folders (searched "
                           "recursively for *.nii, *.nii.gz) or quoted glob patterns; participant_id from a BIDS "
                           "sub-<label> in the file name, else the file name")
    parser.add_argument("--out", required=True,
                        help=f"with --cohort: .npy, [N, D] float32 in participants.tsv order; with --images: "
                             f"{', '.join(FEATURE_FORMATS)} (.parquet needs pyarrow; .npy gets <stem>.ids.tsv), one "
                             "row per image: participant_id, feature_000 ... (D = 512 for the paper's ResNet-18)")
    parser.add_argument("--voxel-size", type=float, choices=sorted(GRIDS), default=1.5,
                        help="with --images: the grid the encoder was trained on, in mm (default 1.5: CAT12, the "
                             "released weights; 3.0: this project's CPU-sized encoders); maps are resampled to it")
    parser.add_argument("--batch-size", type=int_at_least(1), default=8, help="volumes per forward pass")
    parser.add_argument("--device", default="auto", help="auto (a GPU if there is one), cpu, cuda or cuda:<index>")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=False,
                        help="bf16 autocast (default: fp32, the same numbers on every machine)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the encoder with frozen weights (worth it for large cohorts; "
                             "--cohort only)")


def check_features_path(out: Path, overwrite: bool, protected: list[Path]) -> None:
    """Refuse a cohort's --out that would destroy something: a folder, an input (the checkpoint, a file of the
    cohort), a file without the .npy suffix, or an existing file unless `overwrite`."""
    check_features_out(out, overwrite, protected, formats=(".npy",), sidecar=False)


def checkpoint_of(args: argparse.Namespace) -> str:
    """The checkpoint the flags name: --checkpoint as given, or --released D [--fold F] as 'released:D:F'.

    A released spec is parsed here, so a mistyped one is refused before any image or cohort is read.
    """
    if args.fold is not None and not args.released:
        raise ValueError("--fold selects one of the released weights; with --checkpoint the file is the fold")
    checkpoint = f"released:{args.released}:{args.fold or 0}" if args.released else args.checkpoint
    if is_released_spec(checkpoint):
        parse_released_spec(checkpoint)
    return checkpoint


def run(args: argparse.Namespace) -> int:
    checkpoint = checkpoint_of(args)
    resolve_device(args.device)
    inputs = [] if is_released_spec(checkpoint) else [Path(checkpoint)]
    if args.images:
        return run_images(args, checkpoint, inputs)
    check_features_path(Path(args.out), args.overwrite, [Path(args.cohort), *inputs])
    cohort = Cohort.open(args.cohort)                  # before the model: a bad cohort costs no download
    model = load_checkpoint(checkpoint)
    features = embed_cohort(model, cohort, batch_size=args.batch_size, device=args.device, amp=args.amp,
                            compile=args.compile)
    print(f"wrote {save_features(args.out, features)}: {features.shape[0]} subjects x {features.shape[1]} features")
    return 0


def run_images(args: argparse.Namespace, checkpoint: str, inputs: list[Path]) -> int:
    """`anatcl embed --images`: check the output path, then every map's id and header, then load and embed."""
    if args.compile:
        raise ValueError("--compile: only with --cohort (maps are read in small batches; compiling would not pay)")
    out = check_features_out(Path(args.out), args.overwrite, inputs)
    grid = GRIDS[args.voxel_size]
    maps = inspect_maps(find_images(args.images), grid)    # before the model: a bad map costs no download
    model = load_checkpoint(checkpoint)
    features = embed_maps(model, maps, batch_size=args.batch_size, device=args.device, amp=args.amp,
                          voxel_size=args.voxel_size)
    write_features(out, [m.participant_id for m in maps], features)
    resampled = sum(not m.on_grid for m in maps)
    note = f" ({resampled} resampled to the {args.voxel_size:g} mm grid {list(grid[0])})" if resampled else ""
    print(f"wrote {out}: {features.shape[0]} images{note} x {features.shape[1]} encoder features")
    return 0
