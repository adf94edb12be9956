"""How much each pretraining method learns in a CPU budget: brain-age MAE of a linear probe on its frozen features.

    python benchmarks/bench_learning.py                  # the default book's setting (~10 min on 2 cores)
    python benchmarks/bench_learning.py --augment strong # the same with our augmentations
    python benchmarks/bench_learning.py --width 64 --epochs 3 --batch 8 --max-steps 6 --lr 1e-4   # the old default

Pretrains every method on the synthetic OpenBHB cohort and checks it as chapter 4 does, with the same calls
(`anatcl_core.experiments.pretrain_methods`, then `age_check`): it embeds every subject with the frozen encoder, fits a ridge (standardised features, alpha by leave-one-out on the
training rows only) on the subjects that pretraining saw, and scores the others: the held-out fold of the
training split and OpenBHB's internal and external test sets. Two references bracket the methods: an
untrained encoder of the same width and seed ("random init"), and always answering the training median.
The 95% intervals are bootstraps over the scored subjects: of each MAE, and, paired (the same resampled
subjects for both), of each method's MAE minus SimCLR's; an interval below zero means the method predicts age
better than SimCLR on these subjects. Runs resume: a rerun with the same `--out` re-scores finished runs
without retraining (pretraining seconds come from their metrics.csv). Results go to
`<out>/<setting>/learning.csv`; the ones quoted by the book are in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import torch

from anatcl_core.data.augment import AUGMENTATIONS
from anatcl_core.data.synthetic import ensure_synthetic_data
from anatcl_core.experiments import age_check, pretrain_methods, run_dir
from anatcl_core.methods import method_ids
from anatcl_core.precision import apply_reproducible_cpu_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="_build/data/synthetic-3mm-160",
                        help="synthetic cohorts (generated here if missing)")
    parser.add_argument("--n-subjects", type=int, default=160)
    parser.add_argument("--out", default="_build/bench-learning")
    parser.add_argument("--methods", default=",".join(method_ids()))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-steps", type=int, default=0, help="cap on steps per epoch (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--augment", default="none", choices=list(AUGMENTATIONS),
                        help="augmentation recipe of the views (anatcl_core.data.augment.AUGMENTATIONS)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    apply_reproducible_cpu_env()            # the book's kernels, so its chapter 4 and this agree on any CPU kind
    torch.set_num_threads(args.threads)

    ensure_synthetic_data(args.data_root, args.n_subjects, 3.0, args.seed)
    out = Path(args.out) / f"w{args.width}-e{args.epochs}-b{args.batch}-lr{args.lr:g}-s{args.seed}-{args.augment}"
    methods = args.methods.split(",")
    pretrain_methods(args.data_root, out, methods, fold=0, width=args.width, epochs=args.epochs,
                     batch_size=args.batch, lr=args.lr, max_steps_per_epoch=args.max_steps, seed=args.seed,
                     augment=args.augment, progress=False)
    table = age_check(args.data_root, out, methods, fold=0, seed=args.seed)
    table["pretraining_s"] = [pd.read_csv(run_dir(out, name, 0) / "metrics.csv")["seconds"].sum()
                              if name in methods else 0.0 for name in table.index]
    setting = dict(width=args.width, epochs=args.epochs, batch=args.batch, lr=args.lr, max_steps=args.max_steps,
                   seed=args.seed, augment=args.augment, n_train=table.attrs["n_train"], n_test=table.attrs["n_test"])
    table.assign(**setting).to_csv(out / "learning.csv")
    print(json.dumps(setting))
    print(table.to_markdown(floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
