"""Pretraining-step and embedding throughput: the engine's path against a plain fp32 loop over the authors' model.

Side by side in one process, on synthetic grey-matter-like volumes of the real grid (121 x 145 x 121 by default;
the engine crops them to 121 x 128 x 121, `training_crop`):

  training   volumes/s of one optimiser step on `--batch` subjects x 2 views.
             plain   the authors' `anatcl.models.SupConResNet("resnet18")`, contiguous fp32, two fixed slice crops
                     of the training-crop size (no augmentation), `anatcl_core.losses.anatcl_loss` ("local"), Adam.
             engine  `anatcl_core.pretrain.train_step`, the loop body of `pretrain`: `TrainingSet.volumes` (host array,
                     or fp16 on the GPU with `resident`), `make_views` augmentation on the device,
                     channels_last_3d (`cl`), bf16 autocast (`bf16`), `torch.compile` (`compile`),
                     `compute_loss` with method anatcl-local, Adam (the released lr / weight decay).
             Both losses are the same function; only the model path (and the engine's augmentation, which the
             plain loop does not do, so the comparison is conservative for the engine) differs.
  embedding  volumes/s of inference on `--batch` volumes per batch: `anatcl_core.embed.embed_volumes` against a
             plain fp32 `torch.no_grad()` loop over the authors' encoder on the same centre crops, and the cosine
             similarity of every variant's embeddings to that fp32 reference (min over subjects).

All models start from the same weights (the authors' module, its BatchNorm statistics set on one batch so
that eval-mode features are normalised, loaded into `AnatCLModel`, whose keys are the same). Each variant is
warmed up (`--warmup` steps, excluded), then repetitions are taken round-robin over the variants (so load drift
on a shared machine hits all of them alike) and the median is reported.

Variants are '-'-joined tokens: fp32|bf16, cl (channels_last_3d), compile (torch.compile), resident (volumes
held on the GPU in fp16; CUDA only). `resident` is an option of the pretraining engine only, so it is skipped
for embedding; `compile` is `torch.compile` of the training step, and of the encoder with frozen weights
(BatchNorm folded) for `embed_volumes`. Compilation happens in the warm-up, which is not timed.

    python benchmarks/bench_pretrain.py                                # CPU: fp32, fp32-cl, fp32-cl-compile, bf16-cl (~30 min on
                                                                       # 2 shared cores, see RESULTS.md)
    python benchmarks/bench_pretrain.py --device cuda --batch 32       # GPU: adds compile and resident data

On a CPU without native bf16 (AVX2 only) bf16 is emulated and runs 6-50x slower than fp32 (worse on larger
grids), so by default the bf16 variants run at the smaller `--bf16-grid` (25 x 29 x 25) with `--bf16-repeats 1`,
next to their own plain fp32 reference at that grid. There layer4's output is a single voxel, which makes the
bf16 cosine pessimistic (0.94 at 25 x 29 x 25 against ~0.9998 at 41 x 49 x 41 and 61 x 73 x 61 in RESULTS.md). The "projected pretraining" column is 300 epochs x 3,227 OpenBHB training subjects
x 2 views / (measured volumes/s): the paper reports ~10 h on 4 V100; the goal on one H100 is under 1 h. Use
`--batch 32` on a GPU to match the paper's global batch.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import os
import platform
import statistics
import sys
import time
import types
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from anatcl.models import SupConResNet
from anatcl_core.anatomy import RangeNormaliser, select_measures
from anatcl_core.data.augment import center_crop
from anatcl_core.embed import embed_volumes
from anatcl_core.encoder import AnatCLModel
from anatcl_core.losses import anatcl_loss
from anatcl_core.precision import has_native_bf16, use_bf16
from anatcl_core.data.augment import training_crop
from anatcl_core.data.batches import TrainingSet, epoch_plan, make_views, step_generator
from anatcl_core.pretrain import PretrainConfig, train_step

PAPER_EPOCHS, PAPER_SUBJECTS, PAPER_VIEWS = 300, 3227, 2
PAPER_GRID = (121, 145, 121)                      # the projection is only meaningful at the real grid
PAPER_HOURS, TARGET_HOURS = 10.0, 1.0            # ~10 h on 4 V100 (paper); goal: < 1 h on one H100
TOKENS = {"fp32", "bf16", "cl", "compile", "resident"}


@dataclass(frozen=True)
class Variant:
    name: str
    bf16: bool
    channels_last: bool
    compile: bool
    resident: bool

    @classmethod
    def parse(cls, name: str) -> "Variant":
        tokens = name.split("-")
        unknown = set(tokens) - TOKENS
        precision = [t for t in tokens if t in ("fp32", "bf16")]
        if unknown or len(precision) != 1:
            raise argparse.ArgumentTypeError(f"variant {name!r}: expected fp32|bf16 plus any of cl, compile, "
                                             f"resident joined by '-' (e.g. bf16-cl-compile)")
        return cls(name, precision[0] == "bf16", "cl" in tokens, "compile" in tokens, "resident" in tokens)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def loadavg() -> str:
    try:
        with open("/proc/loadavg", encoding="ascii") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


# ----------------------------------------------------------------------------- data and weights

def synthetic_volumes(n: int, grid: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """[n, X, Y, Z] float32 in [0, 1]: smooth random fields inside an ellipsoid (a GM-map-like input)."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand((n, 1, *(max(2, s // 8) for s in grid)), generator=gen)
    field = F.interpolate(coarse, size=grid, mode="trilinear", align_corners=False)[:, 0]
    axes = [torch.linspace(-1, 1, s) for s in grid]
    xx, yy, zz = torch.meshgrid(*axes, indexing="ij")
    mask = (xx ** 2 + yy ** 2 + zz ** 2 < 0.8).float()
    return (field * mask).numpy().astype(np.float32)


def fake_cohort(volumes: np.ndarray, seed: int = 0) -> types.SimpleNamespace:
    """What `TrainingSet` reads from a Cohort: participants.age, roi [N, 7, 68], volumes [N, X, Y, Z]."""
    rng = np.random.default_rng(seed)
    n = len(volumes)
    return types.SimpleNamespace(participants=pd.DataFrame({"age": rng.uniform(6, 86, n)}),
                                 roi=rng.uniform(0.5, 5.0, (n, 7, 68)).astype(np.float32), volumes=volumes)


def reference_weights(volumes: np.ndarray, crop: tuple[int, int, int]) -> dict[str, torch.Tensor]:
    """The authors' ResNet-18 + MLP head (seed 0), BatchNorm running statistics set on 2 volumes of this grid."""
    torch.manual_seed(0)
    model = SupConResNet("resnet18")
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                       # cumulative average: the stats of the calibration batch
    model.train()
    with torch.no_grad():
        model.encoder(center_crop(torch.from_numpy(volumes[:2]).unsqueeze(1), crop).contiguous())
    for m in bns:
        m.momentum = 0.1
    return copy.deepcopy(model.state_dict())


def authors_model(state: dict, device: torch.device) -> SupConResNet:
    model = SupConResNet("resnet18")
    model.load_state_dict(state)
    return model.to(device)


def engine_model(state: dict, device: torch.device, variant: Variant) -> AnatCLModel:
    model = AnatCLModel("resnet18", 128)
    model.load_state_dict(state)                # same keys as the authors' SupConResNet
    model = model.to(device)
    if variant.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    return model


# ----------------------------------------------------------------------------- training steps

class PlainTrainer:
    """fp32, contiguous, the authors' module; two fixed crops per subject (no augmentation), the AnatCL loss."""

    name = "plain fp32 (authors' SupConResNet)"

    def __init__(self, state, cohort, data: TrainingSet, crop, batch, device):
        self.model = authors_model(state, device).train()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4, weight_decay=5e-5)
        self.volumes, self.data, self.crop, self.device = cohort.volumes, data, crop, device
        self.plan = epoch_plan(len(data), batch, 0, 0, 0, 1)
        self.step_index = 0

    def augmentation_seconds(self) -> float:
        return float("nan")                      # fixed crops, no augmentation

    def step(self) -> float:
        positions = self.plan[self.step_index % len(self.plan)]
        self.step_index += 1
        x = torch.from_numpy(np.asarray(self.volumes[positions], dtype=np.float32)).unsqueeze(1).to(self.device)
        cx, cy, cz = self.crop
        slack = x.shape[3] - cy
        views = torch.cat([x[:, :, :cx, :cy, :cz], x[:, :, :cx, slack:slack + cy, :cz]], dim=0).contiguous()
        age, desc = self.data.age[positions].to(self.device), self.data.descriptors[positions].to(self.device)
        out = self.model(views)
        z = out.float().reshape(2, len(positions), -1).transpose(0, 1)
        loss, _ = anatcl_loss(z, age, desc, "local", 2.0, 0.1, 1.0, 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        value = loss.item()
        if not np.isfinite(value):
            raise FloatingPointError("non-finite loss (plain)")
        return value


class EngineTrainer:
    """The engine's own step, `anatcl_core.pretrain.train_step` (one process), for one variant."""

    def __init__(self, variant: Variant, state, cohort, rows, normaliser, crop, batch, device):
        self.variant, self.device, self.crop = variant, device, crop
        self.cfg = PretrainConfig(cohort="(synthetic)", method="anatcl-local", out="(none)", batch_size=batch,
                                  amp=variant.bf16, channels_last=variant.channels_last, compile=variant.compile,
                                  gpu_resident=variant.resident, device=str(device))
        self.name = f"engine {variant.name}"
        self.data = TrainingSet(cohort, rows, normaliser, device, variant.resident and device.type == "cuda")
        self.age_stats = (float(self.data.age.mean()), float(self.data.age.std()))
        self.bf16 = use_bf16(device, self.cfg.amp)
        self.net = engine_model(state, device, variant).train()
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)
        self.step_fn = torch.compile(self.net) if variant.compile else self.net
        self.plan = epoch_plan(len(self.data), batch, self.cfg.seed, 0, 0, 1)
        self.step_index = 0

    def step(self) -> float:
        step = self.step_index
        self.step_index += 1
        pos = self.plan[step % len(self.plan)]
        generator = step_generator(self.cfg.seed, 0, step, 0, self.device)
        value, _ = train_step(self.cfg, self.step_fn, self.optimizer, self.data, self.data.volumes(pos), pos,
                              self.crop, generator, self.age_stats, self.bf16)
        if not np.isfinite(value):
            raise FloatingPointError(f"non-finite loss ({self.name})")
        return value

    def augmentation_seconds(self) -> float:
        """The data part of a step alone (read, augment, memory layout), timed apart from the timed steps."""
        start = time.perf_counter()
        x = self.data.volumes(self.plan[0]).to(self.device)
        views = make_views(x, self.cfg.n_views, self.crop, step_generator(self.cfg.seed, 0, 0, 0, self.device))
        if self.cfg.channels_last:
            views.contiguous(memory_format=torch.channels_last_3d)
        sync(self.device)
        return time.perf_counter() - start


def bench_training(grid, variants, args, device) -> list[dict]:
    crop = training_crop(grid)
    n_subjects = 2 * args.batch                  # two distinct batches alternate
    volumes = synthetic_volumes(n_subjects, grid)
    cohort = fake_cohort(volumes)
    rows = np.arange(n_subjects)
    normaliser = RangeNormaliser().fit(select_measures(torch.as_tensor(cohort.roi, dtype=torch.float32)))
    state = reference_weights(volumes, crop)
    host_data = TrainingSet(cohort, rows, normaliser, torch.device("cpu"), False)
    trainers = [PlainTrainer(state, cohort, host_data, crop, args.batch, device)]
    trainers += [EngineTrainer(v, state, cohort, rows, normaliser, crop, args.batch, device) for v in variants]
    repeats = args.bf16_repeats if any(v.bf16 for v in variants) and args.bf16_repeats else args.repeats
    for t in trainers:
        for i in range(args.warmup):
            seconds = timed(t.step, device)
            log(f"train {grid} {t.name}: warm-up {i + 1}/{args.warmup} {seconds:.1f} s")
    times = {t.name: [] for t in trainers}
    augs = {t.name: [] for t in trainers}
    for r in range(repeats):
        for t in trainers:
            seconds = timed(t.step, device)
            times[t.name].append(seconds)
            augs[t.name].append(t.augmentation_seconds())
            log(f"train {grid} {t.name}: repeat {r + 1}/{repeats} {seconds:.1f} s (augmentation {augs[t.name][-1]:.2f} s)")
    volumes_per_step = args.batch * 2
    plain = statistics.median(times[trainers[0].name])
    out = []
    for t in trainers:
        med = statistics.median(times[t.name])
        vps = volumes_per_step / med
        out.append({"part": "training", "grid": grid, "crop": crop, "variant": t.name, "repeats": repeats,
                    "seconds": med, "all_seconds": times[t.name], "aug_seconds": statistics.median(augs[t.name]),
                    "volumes_per_s": vps, "speedup": plain / med,
                    "projected_h": PAPER_EPOCHS * PAPER_SUBJECTS * PAPER_VIEWS / vps / 3600})
    del trainers
    return out


# ----------------------------------------------------------------------------- embedding

def plain_embed(model: SupConResNet, volumes: np.ndarray, crop, batch: int, device: torch.device) -> np.ndarray:
    features = np.empty((len(volumes), 512), dtype=np.float32)
    with torch.no_grad():
        for start in range(0, len(volumes), batch):
            block = np.asarray(volumes[start:start + batch], dtype=np.float32)
            x = center_crop(torch.from_numpy(block).unsqueeze(1).to(device), crop).contiguous()
            features[start:start + len(block)] = model.encoder(x).cpu().numpy()
    return features


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    cos = (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1))
    return float(cos.min())


def bench_embedding(grid, variants, args, device) -> list[dict]:
    crop = training_crop(grid)
    volumes = synthetic_volumes(args.embed_subjects, grid, seed=1)
    state = reference_weights(volumes, crop)
    plain = authors_model(state, device).eval()
    runners = [("plain fp32 (authors' encoder, no_grad)", lambda: plain_embed(plain, volumes, crop, args.batch, device))]
    for v in variants:
        model = engine_model(state, device, v)
        runners.append((f"engine embed_volumes {v.name}",
                        lambda m=model, v=v: embed_volumes(m, volumes, batch_size=args.batch, device=str(device),
                                                           amp=v.bf16, channels_last=v.channels_last, crop=crop,
                                                           compile=v.compile, progress=False)))
    repeats = args.bf16_repeats if any(v.bf16 for v in variants) and args.bf16_repeats else args.embed_repeats
    features = {}
    for name, fn in runners:
        for i in range(args.warmup):
            seconds = timed(lambda: features.__setitem__(name, fn()), device)
            log(f"embed {grid} {name}: warm-up {i + 1}/{args.warmup} {seconds:.1f} s")
    times = {name: [] for name, _ in runners}
    for r in range(repeats):
        for name, fn in runners:
            seconds = timed(lambda: features.__setitem__(name, fn()), device)
            times[name].append(seconds)
            log(f"embed {grid} {name}: repeat {r + 1}/{repeats} {seconds:.1f} s")
    reference = features[runners[0][0]]
    plain_s = statistics.median(times[runners[0][0]])
    out = []
    for name, _ in runners:
        med = statistics.median(times[name])
        out.append({"part": "embedding", "grid": grid, "crop": crop, "variant": name, "repeats": repeats,
                    "seconds": med, "all_seconds": times[name], "volumes_per_s": len(volumes) / med,
                    "speedup": plain_s / med, "min_cosine": min_cosine(features[name], reference)})
    return out


# ----------------------------------------------------------------------------- report

def fmt_grid(grid, crop) -> str:
    return f"{'x'.join(map(str, grid))} (crop {'x'.join(map(str, crop))})"


def print_tables(rows: list[dict], device: torch.device, default_name: str) -> None:
    train = [r for r in rows if r["part"] == "training"]
    embed = [r for r in rows if r["part"] == "embedding"]
    if train:
        print("\n**Training step** (batch of subjects x 2 views; median seconds per step, warm-up excluded)\n")
        print("| grid | path | reps | s/step (each rep) | augmentation s | volumes/s | vs plain | projected pretraining |")
        print("|---|---|---|---|---|---|---|---|")
        for r in train:
            aug = "-" if np.isnan(r["aug_seconds"]) else f"{r['aug_seconds']:.2f}"
            mark = " (engine default here)" if r["variant"] == f"engine {default_name}" else ""
            each = ", ".join(f"{s:.1f}" for s in r["all_seconds"])
            projected = f"{r['projected_h']:,.1f} h" if r["grid"] == PAPER_GRID else "- (not the paper's grid)"
            print(f"| {fmt_grid(r['grid'], r['crop'])} | {r['variant']}{mark} | {r['repeats']} | {r['seconds']:.2f} "
                  f"({each}) | {aug} | {r['volumes_per_s']:.3f} | {r['speedup']:.2f}x | {projected} |")
    if embed:
        print(f"\n**Embedding** (inference, batch {embed[0].get('batch', '')}; median seconds per pass over the "
              "subjects, warm-up excluded; cosine: min over subjects vs the plain fp32 reference at the same grid)\n")
        print("| grid | path | reps | s/pass (each rep) | volumes/s | vs plain | min cosine vs fp32 |")
        print("|---|---|---|---|---|---|---|")
        for r in embed:
            mark = " (engine default here)" if r["variant"] == f"engine embed_volumes {default_name}" else ""
            each = ", ".join(f"{s:.1f}" for s in r["all_seconds"])
            print(f"| {fmt_grid(r['grid'], r['crop'])} | {r['variant']}{mark} | {r['repeats']} | {r['seconds']:.2f} "
                  f"({each}) | {r['volumes_per_s']:.3f} | {r['speedup']:.2f}x | {r['min_cosine']:.6f} |")
    full = [r for r in train if r["variant"].startswith("engine") and r["grid"] == PAPER_GRID]
    if full:
        best = max(full, key=lambda r: r["volumes_per_s"])
        print(f"\nProjected pretraining (paper: {PAPER_EPOCHS} epochs x {PAPER_SUBJECTS:,} subjects x {PAPER_VIEWS} "
              f"views = {PAPER_EPOCHS * PAPER_SUBJECTS * PAPER_VIEWS:,} volumes): fastest engine variant "
              f"'{best['variant']}' at {fmt_grid(best['grid'], best['crop'])}: {best['projected_h']:,.1f} h on this "
              f"{device.type} (paper: ~{PAPER_HOURS:g} h on 4 V100; goal on one H100: < {TARGET_HOURS:g} h"
              + (", met" if best["projected_h"] < TARGET_HOURS else ", not met") + ")."
              + ("" if device.type == "cuda" else " A CPU projection is for scale only; the goal concerns a GPU."))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="121,145,121", help="X,Y,Z of the input volumes (default: CAT12 1.5 mm)")
    parser.add_argument("--batch", type=int, default=8, help="subjects per training step / volumes per embedding "
                        "batch (the paper's global batch is 32)")
    parser.add_argument("--repeats", type=int, default=2, help="timed training steps per variant (median reported)")
    parser.add_argument("--embed-repeats", type=int, default=3, help="timed embedding passes per variant")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps per variant (default 1; 3 on cuda)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--variants", default=None,
                        help="comma-separated, tokens fp32|bf16, cl, compile, resident "
                             "(default cpu: fp32,fp32-cl,fp32-cl-compile,bf16-cl; cuda: fp32,fp32-cl,bf16,bf16-cl,bf16-cl-compile,"
                             "bf16-cl-compile-resident)")
    parser.add_argument("--bf16-grid", default=None, help="grid for bf16 variants (default: --grid, except "
                        "25,29,25 on a CPU without native bf16, where a full-size bf16 step takes many minutes)")
    parser.add_argument("--bf16-repeats", type=int, default=None, help="repetitions for bf16 variants (default: "
                        "as the others; 1 on a CPU without native bf16)")
    parser.add_argument("--parts", default="training,embedding", help="training, embedding or both")
    parser.add_argument("--embed-subjects", type=int, default=None, help="volumes embedded per pass (default --batch)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    cuda = device.type == "cuda"
    native_bf16 = has_native_bf16(device)
    args.warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    args.embed_subjects = args.embed_subjects or args.batch
    default_variants = ("fp32,fp32-cl,bf16,bf16-cl,bf16-cl-compile,bf16-cl-compile-resident" if cuda
                        else "fp32,fp32-cl,fp32-cl-compile,bf16-cl")
    variants = [Variant.parse(v) for v in (args.variants or default_variants).split(",") if v]
    if not cuda and any(v.resident for v in variants):
        log("'resident' variants need CUDA (the engine holds volumes on the GPU only): skipped")
        variants = [v for v in variants if not v.resident]
    grid = tuple(int(s) for s in args.grid.split(","))
    bf16_grid = tuple(int(s) for s in args.bf16_grid.split(",")) if args.bf16_grid else (
        grid if native_bf16 else (25, 29, 25))
    if args.bf16_repeats is None and not native_bf16:
        args.bf16_repeats = 1                 # emulated bf16; None: each part's own repeats
    groups: dict[tuple, list[Variant]] = {}
    for v in variants:
        groups.setdefault(bf16_grid if v.bf16 else grid, []).append(v)
    parts = set(args.parts.split(","))
    default_name = "fp32-cl"   # PretrainConfig / embed_volumes defaults (anatcl_core.precision)

    header = (f"torch {torch.__version__}, python {platform.python_version()}, device {device}"
              + (f" ({torch.cuda.get_device_name(device)})" if cuda else
                 f" (cpu capability {torch.backends.cpu.get_cpu_capability()}, {args.threads} threads)")
              + f", native bf16: {native_bf16}, batch {args.batch}, warm-up {args.warmup}, repeats {args.repeats}"
              + f" (embedding {args.embed_repeats}, bf16 {args.bf16_repeats or 'same'})")
    print(f"# bench_pretrain {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"command: python {' '.join([os.path.relpath(__file__)] + sys.argv[1:])}")
    print(header)
    print(f"load average before: {loadavg()}")
    start = time.perf_counter()
    rows = []
    for g, vs in groups.items():
        names = ",".join(v.name for v in vs)
        if "training" in parts:
            log(f"training at {g}: plain + {names}")
            rows += bench_training(g, vs, args, device)
        if "embedding" in parts:
            embed_vs = [v for v in vs if not v.resident]
            if len(embed_vs) < len(vs):
                log("embedding: resident variants skipped (embed_volumes reads its volumes from the cohort)")
            if embed_vs:
                log(f"embedding at {g}: plain + {','.join(v.name for v in embed_vs)}")
                rows += bench_embedding(g, embed_vs, args, device)
    for r in rows:
        r["batch"] = args.batch
    rows.sort(key=lambda r: (r["part"] != "training",))
    print_tables(rows, device, default_name)
    print(f"\nload average after: {loadavg()}; total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
