"""Synthetic cohorts that are anatomically real: the book's default data.

One generative model (see data_recipes/synthetic/README.md) in small modules::

  templates   MNI152 GM map and Desikan-Killiany atlas on the CAT12 grid (real templates, cached)
  lifespan    thickness and area lifespan curves
  model       regional baselines, ageing sensitivity, individual-variation structure
  effects     Cohen's d maps of the diagnoses (ENIGMA tables; Alzheimer's pattern)
  latent      sampling the latent anatomy (log factors by cause)
  sites       scanner effects on images and measures
  measures    the Desikan table [N, 7, 68] from the latent anatomy
  render      the modulated GM image of one subject
  phenotypes  clinical scores, anatomy-driven or anatomy-free
  cohorts     the five cohorts' classes, ages, sexes and sites
  generate    putting it together; writing cohorts in the layout of anatcl_core.data.cohort

Command line: `anatcl synth --out DIR [--resolution 3|1.5] [--n-subjects N | --paper-sizes] [--seed S]
[--cohorts NAME ...] [--overwrite]`.
"""
from __future__ import annotations

import argparse

from anatcl_core.data.synthetic.cohorts import COHORTS
from anatcl_core.data.synthetic.generate import (DEFAULT_N_SUBJECTS, DEFAULT_VOXEL_SIZE, SyntheticTables,
                                                 ensure_synthetic_data, render_subject, simulate_tables,
                                                 write_synthetic_cohort, write_synthetic_cohorts)

__all__ = ["COHORTS", "DEFAULT_N_SUBJECTS", "DEFAULT_VOXEL_SIZE", "SyntheticTables", "ensure_synthetic_data",
           "simulate_tables", "render_subject", "write_synthetic_cohort", "write_synthetic_cohorts",
           "add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `anatcl synth`."""
    from anatcl_core.cli import int_at_least
    parser.add_argument("--out", required=True, help="root folder; cohorts are written to OUT/<cohort>/")
    parser.add_argument("--resolution", type=float, choices=(3.0, 1.5), default=DEFAULT_VOXEL_SIZE,
                        help="voxel size in mm: 3 (61x73x61, fast) or 1.5 (121x145x121, the CAT12 grid)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--n-subjects", type=int_at_least(1), default=DEFAULT_N_SUBJECTS,
                      help=f"subjects per cohort (default {DEFAULT_N_SUBJECTS}, the default book's)")
    size.add_argument("--paper-sizes", action="store_true",
                      help="use each cohort's size in the paper (openbhb 3984, adni 1754, ...)")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="random seed (same seed, same files)")
    parser.add_argument("--cohorts", nargs="+", choices=tuple(COHORTS), default=tuple(COHORTS),
                        help="which cohorts to generate (default: all five)")
    parser.add_argument("--dtype", choices=("float16", "float32"), default="float16", help="volume dtype")
    parser.add_argument("--overwrite", action="store_true", help="replace cohorts that already exist")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    """Generate the requested cohorts; print one line per cohort."""
    written = write_synthetic_cohorts(args.out, None if args.paper_sizes else args.n_subjects, args.resolution,
                                      args.seed, tuple(args.cohorts), args.overwrite, args.dtype,
                                      progress=not args.quiet)
    for name, path in written.items():
        print(f"{name}: {'written to ' + str(path) if path else 'exists with these parameters, kept'}")
    return 0
