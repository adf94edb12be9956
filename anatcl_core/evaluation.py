"""The paper's downstream evaluation: every task of Tables 2-5 probed on every encoder's frozen features.

Example::

    table = evaluate_tasks({("anatcl-global", 0): {"abide1": X_abide}}, {"abide1": participants})
    anatcl probe --checkpoint runs/anatcl-local-fold0/checkpoint.pth --data data/ --out results.csv

OpenBHB tasks are fitted on its training split and scored on both test splits; every other task is
cross-validated (`probe.cross_validate_probe`). The result is one tidy frame, a row per (method,
pretraining fold, task, evaluation), with the reason in `note` when a task could not be scored.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, cpu_count, delayed

from anatcl_core.atomic import check_writable_folder, write_atomic
from anatcl_core.feature_files import check_file, output_files
from anatcl_core.methods import method_in_name
from anatcl_core.probe_protocol import PROTOCOLS, ProbeProtocol, get_protocol
from anatcl_core.probe import (ProbeResult, cross_validate_probe, fit_probe, grid_edge_folds, metric_for,
                               not_evaluable, score, search_notes)
from anatcl_core.probe_cache import ProbeCache
from anatcl_core.probe_folds import plan_folds
from anatcl_core.tasks import TaskColumnError, TaskSpec, select_tasks

log = logging.getLogger(__name__)

OPENBHB_TEST_SPLITS = ("internal_test", "external_test")


def evaluate_openbhb(X: np.ndarray, participants: pd.DataFrame, task: TaskSpec, *, grid: Sequence[float] | None = None,
                     inner_splits: int | None = None, seed: int = 0, n_jobs: int | None = None,
                     protocol: str | ProbeProtocol = "ours", grid_search: bool = False) -> dict[str, ProbeResult]:
    """The paper's OpenBHB protocol: fit on `split == "train"`, score `internal_test` and `external_test`.

    X: [N, d] embeddings of the whole OpenBHB cohort (row i = participants row i).
    Returns {test split name: ProbeResult with one score}.
    """
    protocol = get_protocol(protocol)
    inner_splits = protocol.inner_splits if inner_splits is None else inner_splits
    rows, y = task.resolve(participants)
    split = participants["split"].to_numpy()[rows]
    train = split == "train"
    metric = metric_for(task.kind)
    plan = plan_folds(y[train], task.kind, inner_splits, 1, small_class_repeats=1)
    if not train.any() or plan.problem:
        reason = "no rows with split == 'train'" if not train.any() else f"train split: {plan.problem}"
        return {name: not_evaluable(metric, int((split == name).sum()), reason) for name in OPENBHB_TEST_SPLITS}
    features = np.asarray(X, dtype=np.float64)[rows]
    estimator, chosen = fit_probe(features[train], y[train], task.kind, grid=grid, inner_splits=inner_splits,
                                  seed=seed, n_jobs=n_jobs, protocol=protocol, grid_search=grid_search)
    results = {}
    for name in OPENBHB_TEST_SPLITS:
        test = split == name
        if not test.any():
            results[name] = not_evaluable(metric, 0, f"no rows with split == {name!r}")
            continue
        counts = tuple(int(c) for c in np.bincount(y[test])) if task.kind == "classification" else ()
        params = [np.nan if chosen is None else chosen]
        note = "; ".join([f"fit on {int(train.sum())} train rows, scored on {int(test.sum())} {name} rows"]
                         + search_notes(params, grid, task.kind, inner_splits, protocol))
        results[name] = ProbeResult(metric, (score(task.kind, y[test], estimator.predict(features[test])),),
                                    int(test.sum()), 1, 1, counts, tuple(params), note,
                                    edge_folds=grid_edge_folds(params, grid, task.kind, protocol))
    return results


#: One row per (method, pretraining fold, task, evaluation). score and std: mean and SD (ddof=0) over the
#: `n_scored` test folds; edge_folds: how many of their fits chose C or alpha at an end of the grid;
#: protocol: the probe's (`probe_protocol.PROTOCOLS`).
RESULT_COLUMNS = ("method", "fold", "task", "cohort", "table", "metric", "evaluation", "score", "std", "n_scored",
                  "n", "n_splits", "n_repeats", "class_counts", "evaluable", "edge_folds", "protocol", "note")


def _row(method: str, fold: int, task: TaskSpec, evaluation: str, result: ProbeResult,
         protocol: str) -> dict[str, Any]:
    return {"method": method, "fold": fold, "task": task.id, "cohort": task.cohort, "table": task.table,
            "metric": result.metric, "evaluation": evaluation, "score": result.mean, "std": result.std,
            "n_scored": len(result.scores), "n": result.n_samples, "n_splits": result.n_splits,
            "n_repeats": result.n_repeats, "class_counts": "/".join(map(str, result.class_counts)),
            "evaluable": result.evaluable, "edge_folds": result.edge_folds, "protocol": protocol,
            "note": result.note}


def evaluation_names(task: TaskSpec) -> tuple[str, ...]:
    """The evaluations a task reports: the OpenBHB test splits, or "cv" for a cross-validated task."""
    return OPENBHB_TEST_SPLITS if task.protocol == "openbhb" else ("cv",)


def evaluate_task(X: np.ndarray | None, participants: pd.DataFrame | None, task: TaskSpec, *,
                  groups_column: str | None = None, **probe_options: Any) -> dict[str, ProbeResult]:
    """One task on one embedding matrix X [N, d] of the task's cohort -> {evaluation name: result}.

    Evaluation names: "cv" for cross-validated tasks, the OpenBHB test splits otherwise. A missing
    cohort or embedding, or a participants table without the task's columns, gives not-evaluable results
    that say so.
    """
    metric = metric_for(task.kind)
    names = evaluation_names(task)
    missing = "participants table" if participants is None else "embeddings" if X is None else None
    if missing:
        return {name: not_evaluable(metric, 0, f"no {missing} for cohort {task.cohort!r}") for name in names}
    if len(X) != len(participants):
        raise ValueError(f"task {task.id!r}: {len(X)} embedding rows for {len(participants)} participants rows "
                         f"of cohort {task.cohort!r}; expected row i to describe participant i")
    finite = np.isfinite(np.asarray(X, dtype=float)).all(axis=1)
    if not finite.all():
        ids = participants["participant_id"].to_numpy()[~finite] if "participant_id" in participants else \
            np.flatnonzero(~finite)
        raise ValueError(f"task {task.id!r}: features of cohort {task.cohort!r} are not finite for "
                         f"{', '.join(map(str, ids[:5]))}{' ...' if len(ids) > 5 else ''} ({len(ids)} row(s)); "
                         "expected finite features: check the checkpoint (did its training diverge?)")
    try:
        if task.protocol == "openbhb":
            keep = {k: probe_options[k] for k in ("grid", "inner_splits", "seed", "n_jobs", "protocol", "grid_search")
                    if k in probe_options}
            return evaluate_openbhb(X, participants, task, **keep)
        rows, y = task.resolve(participants)
    except TaskColumnError as err:           # e.g. a cohort imported without the columns this task reads
        return {name: not_evaluable(metric, len(participants), str(err)) for name in names}
    groups = None if groups_column is None else participants[groups_column].to_numpy()[rows]
    return {"cv": cross_validate_probe(np.asarray(X)[rows], y, task.kind, groups, **probe_options)}


def evaluate_tasks(embeddings: Mapping[tuple[str, int], Mapping[str, np.ndarray]],
                   cohorts: Mapping[str, pd.DataFrame], tasks: Iterable[TaskSpec | str] | None = None, *,
                   groups_column: str | None = None, workers: int = 1, cache: str | Path | ProbeCache | None = None,
                   **probe_options: Any) -> pd.DataFrame:
    """Every (method, fold) embedding set x every task -> one tidy DataFrame (columns RESULT_COLUMNS).

    embeddings: {(method id, pretraining fold): {cohort: X [N_cohort, d]}}; cohorts: {cohort: participants};
    tasks: specs or ids (None: all 22); workers: processes probing (method, fold, task) jobs side by side, each
    on one BLAS thread, at most one per CPU core and per probe to run (the same rows whatever the number);
    cache: a folder (or `ProbeCache`) where each probe's results are kept under a hash of its features,
    participants, task, options and code, so a rerun probes only what changed (the same rows either way);
    probe_options: passed to `cross_validate_probe` (n_splits, seed,
    ...). One row per (method, fold, task, evaluation), including not-evaluable ones with the reason in `note`.
    """
    specs = [t if isinstance(t, TaskSpec) else select_tasks([t])[0] for t in (tasks or select_tasks(None))]
    protocol = get_protocol(probe_options.get("protocol", "ours")).name
    # a fresh cache object per call: it hashes each features array once, and the caller may change one in place
    cache = None if cache is None else ProbeCache(cache.root if isinstance(cache, ProbeCache) else cache)
    jobs = [(method, fold, task, embeddings[method, fold].get(task.cohort), cohorts.get(task.cohort))
            for (method, fold) in embeddings for task in specs]
    options = {"groups_column": groups_column, **probe_options}
    keys = [cache.key(X, table, task, options) if cache and X is not None and table is not None else None
            for _, _, task, X, table in jobs]
    found = [cache.load(key, evaluation_names(task)) if key else None for key, (_, _, task, _, _) in zip(keys, jobs)]
    todo = [i for i, results in enumerate(found) if results is None]
    for i in [i for i in todo if jobs[i][3] is None or jobs[i][4] is None]:
        _, _, task, X, table = jobs[i]                  # nothing to probe: reported here, not in a worker
        found[i] = evaluate_task(X, table, task, groups_column=groups_column, **probe_options)
    todo = [i for i in todo if found[i] is None]
    if cache:
        log.info("probe cache %s: %d of %d probes read, %d to run", cache.root, len(jobs) - len(todo), len(jobs),
                 len(todo))
    calls = [delayed(evaluate_task)(X, table, task, groups_column=groups_column, **probe_options)
             for _, _, task, X, table in (jobs[i] for i in todo)]
    # no more processes than probes or CPU cores (each probes on one BLAS thread): none for a cached rerun
    workers = min(workers, len(calls), cpu_count())
    if workers > 1:
        done = Parallel(n_jobs=workers, return_as="generator")(calls)
    else:
        done = (function(*args, **kwargs) for function, args, kwargs in calls)
    for i, results in zip(todo, done):
        method, fold, task = jobs[i][:3]
        log.info("probed %s fold %s: %s", method, fold, task.id)
        found[i] = results
        if keys[i]:
            cache.save(keys[i], results, about=f"{method} fold {fold}, {task.id}")
    rows = [_row(method, fold, task, name, result, protocol)
            for (method, fold, task, _, _), results in zip(jobs, found) for name, result in results.items()]
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


# ----------------------------------------------------------------------------- command line

_SPEC = re.compile(r"^(?P<method>[\w.-]+)(?::(?P<fold>\d+))?=(?P<path>.+)$")


def parse_checkpoint(spec: str) -> tuple[str, int, Path]:
    """'METHOD[:FOLD]=PATH' or 'PATH' -> (method id, fold, path).

    Without a prefix the method is the first path component that is, or starts with, a known method id
    followed by '-' or '_' (so `runs/yaware-fold2/checkpoint.pth`, the layout `anatcl pretrain` writes, is
    yaware fold 2), else the file's folder when the stem says nothing ('checkpoint', 'weights', ...), else the
    stem; the fold is the number in a 'fold<k>' component (else 0).
    """
    match = _SPEC.match(spec)
    if match and not Path(spec).exists():
        return match["method"], int(match["fold"] or 0), Path(match["path"])
    path = Path(spec)
    parts = [p.lower() for p in path.with_suffix("").parts]
    generic = path.stem.lower() in ("checkpoint", "weights", "last", "best", "model")
    fallback = path.parent.name if generic and path.parent.name else path.stem
    method = next((m for p in parts if (m := method_in_name(p))), fallback)
    fold = next((int(m[1]) for p in parts for m in [re.search(r"fold[_-]?(\d+)", p)] if m), 0)
    return method, fold, path


#: The options only the paper's tasks (--checkpoint) read, with their defaults: --features refuses them.
_CHECKPOINT_ONLY = {"tasks": ["all"], "cache": None, "device": "auto", "batch_size": 8, "workers": 1}


def add_arguments(parser: Any) -> None:
    from anatcl_core.cli import int_at_least, path_argument
    parser.description = ("Cross-validated linear probes: the paper's tasks on checkpoints (--checkpoint, --data, "
                          "--out), or any label of your own on a feature file (--features, --labels, --target).")
    parser.add_argument("--checkpoint", nargs="+", metavar="[METHOD[:FOLD]=]PATH",
                        help="encoder checkpoint(s); prefix with e.g. 'anatcl-global:3=' to name method and fold")
    parser.add_argument("--data", type=path_argument, help="folder holding one cohort folder per dataset")
    parser.add_argument("--tasks", nargs="+", default=_CHECKPOINT_ONLY["tasks"], metavar="ID",
                        help="task ids, or 'all' (default)")
    parser.add_argument("--features", type=path_argument, metavar="FILE",
                        help="a feature file of `anatcl embed` (.tsv, .csv, .parquet, .npy + ids) to probe a label on")
    parser.add_argument("--labels", type=path_argument, metavar="FILE",
                        help="with --features: a participants table (.tsv or .csv) with participant_id and the target")
    parser.add_argument("--target", metavar="COLUMN", help="with --features: the labels column to predict")
    parser.add_argument("--kind", choices=("classification", "regression"),
                        help="with --features: the target's kind (default: guessed from its values)")
    parser.add_argument("--groups", metavar="COLUMN",
                        help="with --features: a labels column (e.g. site) whose groups are kept whole within folds")
    parser.add_argument("--out", type=path_argument,
                        help="results CSV: one row per method, fold and task (with --checkpoint, required), or one "
                             "row per test fold (with --features, optional)")
    parser.add_argument("--cache", type=path_argument, default=_CHECKPOINT_ONLY["cache"],
                        help="cache folder of embeddings, and of probe results in its probes/ (default: "
                             "'embedding_cache' beside --out); a rerun embeds and probes only what changed")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="seed of the fold shuffles")
    parser.add_argument("--n-splits", type=int_at_least(2), default=5, help="outer cross-validation folds")
    parser.add_argument("--protocol", choices=tuple(PROTOCOLS), default="ours",
                        help="how the probe is fitted: " + "; ".join(f"{p.name}: {p.description}"
                                                                     for p in PROTOCOLS.values()))
    parser.add_argument("--device", default=_CHECKPOINT_ONLY["device"],
                        help="torch device for embedding ('auto': GPU if present)")
    parser.add_argument("--batch-size", type=int_at_least(1), default=_CHECKPOINT_ONLY["batch_size"],
                        help="volumes per forward pass when embedding")
    parser.add_argument("--workers", type=int_at_least(1), default=_CHECKPOINT_ONLY["workers"],
                        help="processes probing tasks side by side, at most one per CPU core (the same results "
                             "whatever the number)")


_FEATURE_FLAGS = ("labels", "target", "kind", "groups")


def _only(flags: list[str]) -> str:
    """['--tasks'] -> '--tasks only goes'; two or more flags -> '--a, --b only go'."""
    return f"{', '.join(flags)} only {'goes' if len(flags) == 1 else 'go'}"


def _check_mode(args: Any) -> None:
    """One of the two uses, with what it needs; a mix of both is refused before any work."""
    if args.features is not None:
        if args.checkpoint or args.data is not None:
            raise ValueError("--features probes a feature file; --checkpoint/--data probe the paper's tasks: "
                             "give one or the other")
        missing = [f"--{name}" for name in ("labels", "target") if getattr(args, name) is None]
        if missing:
            raise ValueError(f"--features needs {' and '.join(missing)} (the participants table and its column)")
        unused = [f"--{name.replace('_', '-')}" for name, default in _CHECKPOINT_ONLY.items()
                  if getattr(args, name) != default]
        if unused:
            raise ValueError(f"{_only(unused)} with --checkpoint (the paper's tasks); --features probes one label")
        return
    given = [f"--{name}" for name in _FEATURE_FLAGS if getattr(args, name) is not None]
    if given:
        raise ValueError(f"{_only(given)} with --features FILE")
    missing = [flag for flag, value in (("--checkpoint", args.checkpoint), ("--data", args.data),
                                        ("--out", args.out)) if not value]
    if missing:
        raise ValueError(f"expected {', '.join(missing)} (the paper's tasks), or --features, --labels and --target "
                         "(a label of your own)")


def _check_out(out: Path, inputs: Sequence[Path]) -> None:
    """`--out` is a file that can be written and is none of the `inputs`, checked before any probe runs."""
    resolved = Path(out).resolve()
    if resolved.is_dir():
        raise ValueError(f"--out {out}: is a folder; expected a CSV file path (e.g. {Path(out) / 'results.csv'})")
    if resolved.exists() and not resolved.is_file():
        raise ValueError(f"--out {out}: not a regular file (a device or pipe); expected a CSV file path")
    if resolved in {Path(path).resolve() for path in inputs}:
        raise ValueError(f"--out {out}: is one of the input files; write the results elsewhere")
    check_writable_folder(resolved.parent, "--out")


def _cache_folder(folder: Path) -> Path:
    """--cache as a folder, created if missing, checked before any work. Not required to be writable: a full
    cache on read-only storage serves every embedding and probe."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"--cache {folder}: cannot be used as a folder ({err.strerror}); expected a folder path")
    return folder


def run_features(args: Any) -> int:
    """`anatcl probe --features`: one label of the user's, probed on a feature file; fold scores printed."""
    from anatcl_core.feature_probe import probe_feature_file
    if args.out is not None:
        _check_out(args.out, [*output_files(args.features), args.labels])    # a .npy's ids file too
    result, folds = probe_feature_file(args.features, args.labels, args.target, args.kind, args.groups,
                                       n_splits=args.n_splits, seed=args.seed, protocol=args.protocol)
    if args.out is not None:                 # written before anything is printed: a reader that quits early (| head)
        write_atomic(args.out, lambda f: folds.to_csv(f, index=False))    # does not cost the file
    unit = "%" if result.metric == "balanced_accuracy" else f" ({args.target}'s unit)"
    if result.evaluable:
        print(f"{args.target}: {result.metric} {result.mean:.2f}{unit} +/- {result.std:.2f} (SD over "
              f"{len(result.scores)} test folds), {result.n_samples} subjects, protocol {args.protocol}")
        print(folds.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    else:
        print(f"{args.target}: {result.note}")
    if result.note and result.evaluable:
        print(f"note: {result.note}")
    if args.out is not None:
        print(f"wrote {args.out}")
    return 0


def run(args: Any) -> int:
    """`anatcl probe`: embed the needed cohorts (cached), run the probes, write the tidy results CSV."""
    _check_mode(args)
    if args.features is not None:
        return run_features(args)
    from anatcl_core.data.cohort import Cohort
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tasks = select_tasks(args.tasks)
    from anatcl_core.precision import resolve_device
    resolve_device(args.device)
    named: dict[tuple[str, int], Path] = {}
    for spec in args.checkpoint:                     # every name checked before anything is embedded or created
        if not spec.strip():
            raise ValueError(f"--checkpoint {spec!r}: expected [METHOD[:FOLD]=]PATH of a checkpoint file")
        method, fold, path = parse_checkpoint(spec)
        check_file(path, "checkpoint file", "a .pth written by anatcl pretrain, or released weights")
        if (method, fold) in named:
            raise ValueError(f"--checkpoint: {named[method, fold]} and {path} both read as method {method!r} fold "
                             f"{fold}; name them as METHOD[:FOLD]=PATH (e.g. {method}-a:{fold}={path})")
        named[(method, fold)] = path
    _check_out(args.out, list(named.values()))
    cache_dir = _cache_folder(args.cache or args.out.parent / "embedding_cache")
    names = list(dict.fromkeys(t.cohort for t in tasks))
    cohorts = {n: Cohort.open(args.data / n) for n in names if (args.data / n).is_dir()}
    for name in sorted(set(names) - set(cohorts)):
        log.warning("no cohort folder %s: its tasks are reported as not evaluable", args.data / name)
    from anatcl_core.embed import EmbeddingCache
    cache = EmbeddingCache(cache_dir, args.batch_size, args.device)
    embeddings = {}
    for (method, fold), path in named.items():
        embeddings[(method, fold)] = cache.embeddings(path, cohorts)
    results = evaluate_tasks(embeddings, {n: c.participants for n, c in cohorts.items()}, tasks,
                             workers=args.workers, cache=cache_dir / "probes", n_splits=args.n_splits,
                             seed=args.seed, protocol=args.protocol)
    write_atomic(args.out, lambda f: results.to_csv(f, index=False))
    shown = results[["method", "fold", "task", "evaluation", "score", "std"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(f"wrote {args.out}")
    return 0
