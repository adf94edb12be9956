"""How much each pretraining method learns in a CPU budget: brain-age MAE of a linear probe on its frozen features.

    python benchmarks/bench_learning.py                       # the default book's setting (~12 min on 2 cores)
    python benchmarks/bench_learning.py --width 64 --epochs 3 --batch 8 --max-steps 6   # the old ResNet-18 default

Pretrains every method on the synthetic OpenBHB cohort with the book's engine (`anatcl_core.pretrain`), embeds
every subject with the frozen encoder, fits a ridge (standardised features, alpha by leave-one-out on the
training rows only) on the subjects that pretraining saw, and scores the others: the held-out fold of the
training split and OpenBHB's internal and external test sets. Two references bracket the methods: an
untrained encoder of the same width and seed ("random init"), and always answering the training median.
The 95% intervals are bootstraps over the scored subjects: of each MAE, and, paired (the same resampled
subjects for both), of each method's MAE minus SimCLR's; an interval below zero means the method predicts age
better than SimCLR on these subjects. Runs resume: a rerun with the same `--out` re-scores finished runs
without retraining (pretraining seconds come from their metrics.csv). Results go to `<out>/learning.csv`; the
ones quoted by the book are in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from anatcl_core.age_probe import compare_encoders
from anatcl_core.book import ensure_synthetic_data
from anatcl_core.checkpoints import load_checkpoint
from anatcl_core.data.cohort import Cohort
from anatcl_core.data.folds import load_or_make_folds, training_rows
from anatcl_core.embed import embed_volumes
from anatcl_core.encoder import AnatCLModel
from anatcl_core.pretrain import METHODS, PretrainConfig, pretrain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="_build/data/synthetic-3mm-160",
                        help="synthetic cohorts (generated here if missing)")
    parser.add_argument("--n-subjects", type=int, default=160)
    parser.add_argument("--out", default="_build/bench-learning")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--max-steps", type=int, default=0, help="cap on steps per epoch (0: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    ensure_synthetic_data(args.data_root, args.n_subjects, 3.0, args.seed)
    cohort_path = Path(args.data_root) / "openbhb"
    cohort = Cohort.open(cohort_path)
    age = cohort.participants["age"].to_numpy(dtype=float)
    train = training_rows(cohort.participants, load_or_make_folds(cohort_path, cohort.participants, 5, args.seed), 0)
    test = np.setdiff1d(np.arange(len(cohort)), train)
    setting = dict(width=args.width, epochs=args.epochs, batch=args.batch, lr=args.lr, max_steps=args.max_steps,
                   seed=args.seed, n_train=len(train), n_test=len(test))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(args.seed)
    encoders = {"random init": (AnatCLModel(width=args.width), 0.0)}
    for method in args.methods.split(","):
        run = out / f"w{args.width}-e{args.epochs}-b{args.batch}-lr{args.lr:g}-s{args.seed}" / method
        cfg = PretrainConfig(cohort=str(cohort_path), method=method, out=str(run), width=args.width,
                             epochs=args.epochs, batch_size=args.batch, lr=args.lr, max_steps_per_epoch=args.max_steps,
                             seed=args.seed, progress=False, resume=True)
        model = load_checkpoint(pretrain(cfg))
        encoders[method] = (model, float(pd.read_csv(run / "metrics.csv")["seconds"].sum()))
    features = {name: embed_volumes(model, cohort.volumes, batch_size=16, progress=False)
                for name, (model, _) in encoders.items()}
    table = compare_encoders(features, age, train, test, reference="simclr", seed=args.seed)
    table["pretraining_s"] = [encoders.get(name, (None, 0.0))[1] for name in table.index]
    table.assign(**setting).to_csv(out / "learning.csv")
    print(json.dumps(setting))
    print(table.to_markdown(floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
