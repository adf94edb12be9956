"""When does anatomy help? AnatCL against y-Aware in worlds where healthy anatomy does or does not vary along disease.

    python benchmarks/bench_anatomy.py            # both worlds, seeds 0-2, five methods (about 1 h on 2 cores)
    python benchmarks/bench_anatomy.py --quick    # one world, one seed, small and short (2.4 min, 118 CPU-s, on 2 shared cores)

PREDICTION, stated before the first full run (committed with this script, before any result):
  AnatCL (local and global) beats y-Aware on diagnosis (AD vs controls, schizophrenia vs controls) in the
  aligned world and not in the orthogonal one. Reason: its anatomical term pulls together healthy subjects
  whose descriptors agree; where healthy people differ along the disease axes that teaches the encoder those
  axes, where they never do it teaches axes no patient departs along. Age (MAE) should not separate them.
  A caveat written down beforehand: the paper's cosine weights are nearly uniform (book chapter 3), so the
  anatomical term may carry too little contrast to matter in either world; the RBF weighting on descriptor
  distance (`anatcl-rbf`, an extension, not the paper's) is there to tell "anatomy does not help" from "this
  weighting is too flat to say".

The design is `anatcl_core.anatomy_experiment` (the book's chapter "When does anatomy help?" runs its quick
version live): two worlds that differ only in `alignment` (`anatcl_core.data.synthetic.world`), the fraction of
the healthy between-subject variation in regional thickness and area that lies in the span of the four disease
patterns (0: orthogonal, 0.8: aligned; the default book's world has about 0.39). Both are sized so that a linear
probe on the Desikan table itself clearly separates patients (disease effects x EFFECT_GAIN, 400 subjects per
clinical cohort); pretraining cohort and budget are the default book's chapter 4 (160 OpenBHB-like subjects,
width 16, 15 epochs, batch 16). Every method is compared with y-Aware on the same subjects: the paired bootstrap
over subjects, averaged over seeds, with the smallest difference the design detects (80 % power, 5 % two-sided).

Outputs: <out>/<world>-s<seed>/ (data, runs, embeddings, predictions.npz; a rerun resumes), and in --results
(default benchmarks/results; <out> for --quick): anatomy.csv (world, method, seed, task, metric, score, n),
anatomy_paired.csv (differences from y-Aware), anatomy_worlds.csv (measured alignment of each world),
anatomy_contrast.csv (how discriminative each weighting is, synthetic and the 20 real ENIGMA subjects),
anatomy_timings.csv and anatomy_setting.json.
"""
from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

import torch

from anatcl_core.anatomy_experiment import AnatomyDesign, run_anatomy_experiment, write_results
from anatcl_core.precision import apply_reproducible_cpu_env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one world, one seed, small cohorts, 2 epochs")
    parser.add_argument("--out", default=None, help="work folder (default _build/bench-anatomy[-quick])")
    parser.add_argument("--results", default=None, help="where the CSVs go (default benchmarks/results; --quick: out)")
    full, quick = AnatomyDesign(), AnatomyDesign.quick()
    for f in fields(AnatomyDesign):
        kind = str if isinstance(getattr(full, f.name), tuple) else int
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=None,
                            help=f"default {getattr(full, f.name)!r} ({getattr(quick, f.name)!r} with --quick)"
                                 + ("; comma-separated" if kind is str else ""))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    changes = {}
    for f in fields(AnatomyDesign):
        value = getattr(args, f.name)
        if value is not None:
            changes[f.name] = tuple(int(v) if f.name == "seeds" else v for v in value.split(",")) \
                if isinstance(value, str) else value
    try:
        design = AnatomyDesign.quick(**changes) if args.quick else AnatomyDesign(**changes)
    except ValueError as error:
        parser.error(str(error))
    apply_reproducible_cpu_env()
    torch.set_num_threads(args.threads)
    out = Path(args.out or ("_build/bench-anatomy-quick" if args.quick else "_build/bench-anatomy"))
    tables = run_anatomy_experiment(design, out, log=lambda line: print(line, flush=True))
    write_results(tables, design, args.results or (out if args.quick else "benchmarks/results"))
    print(tables["anatomy_paired"].to_markdown(index=False, floatfmt=".2f"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
