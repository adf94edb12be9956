"""The paper's experiment as the book runs it: pretrain each method, embed every cohort, probe the tasks.

Everything lives under one `output_dir`, so each chapter reuses what an earlier one produced::

  runs/<method>-fold<k>/   pretraining runs (`run_dir`)
  embeddings/              cached features (`embed.EmbeddingCache`)
  probes/                  cached probe results, keyed by what decides them (`probe_cache.ProbeCache`)
  tables/table<N>.csv      probe results of the paper's Table N (`results_path`), and beside it
  tables/table<N>.settings.json   how they were probed (`table_results`)

Besides the six methods, `methods` may name the authors' released encoders, 'released-global' and
'released-local' (`methods.RELEASED_METHODS`): fold k is their released file of pretraining fold k, read from the
weights cache (`released_home`, else $ANATCL_HOME, else ~/.cache/anatcl; downloaded once when absent). They are
never trained here, and they only read cohorts on the 1.5 mm CAT12 grid they were trained on. And it may name the reference rows of
`methods.BASELINES`: 'random-init' (an encoder of the runs' architecture at its seeded initialisation, saved as
`runs/random-init-fold<k>/`) and 'desikan-table' (`desikan_features` of each cohort, no image at all).

`progress=False` keeps progress bars off (the book's pages); the default shows them.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anatcl_core.age_probe import compare_encoders
from anatcl_core.atomic import write_atomic
from anatcl_core.data.cohort import Cohort
from anatcl_core.encoder import AnatCLModel
from anatcl_core.anatomy import MEASURE_CHANNELS
from anatcl_core.checkpoints import save_checkpoint
from anatcl_core.methods import BASELINES, RELEASED_METHODS, method_ids, released_descriptor
from anatcl_core.pretrain import PretrainConfig, pretrain
from anatcl_core.released import released_path
from anatcl_core.embed import EmbeddingCache
from anatcl_core.evaluation import evaluate_tasks
from anatcl_core.tasks import TaskSpec, tasks_for

COHORT_NAMES = ("openbhb", "adni", "oasis3", "schizconnect", "abide1")


def run_dir(output_dir: str | Path, method: str, fold: int) -> Path:
    return Path(output_dir) / "runs" / f"{method}-fold{fold}"


def pretrain_methods(data_root: str | Path, output_dir: str | Path, methods=method_ids(), fold: int = 0,
                     **overrides) -> dict[str, Path]:
    """Pretrain each method on `<data_root>/openbhb` (resuming where a run stopped) -> {method: checkpoint}.

    `overrides` are PretrainConfig fields (epochs, batch_size, max_steps_per_epoch, seed, ...).
    """
    checkpoints = {}
    for method in methods:
        cfg = PretrainConfig(cohort=str(Path(data_root) / "openbhb"), method=method,
                             out=str(run_dir(output_dir, method, fold)), fold=fold, resume=True, **overrides)
        checkpoints[method] = pretrain(cfg)
    return checkpoints


def ensure_encoders(data_root: str | Path, output_dir: str | Path, methods=method_ids(), fold: int = 0,
                    **overrides) -> dict[str, Path]:
    """The encoders a table chapter needs: each run's checkpoint as it is when one exists (whatever settings
    trained it: the pretraining chapter's, or a batch's), else pretrained now with `overrides`.

    So a chapter run alone in a fresh runtime trains what it needs, and one run after the pretraining chapter
    reuses its encoders without retraining or comparing settings. Returns {method: checkpoint}.
    """
    check_methods(methods)
    trained = [m for m in methods if not released_descriptor(m) and m not in BASELINES]
    found = {m: run_dir(output_dir, m, fold) / "checkpoint.pth" for m in trained}
    missing = [m for m, path in found.items() if not path.exists()]
    if missing:
        found.update(pretrain_methods(data_root, output_dir, missing, fold, **overrides))
    if "random-init" in methods:
        found["random-init"] = untrained_encoder(output_dir, fold, next(iter(found.values()), None),
                                                 overrides.get("width", 64), overrides.get("seed", 0))
    return found


def check_methods(methods) -> None:
    """Refuse an unknown name in `methods` before anything is trained or embedded, naming every kind accepted."""
    known = (*method_ids(extensions=True), *RELEASED_METHODS, *BASELINES)
    unknown = [m for m in methods if m not in known]
    if unknown:
        raise ValueError(f"methods: unknown {unknown}; expected any of the methods {method_ids(extensions=True)}, the released "
                         f"weights {tuple(RELEASED_METHODS)} or the reference rows {tuple(BASELINES)}")


def untrained_encoder(output_dir: str | Path, fold: int, like: Path | None, width: int, seed: int) -> Path:
    """`runs/random-init-fold<k>/checkpoint.pth`: the architecture of `like` (a trained run's checkpoint; else a
    ResNet-18 of `width`) at `torch.manual_seed(seed)`'s initialisation, as the runs start. Written again when
    the file there has another architecture, width or seed (a rerun with other settings)."""
    shape = {"arch": "resnet18", "feat_dim": 128, "width": width}
    if like is not None:
        saved = torch.load(like, map_location="cpu", weights_only=True)
        shape = {k: saved.get(k, default) for k, default in shape.items()}
    path = run_dir(output_dir, "random-init", fold) / "checkpoint.pth"
    if path.exists():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if {k: saved.get(k) for k in shape} == shape and saved.get("seed") == seed:
            return path
    torch.manual_seed(seed)
    return save_checkpoint(path, AnatCLModel(shape["arch"], shape["feat_dim"], shape["width"]), untrained=True,
                           seed=seed)


def desikan_features(cohort: Cohort) -> np.ndarray:
    """[N, 204] float64: log thickness, grey-matter volume and surface area of the 68 Desikan regions."""
    return np.log(np.maximum(cohort.roi[:, list(MEASURE_CHANNELS)].astype(np.float64), 1e-6)).reshape(len(cohort), -1)


def open_cohorts(data_root: str | Path, names=COHORT_NAMES) -> dict[str, Cohort]:
    """The cohorts of `names` that exist under `data_root`."""
    return {n: Cohort.open(Path(data_root) / n) for n in names if (Path(data_root) / n / "meta.json").exists()}


def encoder_checkpoint(output_dir: str | Path, method: str, fold: int, released_home: str | Path | None = None,
                       progress: bool = True) -> Path:
    """The checkpoint file of `method` at pretraining `fold`: the run's (`run_dir`), or for 'released-<d>' the
    authors' file in the weights cache (downloaded once, SHA-256 checked; `released.released_path`)."""
    descriptor = released_descriptor(method)
    if descriptor is not None:
        return released_path(descriptor, fold, released_home, progress=progress)
    checkpoint = run_dir(output_dir, method, fold) / "checkpoint.pth"
    if not checkpoint.exists():
        raise FileNotFoundError(f"{checkpoint}: no pretrained checkpoint for {method} fold {fold}; "
                                "run the pretraining chapter (or anatcl pretrain) first")
    return checkpoint


def check_released_grid(method: str, cohorts: dict[str, Cohort]) -> None:
    """Refuse the released weights on cohorts that are not on the 1.5 mm grid the authors trained them on:
    a CPU-sized 3 mm cohort would give features, but features of inputs the encoder never saw."""
    for name, cohort in cohorts.items():
        sizes = [float(v) for v in cohort.meta["voxel_size_mm"]]
        if not all(abs(v - 1.5) < 1e-3 for v in sizes):
            raise ValueError(f"{cohort.path}: field 'voxel_size_mm' is {sizes}; {method} (the authors' weights) "
                             "was trained on 1.5 mm CAT12 maps: point data_root at 1.5 mm cohorts (data_recipes/ "
                             "for real data, anatcl synth --resolution 1.5 for synthetic) or leave it out of methods")


def method_embeddings(data_root: str | Path, output_dir: str | Path, methods=method_ids(), fold: int = 0,
                      device: str = "auto", batch_size: int = 8, cohort_names=COHORT_NAMES, progress: bool = True,
                      released_home: str | Path | None = None) -> dict[tuple[str, int], dict]:
    """{(method, fold): {cohort: [N, D]}} from the methods' checkpoints (`encoder_checkpoint`; D = 8 x width),
    embedding only what is not cached."""
    check_methods(methods)
    cache = EmbeddingCache(Path(output_dir) / "embeddings", batch_size=batch_size, device=device, progress=progress)
    cohorts = open_cohorts(data_root, cohort_names)
    for method in methods:                     # every refusal before the first download or embedding
        if released_descriptor(method):
            check_released_grid(method, cohorts)
    out = {}
    for method in methods:
        if method == "desikan-table":
            out[(method, fold)] = {name: desikan_features(cohort) for name, cohort in cohorts.items()}
        else:
            out[(method, fold)] = cache.embeddings(encoder_checkpoint(output_dir, method, fold, released_home,
                                                                      progress), cohorts)
    return out


def evaluate_methods(data_root: str | Path, output_dir: str | Path, tasks: list[TaskSpec | str],
                     methods=method_ids(), fold: int = 0, seed: int = 0, n_splits: int = 5, progress: bool = True,
                     released_home: str | Path | None = None, **probe_options) -> pd.DataFrame:
    """Linear probes of every method's frozen features on `tasks` -> tidy results (see evaluation.evaluate_tasks).

    released_home: the weights cache of any 'released-<d>' method (see the module docstring). probe_options go
    to `probe.cross_validate_probe` (e.g. small_class_repeats, grid, inner_splits). Results are kept in
    `<output_dir>/probes` (`probe_cache_dir`): a probe whose features, participants, task, options and code are
    unchanged is read from there, not run again.
    """
    embeddings = method_embeddings(data_root, output_dir, methods, fold, progress=progress,
                                   released_home=released_home)
    participants = {n: c.participants for n, c in open_cohorts(data_root).items()}
    return evaluate_tasks(embeddings, participants, tasks, n_splits=n_splits, seed=seed,
                          cache=probe_cache_dir(output_dir), **probe_options)


def probe_cache_dir(output_dir: str | Path) -> Path:
    """Where probe results are cached (`probe_cache.ProbeCache`): `<output_dir>/probes`."""
    return Path(output_dir) / "probes"


def results_path(output_dir: str | Path, table: int) -> Path:
    """Where the probe results of the paper's Table `table` are kept: `<output_dir>/tables/table<N>.csv`."""
    return Path(output_dir) / "tables" / f"table{table}.csv"


def table_results(data_root: str | Path, output_dir: str | Path, table: int, methods=method_ids(), fold: int = 0,
                  seed: int = 0, n_splits: int = 5, progress: bool = True, released_home: str | Path | None = None,
                  **probe_options) -> pd.DataFrame:
    """Probe results for every task of the paper's Table `table` (2-5) (`evaluate_methods`), saved at
    `results_path`, with `<table>.settings.json` beside it recording how they were probed (seed, n_splits, the
    probe options such as protocol and small_class_repeats). Probes already run on the same features with the
    same settings and code are read from the probe cache, so a rerun costs seconds; both files are replaced
    atomically.
    """
    path = results_path(output_dir, table)
    settings = json.dumps({"seed": seed, "n_splits": n_splits, **probe_options}, sort_keys=True, default=str)
    recorded = path.with_suffix(".settings.json")
    results = evaluate_methods(data_root, output_dir, tasks_for(table), methods, fold, seed, n_splits,
                               progress=progress, released_home=released_home, **probe_options)
    recorded.unlink(missing_ok=True)          # a run killed between the two writes leaves no wrong settings
    write_atomic(path, lambda f: results.to_csv(f, index=False))
    write_atomic(recorded, lambda f: f.write(settings.encode()))
    return results


def age_check(data_root: str | Path, output_dir: str | Path, methods=method_ids(), fold: int = 0, seed: int = 0,
              device: str = "auto", reference: str = "simclr", progress: bool = True) -> pd.DataFrame:
    """Held-out OpenBHB age from every method's frozen features (`age_probe.compare_encoders`).

    The ridge is fitted on the rows the checkpoints were pretrained on (as recorded in them) and scores every
    other subject. Beside the methods: the untrained encoder of the same architecture, initialised like the
    runs (`untrained_encoder`, the table chapters' reference row), and the training median. `reference` is used when it is one of `methods`.
    """
    first = run_dir(output_dir, methods[0], fold) / "checkpoint.pth"
    untrained_encoder(output_dir, fold, first, 64, seed)           # the table chapters' reference row, too
    embeddings = method_embeddings(data_root, output_dir, [*methods, "random-init"], fold, device=device,
                                   cohort_names=("openbhb",), progress=progress)
    openbhb = Cohort.open(Path(data_root) / "openbhb")
    pretrained_rows = torch.load(first, map_location="cpu", weights_only=True)["rows"].numpy()
    features = {"random init": embeddings[("random-init", fold)]["openbhb"]}
    features.update({m: embeddings[(m, fold)]["openbhb"] for m in methods})
    held_out = np.setdiff1d(np.arange(len(openbhb)), pretrained_rows)
    return compare_encoders(features, openbhb.participants["age"].to_numpy(float), pretrained_rows, held_out,
                            reference=reference if reference in methods else None, seed=seed)
