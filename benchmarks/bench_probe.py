"""Wall time of the downstream evaluation: 22 tasks x 6 methods x 5 pretraining folds on cached embeddings.

The embeddings are random (rectified Gaussian, 512-d, float32, like the encoder's pooled features) and
the participants tables are the synthetic cohorts at the paper's sizes (openbhb 3984, adni 1754,
oasis3 685, schizconnect 376, abide1 995), so every task has its real number of subjects and classes.
Embeddings are written once to a cache laid out as `EmbeddingCache` writes them, then read back, so the
timing includes what `anatcl probe` does after embedding.

    python benchmarks/bench_probe.py                      # the full grid, 2 worker processes
    python benchmarks/bench_probe.py --methods simclr --folds 1 --workers 1
    python benchmarks/bench_probe.py --grid-search        # through GridSearchCV and scikit-learn's exact solver
    python benchmarks/bench_probe.py --per-fold a.csv     # no timing: every outer fold's C and score, 1 checkpoint
    python benchmarks/bench_probe.py --compare a.csv b.csv    # how two runs' CSVs (--results or --per-fold) differ
    python benchmarks/bench_probe.py --floor              # no timing of the probe: the least its linear algebra costs
    python benchmarks/bench_probe.py --rerun              # and reruns through the probe cache

The logistic probes of our protocol are solved exactly (`anatcl_core.logistic_path`); before 2026-12-04 they
were lbfgs at tol 1e-4. `--compare` of the two runs' CSVs says how many results that moved.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import os
import platform
import tempfile
import time
from collections import Counter
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.linalg.lapack import dpotrf, spotrf
from threadpoolctl import threadpool_limits

from anatcl_core import logistic_path, probe_search

from anatcl_core.data.synthetic import COHORTS, simulate_tables
from anatcl_core.evaluation import evaluate_task, evaluate_tasks
from anatcl_core.methods import METHOD_LABELS
from anatcl_core.tasks import TASKS

EMBED_DIM = 512


def write_random_embeddings(cache: Path, sizes: dict[str, int], methods: list[str], folds: int, seed: int) -> None:
    """One [N, 512] float32 array per (method, fold, cohort) at cache/<method>-f<fold>/<cohort>.npy."""
    rng = np.random.default_rng(seed)
    for method in methods:
        for fold in range(folds):
            folder = cache / f"{method}-f{fold}"
            folder.mkdir(parents=True, exist_ok=True)
            for cohort, n in sizes.items():
                features = np.maximum(rng.standard_normal((n, EMBED_DIM), dtype=np.float32), 0)
                np.save(folder / f"{cohort}.npy", features)


def probe_one_checkpoint(cache: Path, method: str, fold: int, cohorts: dict[str, pd.DataFrame],
                         seed: int, grid_search: bool = False, probe_cache: Path | None = None,
                         ) -> tuple[pd.DataFrame, float, float, float]:
    """Load one checkpoint's cached embeddings and run all tasks (through `probe_cache` when given).

    Returns (results, load seconds, probe wall seconds, probe CPU seconds of this process); CPU time
    is what the machine's other users cannot inflate.
    """
    start = time.perf_counter()
    features = {c: np.load(cache / f"{method}-f{fold}" / f"{c}.npy") for c in cohorts}
    loaded, cpu = time.perf_counter(), time.process_time()
    results = evaluate_tasks({(method, fold): features}, cohorts, seed=seed, grid_search=grid_search,
                             cache=probe_cache)
    return results, loaded - start, time.perf_counter() - loaded, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=list(METHOD_LABELS), choices=list(METHOD_LABELS))
    parser.add_argument("--folds", type=_positive, default=5, help="pretraining folds (checkpoints) per method")
    parser.add_argument("--workers", type=_positive, default=2, help="processes, one checkpoint each at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=None, help="optional CSV of all probe results")
    parser.add_argument("--grid-search", action="store_true",
                        help="search penalties with scikit-learn's GridSearchCV (the reference) instead of probe_search")
    parser.add_argument("--skip-per-task", action="store_true", help="do not time each task separately")
    parser.add_argument("--rerun", action="store_true",
                        help="probe through a probe cache and time two reruns: nothing changed, and the first "
                             "method's checkpoints changed")
    parser.add_argument("--per-fold", type=Path, default=None,
                        help="instead of timing the grid, write the C chosen and the score of every outer fold of "
                             "every task of the first checkpoint to this CSV")
    parser.add_argument("--floor", action="store_true",
                        help="instead of timing the grid, time the least linear algebra one checkpoint's probes need")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("A", "B"),
                        help="only compare two CSVs of --results (or of --per-fold) and exit")
    args = parser.parse_args()
    if args.compare:
        missing = [str(path) for path in args.compare if not path.is_file()]
        if missing:
            parser.error(f"--compare: no such file {', '.join(missing)}; expected CSVs written by --results or --per-fold")
        tables = []
        for path in args.compare:
            try:
                table = pd.read_csv(path)
            except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
                parser.error(f"--compare: {path} is not a CSV ({str(err).splitlines()[0]})")
            kind = next((k for k, columns in COMPARED.items() if set(columns) <= set(table.columns)), None)
            if kind is None:
                parser.error(f"--compare: {path} has columns {list(table.columns)[:6]}; expected those of --results "
                             f"({', '.join(COMPARED['results'])}) or --per-fold ({', '.join(COMPARED['per-fold'])})")
            tables.append((kind, table))
        if tables[0][0] != tables[1][0]:
            parser.error(f"--compare: {args.compare[0]} is a {tables[0][0]} CSV, {args.compare[1]} a {tables[1][0]} "
                         "one; compare two of the same kind")
        keys = COMPARED[tables[0][0]][:-2]
        repeated = [str(p) for p, (_, t) in zip(args.compare, tables) if t.duplicated(keys).any()]
        if repeated:
            parser.error(f"--compare: {', '.join(repeated)} repeat rows of the same {', '.join(keys)}")
        print(compare(tables[0][1], tables[1][1]))
        return
    cohorts = {name: simulate_tables(name, spec.paper_n, seed=args.seed).participants for name, spec in COHORTS.items()}
    if args.floor:
        print(floor(cohorts, args.methods[0], args.seed, len(args.methods) * args.folds))
        return
    if args.per_fold:
        start = time.process_time()
        _per_fold(cohorts, args.methods[0], args.seed, args.grid_search).to_csv(args.per_fold, index=False)
        print(f"wrote {args.per_fold} ({time.process_time() - start:.0f} CPU s)")
        return

    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp)
        sizes = {c: len(t) for c, t in cohorts.items()}
        write_random_embeddings(cache, sizes, args.methods, args.folds, args.seed)
        jobs = [(m, f) for m in args.methods for f in range(args.folds)]
        probe_cache = cache / "probes" if args.rerun else None

        def probe_all() -> tuple[list, float]:
            start = time.perf_counter()
            runs = Parallel(n_jobs=args.workers)(delayed(probe_one_checkpoint)(
                cache, m, f, cohorts, args.seed, args.grid_search, probe_cache) for m, f in jobs)
            return runs, time.perf_counter() - start

        runs, wall = probe_all()
        reruns = _reruns(probe_all, runs, cache, sizes, args) if args.rerun else None

    results = pd.concat([run[0] for run in runs], ignore_index=True)
    load, per_checkpoint, cpu = (np.array([run[i] for run in runs]) for i in (1, 2, 3))
    per_task = None if args.skip_per_task else _seconds_per_task(cohorts, args.seed, args.grid_search)
    if args.results:
        results.to_csv(args.results, index=False)
    print(f"date: {dt.date.today()}  machine: {platform.machine()}, {os.cpu_count()} cores, "
          f"{platform.processor() or platform.platform()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{len(jobs)} checkpoints x {len(TASKS)} tasks = {len(results)} result rows "
          f"({(~results['evaluable']).sum()} not evaluable), {args.workers} worker(s)")
    print(f"wall time: {wall:.0f} s; per checkpoint (22 tasks): wall median {np.median(per_checkpoint):.1f} s, "
          f"max {per_checkpoint.max():.1f} s; CPU median {np.median(cpu):.1f} s, total {cpu.sum():.0f} s; "
          f"embedding load median {np.median(load):.2f} s")
    if reruns is not None:
        print(reruns)
    if per_task is not None:
        print("\nseconds per task, one checkpoint, one process:")
        print(per_task.to_string())
    chance = results.query("evaluable and metric == 'balanced_accuracy' and evaluation == 'cv'")["score"]
    print(f"\nsanity: random features give balanced accuracy {chance.mean():.1f} % on average "
          f"(range {chance.min():.1f}-{chance.max():.1f})")


def _reruns(probe_all, runs: list, cache: Path, sizes: dict[str, int], args: argparse.Namespace) -> str:
    """Time the grid again through the probe cache the first run filled: unchanged, then with the first
    method's checkpoints changed (new random embeddings, as after retraining it). Rows must equal a cold run's."""
    cold = pd.concat([run[0] for run in runs], ignore_index=True)
    n_probes = len(cold.drop_duplicates(["method", "fold", "task"]))

    def entries() -> int:                   # the cache's files: one per distinct probe ever run
        return len(list((cache / "probes").glob("*.json")))

    before = entries()
    unchanged, unchanged_wall = probe_all()
    same = pd.concat([run[0] for run in unchanged], ignore_index=True).equals(cold)
    probed = entries() - before
    write_random_embeddings(cache, sizes, args.methods[:1], args.folds, args.seed + 1)
    retrained, retrained_wall = probe_all()
    return (f"rerun through the probe cache, nothing changed: {unchanged_wall:.1f} s wall, {probed} probes run "
            f"(rows equal the first run's: {same}); after {args.methods[0]}'s {args.folds} checkpoint(s) changed: "
            f"{retrained_wall:.1f} s wall, {entries() - before - probed} of {n_probes} probes run")


def _per_fold(cohorts: dict[str, pd.DataFrame], method: str, seed: int, grid_search: bool) -> pd.DataFrame:
    """The C (or alpha) chosen and the score of every outer fold of every task, on the embeddings of the first
    checkpoint (`write_random_embeddings` with the same seed draws them first)."""
    rng = np.random.default_rng(seed)
    features = {c: np.maximum(rng.standard_normal((len(t), EMBED_DIM), dtype=np.float32), 0)
                for c, t in cohorts.items()}
    rows = []
    for task in TASKS.values():
        results = evaluate_task(features[task.cohort], cohorts[task.cohort], task, seed=seed, grid_search=grid_search)
        for evaluation, result in results.items():
            rows.extend({"method": method, "fold": 0, "task": task.id, "evaluation": evaluation, "outer_fold": k,
                         "chosen": chosen, "fold_score": value}
                        for k, (chosen, value) in enumerate(zip(result.best_params, result.scores)))
    return pd.DataFrame(rows)


def floor(cohorts: dict[str, pd.DataFrame], method: str, seed: int, checkpoints: int) -> str:
    """The least the exact probe's linear algebra costs, one checkpoint, timed on this machine (1 BLAS thread).

    The problems are recorded from a real run of the 22 tasks on random embeddings (each logistic training set
    and its number of C values, each ridge inner fold). The floor counts, per logistic problem, its kernel Z Z^T
    (or, where `logistic_path` works in feature space, its Gram Z^T W Z) formed once and one Cholesky factor per
    C, and per ridge inner fold its Gram and one factor per alpha. Nothing else: no Newton iteration beyond one
    factor per C, no new curvature, no triangular solve, no scaler, no final ridge fit, no Python. Each part is
    the CPU time of its fastest repetition, on one BLAS thread.
    """
    logistic, ridge = [], []
    solve, path = probe_search._solve, probe_search.ridge_path

    def record_solve(X, y, classes, trains, Cs, protocol):
        logistic.extend((len(rows), Cs.shape[1]) for rows in trains)
        return solve(X, y, classes, trains, Cs, protocol)

    def record_ridge(Z, y, Z_new, alphas):
        ridge.append((len(Z), len(alphas)))
        return path(Z, y, Z_new, alphas)

    rng = np.random.default_rng(seed)
    features = {c: np.maximum(rng.standard_normal((len(t), EMBED_DIM), dtype=np.float32), 0)
                for c, t in cohorts.items()}
    with mock.patch.object(probe_search, "_solve", record_solve), \
            mock.patch.object(probe_search, "ridge_path", record_ridge):
        evaluate_tasks({(method, 0): features}, cohorts, seed=seed)
    d = EMBED_DIM
    with threadpool_limits(limits=1, user_api="blas"):
        kernels = sum(count * _seconds_gram(n, d, kernel=_kernel_side(n, d)) for n, count in
                      Counter(n for n, _ in logistic).items())
        pairs = Counter(n for n, k in logistic for _ in range(k))
        factors, single = (sum(count * _seconds_cholesky(n if _kernel_side(n, d) else d, single)
                               for n, count in pairs.items()) for single in (False, True))
        ridge_s = sum(_seconds_gram(n, d, kernel=n < d) + k * _seconds_cholesky(min(n, d)) for n, k in ridge)
    total = kernels + factors + ridge_s
    return (f"one checkpoint: {len(logistic)} logistic problems, {sum(k for _, k in logistic)} (problem, C) pairs, "
            f"{len(ridge)} ridge inner folds\n"
            f"floor: kernels/Grams {kernels:.2f} s + one factor per C {factors:.2f} s + ridge {ridge_s:.2f} s "
            f"= {total:.2f} CPU s per checkpoint; x {checkpoints} checkpoints = {total * checkpoints:.0f} CPU s, "
            f"{total * checkpoints / os.cpu_count():.0f} s of wall time on {os.cpu_count()} cores at best\n"
            f"with float32 factors (spotrf) instead: {factors:.2f} -> {single:.2f} s, "
            f"{(total - factors + single) * checkpoints / os.cpu_count():.0f} s of wall time at best")


def _kernel_side(n: int, d: int) -> bool:
    """Whether `logistic_path` factors the n x n kernel system (else the d x d one): its own rule."""
    return type(logistic_path._system(np.zeros((1, n, d)))) is logistic_path.KernelSystem


def _seconds_gram(n: int, d: int, kernel: bool, repeats: int = 5) -> float:
    """Fastest of `repeats` float64 products Z Z^T [n, n] (kernel) or Z^T Z [d, d], Z [n, d], in CPU seconds."""
    Z = np.random.default_rng(0).standard_normal((n, d))
    times = []
    for _ in range(repeats):
        start = time.process_time()
        _ = Z @ Z.T if kernel else Z.T @ Z
        times.append(time.process_time() - start)
    return min(times)


@functools.lru_cache(maxsize=None)
def _seconds_cholesky(m: int, single: bool = False, repeats: int = 5) -> float:
    """Fastest of `repeats` LAPACK Cholesky factorisations of an m x m positive definite matrix, in CPU seconds:
    float64 (dpotrf), or float32 (spotrf) with `single`."""
    Z = np.random.default_rng(0).standard_normal((m, EMBED_DIM))
    A, times = (Z @ Z.T / EMBED_DIM + np.eye(m)).astype(np.float32 if single else np.float64), []
    for _ in range(repeats):
        B = A.copy()
        start = time.process_time()
        (spotrf if single else dpotrf)(B.T, lower=0, overwrite_a=1, clean=0)
        times.append(time.process_time() - start)
    return min(times)


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return int(text)


#: The columns `compare` reads from each kind of CSV: the keys of a row, then the two values compared.
COMPARED = {"results": ("method", "fold", "task", "evaluation", "score", "std"),
            "per-fold": ("method", "fold", "task", "evaluation", "outer_fold", "chosen", "fold_score")}


def compare(a: pd.DataFrame, b: pd.DataFrame, tol: float = 1e-6) -> str:
    """How two runs of the same grid differ: per-result rows (score, std) or per-fold rows (chosen, fold_score)."""
    columns = COMPARED["per-fold" if "fold_score" in a else "results"]
    keys, values = list(columns[:-2]), list(columns[-2:])
    both = a.merge(b, on=keys, suffixes=("_a", "_b"), validate="one_to_one")
    lines = [f"{len(both)} rows in both ({len(a)} in A, {len(b)} in B)"]
    moved = np.zeros(len(both), bool)
    for name in values:
        x, y = both[f"{name}_a"].to_numpy(float), both[f"{name}_b"].to_numpy(float)
        diff = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))     # NaN where only one is NaN
        if name == "chosen":
            differs = ~np.isclose(x, y, rtol=1e-9, atol=0) & ~(np.isnan(x) & np.isnan(y))
            lines.append(f"chosen C or alpha: differs in {differs.sum()} rows")
        else:
            differs = ~(diff <= tol)
            lines.append(f"{name}: {differs.sum()} rows differ by more than {tol:g}; largest |difference| "
                         f"{np.nanmax(diff) if len(diff) else 0:.4g}, median over those rows "
                         f"{np.nanmedian(diff[differs]) if differs.any() else 0:.3g}")
        moved |= differs
    if moved.any():
        by_task = both.loc[moved, "task"].value_counts()
        lines.append("rows that differ, by task: " + ", ".join(f"{t} {n}" for t, n in by_task.items()))
    return "\n".join(lines)


def _seconds_per_task(cohorts: dict[str, pd.DataFrame], seed: int, grid_search: bool) -> pd.DataFrame:
    """Time each task once on fresh random embeddings: where the wall time goes."""
    rng = np.random.default_rng(seed + 1)
    features = {c: np.maximum(rng.standard_normal((len(t), EMBED_DIM), dtype=np.float32), 0)
                for c, t in cohorts.items()}
    rows = []
    for task in TASKS.values():
        start, cpu = time.perf_counter(), time.process_time()
        result = evaluate_tasks({("simclr", 0): features}, cohorts, [task], seed=seed,
                                grid_search=grid_search).iloc[0]
        rows.append({"task": task.id, "n": result["n"],
                     "folds x repeats": f"{result['n_splits']}x{result['n_repeats']}",
                     "wall s": round(time.perf_counter() - start, 1), "CPU s": round(time.process_time() - cpu, 1)})
    return pd.DataFrame(rows).set_index("task")


if __name__ == "__main__":
    main()
