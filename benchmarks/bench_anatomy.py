"""When does anatomy help? AnatCL against y-Aware in worlds where healthy anatomy does or does not vary along disease.

    python benchmarks/bench_anatomy.py            # both worlds, seeds 0-2, five methods (~1 h on 2 cores)
    python benchmarks/bench_anatomy.py --quick    # one world, one seed, small and short (a few minutes)

PREDICTION, stated before the first full run (committed with this script, before any result):
  AnatCL (local and global) beats y-Aware on diagnosis (AD vs controls, schizophrenia vs controls) in the
  aligned world and not in the orthogonal one. Reason: its anatomical term pulls together healthy subjects
  whose descriptors agree; where healthy people differ along the disease axes that teaches the encoder those
  axes, where they never do it teaches axes no patient departs along. Age (MAE) should not separate them.
  A caveat written down beforehand: the paper's cosine weights are nearly uniform (book chapter 3), so the
  anatomical term may carry too little contrast to matter in either world; the RBF weighting on descriptor
  distance (`anatcl-rbf`, an extension, not the paper's) is there to tell "anatomy does not help" from "this
  weighting is too flat to say".

The design (`anatcl_core.data.synthetic.world`): two worlds that differ only in `alignment`, the fraction of the
healthy between-subject variation in regional thickness and area that lies in the span of the four disease
patterns (0: orthogonal, 0.8: aligned; the default book's world has about 0.39). Both are sized so that a
linear probe on the Desikan table itself clearly separates patients (disease effects x EFFECT_GAIN, 400
subjects in each clinical cohort); the pretraining cohort and budget are the default book's chapter 4
(160 OpenBHB-like subjects, width 16, 15 epochs, batch 16). Per world and seed (cohort, initialisation and
batch order all follow the seed) every method is pretrained on the healthy cohort, frozen, and probed:
  adni/ad-vs-hc, schizconnect/scz-broad   out-of-fold predictions of the book's probe (`paired_probe`),
                                          5 folds shared by every method; balanced accuracy (%)
  openbhb/age                             probe fitted on the pretraining rows, scored on the others; MAE
and compared with y-Aware on the same subjects: the paired bootstrap over subjects, averaged over seeds
(`paired_probe.seed_average`), with the smallest difference the design detects (80 % power, 5 % two-sided).

Outputs: <out>/<world>-s<seed>/ (data, runs, embeddings, predictions.npz, resumable), and in --results
(default benchmarks/results; <out> for --quick): anatomy.csv (world, method, seed, task, metric, score),
anatomy_paired.csv (differences from y-Aware), anatomy_worlds.csv (measured alignment of each world) and
anatomy_contrast.csv (how discriminative each weighting is, synthetic and the 20 real ENIGMA subjects).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anatcl_core.anatomy import RangeNormaliser, select_measures
from anatcl_core.atomic import write_atomic
from anatcl_core.data.cohort import Cohort
from anatcl_core.data.synthetic import write_synthetic_cohorts
from anatcl_core.data.synthetic.model import default_anatomy_model
from anatcl_core.data.synthetic.world import WORLDS, World, measure_alignment
from anatcl_core.experiments import method_embeddings, pretrain_methods, run_dir
from anatcl_core.paired_probe import (held_out_predictions, out_of_fold_predictions, paired_bootstrap,
                                      seed_average)
from anatcl_core.precision import apply_reproducible_cpu_env
from anatcl_core.probe import metric_for, score
from anatcl_core.tasks import TASKS
from anatcl_core.weight_contrast import contrast_table, enigma_descriptors, weightings

EFFECT_GAIN = 2.0
DIAGNOSES = ("adni/ad-vs-hc", "schizconnect/scz-broad")
AGE = "openbhb/age"
REFERENCE = "yaware"
FULL = dict(worlds="orthogonal,aligned", seeds="0,1,2", methods="simclr,yaware,anatcl-local,anatcl-global,anatcl-rbf",
            n_pretrain=160, n_clinical=400, width=16, epochs=15, batch=16, n_boot=2000)
QUICK = dict(worlds="aligned", seeds="0", methods="simclr,yaware,anatcl-local,anatcl-global",
             n_pretrain=64, n_clinical=120, width=8, epochs=2, batch=16, n_boot=200)


def make_world(out: Path, world: str, seed: int, args) -> Path:
    """The three cohorts of one world and seed under out/<world>-s<seed>/data (kept when already there)."""
    root = out / f"{world}-s{seed}" / "data"
    sizes = {"openbhb": args.n_pretrain, "adni": args.n_clinical, "schizconnect": args.n_clinical}
    write_synthetic_cohorts(root, sizes, 3.0, seed, cohorts=tuple(sizes), progress=False,
                            world=World(WORLDS[world], EFFECT_GAIN))
    return root


def predictions(root: Path, work: Path, methods: list[str], seed: int) -> dict:
    """{task: {"y": [n], method: [n] predictions}} of every method and the Desikan table on the three tasks."""
    features = method_embeddings(root, work, [*methods, "desikan-table"], 0, cohort_names=("openbhb", "adni",
                                                                                         "schizconnect"),
                                 progress=False)
    out = {}
    for task_id in DIAGNOSES:
        task = TASKS[task_id]
        rows, y = task.resolve(Cohort.open(root / task.cohort).participants)
        out[task_id] = {"y": y, **{m: out_of_fold_predictions(f[task.cohort][rows], y, task.kind, seed=seed)
                                   for (m, _), f in features.items()}}
    openbhb = Cohort.open(root / "openbhb")
    age = openbhb.participants["age"].to_numpy(float)
    seen = torch.load(run_dir(work, methods[0], 0) / "checkpoint.pth", map_location="cpu",
                      weights_only=True)["rows"].numpy()
    held_out = np.setdiff1d(np.arange(len(openbhb)), seen)
    out[AGE] = {"y": age[held_out], **{m: held_out_predictions(f["openbhb"], age, seen, held_out, "regression", seed)
                                       for (m, _), f in features.items()}}
    return out


def contrast_rows(root: Path, world: str, seed: int) -> pd.DataFrame:
    """Contrast of each weighting on the world's pretraining (training-split) subjects."""
    openbhb = Cohort.open(root / "openbhb")
    train = np.flatnonzero(openbhb.participants["split"].to_numpy() == "train")
    descriptors = select_measures(torch.as_tensor(np.asarray(openbhb.roi)[train], dtype=torch.float64))
    age = torch.tensor(openbhb.participants["age"].to_numpy(float)[train])
    table = contrast_table(weightings(RangeNormaliser().fit_transform(descriptors), age))
    return table.reset_index().assign(data=f"synthetic {world}", seed=seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one world, one seed, small cohorts, 2 epochs")
    parser.add_argument("--out", default=None, help="work folder (default _build/bench-anatomy[-quick])")
    parser.add_argument("--results", default=None, help="where the CSVs go (default benchmarks/results; --quick: out)")
    for name, value in FULL.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                            help=f"default {value!r} ({QUICK[name]!r} with --quick)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    apply_reproducible_cpu_env()
    torch.set_num_threads(args.threads)
    out = Path(args.out or ("_build/bench-anatomy-quick" if args.quick else "_build/bench-anatomy"))
    results = Path(args.results or (out if args.quick else "benchmarks/results"))
    results.mkdir(parents=True, exist_ok=True)
    methods, seeds = args.methods.split(","), [int(s) for s in args.seeds.split(",")]
    if REFERENCE not in methods:
        parser.error(f"--methods must include {REFERENCE}, the reference of every comparison; got {args.methods}")

    scores, boots, worlds, contrasts, timings = [], {}, [], [], []
    for world in args.worlds.split(","):
        if world not in WORLDS:
            parser.error(f"--worlds: unknown {world!r}; expected some of {list(WORLDS)}")
        for seed in seeds:
            started = time.time()
            root = make_world(out, world, seed, args)
            work = out / f"{world}-s{seed}"
            pretrain_methods(root, work, methods, fold=0, width=args.width, epochs=args.epochs,
                             batch_size=args.batch, lr=1e-3, seed=seed, progress=False)
            predicted = predictions(root, work, methods, seed)
            np.savez(work / "predictions.npz", **{f"{t}|{m}": v for t, p in predicted.items() for m, v in p.items()})
            for task_id, p in predicted.items():
                kind = TASKS[task_id].kind
                for method in [m for m in p if m != "y"]:
                    scores.append({"world": world, "method": method, "seed": seed, "task": task_id,
                                   "metric": metric_for(kind), "score": score(kind, p["y"], p[method]),
                                   "n": len(p["y"])})
                    if method != REFERENCE:
                        boots.setdefault((world, task_id, method), []).append(
                            paired_bootstrap(p["y"], p[method], p[REFERENCE], kind, args.n_boot, seed))
            openbhb = Cohort.open(root / "openbhb")
            worlds.append({"world": world, "alignment": WORLDS[world], "seed": seed,
                           **measure_alignment(openbhb.roi, openbhb.participants, default_anatomy_model())})
            contrasts.append(contrast_rows(root, world, seed))
            timings.append({"world": world, "seed": seed, "seconds": round(time.time() - started, 1)})
            print(json.dumps(timings[-1]), flush=True)
    d, age = enigma_descriptors()
    contrasts.append(contrast_table(weightings(d, age)).reset_index().assign(data="ENIGMA example subjects (real)",
                                                                             seed=np.nan))
    paired = pd.DataFrame([{"world": w, "task": t, "metric": metric_for(TASKS[t].kind), "method": m,
                            "minus": REFERENCE, **seed_average(b)} for (w, t, m), b in boots.items()])
    setting = {k: getattr(args, k) for k in FULL} | {"effect_gain": EFFECT_GAIN, "quick": args.quick}
    for name, table in {"anatomy": pd.DataFrame(scores), "anatomy_paired": paired,
                        "anatomy_worlds": pd.DataFrame(worlds), "anatomy_contrast": pd.concat(contrasts),
                        "anatomy_timings": pd.DataFrame(timings)}.items():
        write_atomic(results / f"{name}.csv", lambda f, t=table: t.to_csv(f, index=False, float_format="%.6g"))
    write_atomic(results / "anatomy_setting.json", lambda f: f.write(json.dumps(setting, indent=1).encode()))
    print(json.dumps(setting))
    print(paired.to_markdown(index=False, floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
