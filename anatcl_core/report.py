"""Probe results beside the paper's: its tables, the score figure and the best-method summary of chapters 5-8.

Example::

    results = evaluate_methods(data_root, output_dir, tasks_for(2), methods)   # evaluation.RESULT_COLUMNS
    paper_table(2, results)                            # the paper's Table 2 with our cells and the differences
    fig = plot_scores(results, tasks_for(2), 2)        # one panel per task: this run (dots) and the paper (crosses)
    best = best_methods(results, tasks_for(2), 2)      # one row per task: best method here and in the paper
    print(best_methods_markdown(best))

Scores are balanced accuracy in % (higher is better) or mean absolute error in the target's unit (lower is
better). Our value for a (method, task) is `summarise`'s: the run's mean and SD over cross-validation
folds (over checkpoints when there are several pretraining folds), on OpenBHB's internal test split;
methods carry the paper's labels (`methods.METHOD_LABELS`) and are drawn in that dict's order.
matplotlib is imported by the plotting function only, so the tables work without it.
"""
from __future__ import annotations

from typing import Iterable

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from anatcl_core.methods import BASELINES, METHOD_LABELS, label_of, paper_row_of
from anatcl_core.tasks import SUSPECT_PAPER_VALUES, TaskSpec, paper_results, select_tasks, tasks_for

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Columns of an `evaluate_tasks` frame (evaluation.RESULT_COLUMNS) that this module reads.
NEEDED_COLUMNS = ("method", "task", "metric", "evaluation", "score", "std", "evaluable")

#: Columns of `best_methods`' frame.
BEST_COLUMNS = ("task", "metric", "best_here", "score_here", "best_paper", "score_paper", "spread", "typical_sd",
                "note")


def task_specs(tasks: Iterable[TaskSpec | str]) -> list[TaskSpec]:
    """Task specs from specs or ids, in order."""
    return [t if isinstance(t, TaskSpec) else select_tasks([t])[0] for t in tasks]


#: What the ± of our cells is over: "folds" (every downstream test fold of every checkpoint, pooled: the paper's
#: apparent ±) or "checkpoints" (the checkpoints' cross-validated means). With one checkpoint both are its folds.
SPREADS = ("folds", "checkpoints")


def scored_folds(rows: pd.DataFrame) -> np.ndarray:
    """[len(rows)] test folds behind each result row's score: `n_scored`; for results saved before that column,
    n_splits x n_repeats of a cross-validated row, 1 for an OpenBHB test split (or when nothing says)."""
    planned = ((rows["n_splits"] * rows["n_repeats"]).to_numpy(dtype=np.float64)
               if {"n_splits", "n_repeats"} <= set(rows.columns) else np.ones(len(rows)))
    k = rows["n_scored"].to_numpy(dtype=np.float64) if "n_scored" in rows else np.full(len(rows), np.nan)
    return np.where(np.isfinite(k), k, np.where(rows["evaluation"] == "cv", planned, 1.0))


def _pooled_sd(group: pd.DataFrame) -> float:
    """SD (ddof=0) over all test folds of the group's rows, from each row's mean, SD and number of folds
    (`scored_folds`); a row scored once (an OpenBHB test split: SD NaN) has no spread of its own."""
    k = scored_folds(group)
    means = group["score"].to_numpy(dtype=np.float64)
    within = np.nan_to_num(group["std"].to_numpy(dtype=np.float64)) ** 2
    if k.sum() < 2:
        return float("nan")
    grand = np.sum(k * means) / k.sum()
    return float(np.sqrt(np.sum(k * (within + (means - grand) ** 2)) / k.sum()))


def summarise(results: pd.DataFrame, openbhb_split: str = "internal_test", spread: str = "folds") -> pd.DataFrame:
    """Per (method, task): mean and std of the scores, as the paper's cells are.

    mean: over the method's pretraining folds (checkpoints) of their cross-validated means (one checkpoint:
    its mean). std_folds: SD over every downstream test fold of every checkpoint, pooled; std_checkpoints: SD
    over the checkpoints' means (NaN for one). `std` is the one `spread` names (SPREADS), `spread` says which
    it is ("cv folds", "checkpoints" or "test split"). OpenBHB tasks use the `openbhb_split` test split.
    Columns: method, task, metric, mean, std, std_folds, std_checkpoints, runs, spread.
    """
    if spread not in SPREADS:
        raise ValueError(f"spread: expected one of {SPREADS}, got {spread!r}")
    kept = results[results["evaluable"].astype(bool)
                   & results["evaluation"].isin(["cv", openbhb_split])]

    def one(group: pd.DataFrame) -> pd.Series:
        runs = len(group)
        by_checkpoint = group["score"].std(ddof=0) if runs > 1 else np.nan
        folds = group["std"].iloc[0] if runs == 1 else _pooled_sd(group)
        if (group["evaluation"] != "cv").all():      # one score per checkpoint: its folds are the checkpoints
            label = "test split" if runs == 1 else "checkpoints"
        else:
            label = "checkpoints" if spread == "checkpoints" and runs > 1 else "cv folds"
        return pd.Series({"mean": group["score"].mean(), "std": by_checkpoint if label == "checkpoints" else folds,
                          "std_folds": folds, "std_checkpoints": by_checkpoint, "runs": runs, "spread": label})

    columns = ["method", "task", "metric", "mean", "std", "std_folds", "std_checkpoints", "runs", "spread"]
    if kept.empty:
        return pd.DataFrame(columns=columns)
    wanted = [c for c in ("score", "std", "evaluation", "n_scored", "n_splits", "n_repeats") if c in kept.columns]
    return kept.groupby(["method", "task", "metric"], sort=False)[wanted].apply(one).reset_index()[columns]


def ours_by_method(results: pd.DataFrame, openbhb_split: str = "internal_test", spread: str = "folds"
                   ) -> pd.DataFrame:
    """This run's score per (method, task) with the paper's method labels, scored rows only.

    Columns as `summarise`: method (paper label, or our id when the paper has none), task, metric,
    mean and std (% or the target's unit), runs, spread. Raises ValueError naming any column of
    NEEDED_COLUMNS that `results` lacks.
    """
    missing = [c for c in NEEDED_COLUMNS if c not in results.columns]
    if missing:
        raise ValueError(f"results lack column(s) {missing}; expected an evaluation.evaluate_tasks frame with "
                         f"columns {list(NEEDED_COLUMNS)}")
    summary = summarise(results, openbhb_split, spread)
    summary["method"] = summary["method"].map(label_of)
    # An evaluable task whose every test fold was skipped (one class only) has no mean: nothing to rank.
    return summary.dropna(subset=["mean"])


def _cell(mean: float, std: float, digits: int) -> str:
    if pd.isna(mean):
        return "—"
    return f"{mean:.{digits}f}" if pd.isna(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def _lookup(frame: pd.DataFrame, method: str, task: str) -> pd.Series | None:
    """The (method, task) row of a frame indexed by both, or None."""
    return frame.loc[(method, task)] if (method, task) in frame.index else None


def paper_table(table: int, ours: pd.DataFrame | None = None, *, openbhb_split: str = "internal_test",
                digits: int = 2, spread: str = "folds") -> pd.DataFrame:
    """The paper's Table 2, 3, 4 or 5 as a DataFrame of "mean ± std" strings.

    Rows: the paper's methods in its order (then any other method of `ours`), labelled as in the paper; the
    authors' released weights ('AnatCL-G3 (released)') are compared with the paper's row of their method.
    Columns: (dataset, task label) as in the paper's header; with `ours` (an `evaluate_tasks` frame)
    each task gets three columns, "paper", "ours" and "Δ" (our mean minus the paper's); our ± is over
    `spread` (`summarise`), said in a footnote when there are several checkpoints. Labels marked
    † are values the paper prints under a heading they do not seem to match (see `.attrs["footnotes"]`).
    """
    specs = tasks_for(table)
    if not specs:
        raise ValueError(f"paper_table: table must be 2, 3, 4 or 5, got {table!r}")
    paper = paper_results().query("table == @table").set_index(["method", "task"])
    summary = None if ours is None else ours_by_method(ours, openbhb_split, spread).set_index(["method", "task"])
    methods = list(METHOD_LABELS.values())
    if summary is not None:
        methods += [m for m in summary.index.get_level_values("method").unique() if m not in methods]
    columns: dict[tuple[str, ...], list[str]] = {}
    for task in specs:
        head = (task.group, task.label + ("†" if task.id in SUSPECT_PAPER_VALUES else ""))
        for method in methods:
            theirs = _lookup(paper, paper_row_of(method), task.id)
            paper_cell = "—" if theirs is None else _cell(theirs["mean"], theirs["std"], digits)
            if summary is None:
                columns.setdefault(head, []).append(paper_cell)
                continue
            mine = _lookup(summary, method, task.id)
            diff = np.nan if mine is None or theirs is None else mine["mean"] - theirs["mean"]
            columns.setdefault(head + ("paper",), []).append(paper_cell)
            columns.setdefault(head + ("ours",), []).append("—" if mine is None else
                                                             _cell(mine["mean"], mine["std"], digits))
            columns.setdefault(head + ("Δ",), []).append("—" if pd.isna(diff) else f"{diff:+.{digits}f}")
    frame = pd.DataFrame(columns, index=pd.Index(methods, name="method"))
    frame.columns = pd.MultiIndex.from_tuples(frame.columns)
    frame.attrs["footnotes"] = [f"† {task}: {why}" for task, why in SUSPECT_PAPER_VALUES.items()
                                if any(t.id == task for t in specs)]
    if ours is not None and summary is not None and (summary["runs"] > 1).any():
        frame.attrs["footnotes"].append(
            "our ± is the SD over every downstream test fold of every pretraining checkpoint" if spread == "folds"
            else "our ± is the SD over the pretraining checkpoints' cross-validated means")
    if table == 2 and ours is not None:
        frame.attrs["footnotes"].append(f"our OpenBHB scores are on its {openbhb_split} split")
    return frame


def _paper(table: int) -> pd.DataFrame:
    """The paper's cells of Table `table`: columns table, method (paper label), task, metric, mean, std."""
    return paper_results().query("table == @table")


#: Axis labels in words, per metric.
METRIC_WORDS = {"balanced_accuracy": "balanced accuracy (%, higher is better)",
                "mae": "mean absolute error (lower is better)"}
#: Panels per row of a figure: wider rows shrink below readable at the book's page width.
PANELS_PER_ROW = 3


def chance_level(results: pd.DataFrame, task: TaskSpec) -> float | None:
    """Balanced accuracy of guessing, 100 / classes (from the results' class counts; 2 classes if none)."""
    if task.kind != "classification":
        return None
    counts = results.loc[results["task"] == task.id, "class_counts"].dropna().astype(str)
    classes = max((c.count("/") + 1 for c in counts if c), default=2)
    return 100.0 / classes


def plot_scores(results: pd.DataFrame, tasks: Iterable[TaskSpec | str], table: int, *,
                openbhb_split: str = "internal_test") -> Figure:
    """One panel per task, at most three per row: this run's mean ± one SD (dots, error bars), the paper's mean
    (crosses) and, for classification, chance (dashed).

    results: an evaluation.evaluate_tasks frame; tasks: specs or ids, one panel each in this order; table: the
    paper's table (2-5) to compare with. x: the paper's methods in METHOD_LABELS order, then any other method
    of `results` (the released weights beside the paper's row of their method); y: the task's metric in words
    (`METRIC_WORDS`), balanced accuracy in % or MAE in the target's unit. Titles name the cohort and the task.
    """
    import matplotlib.pyplot as plt

    specs = task_specs(tasks)
    if not specs:
        raise ValueError("plot_scores: no tasks to plot")
    ours, theirs = ours_by_method(results, openbhb_split), _paper(table)
    order = list(METHOD_LABELS.values())
    order += [m for m in ours["method"].unique() if m not in order]      # e.g. the released weights
    x = np.arange(len(order))
    columns = min(PANELS_PER_ROW, len(specs))
    rows = -(-len(specs) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.9 * rows), squeeze=False)
    for ax, task in zip(axes.flat, specs):
        mine = ours[ours["task"] == task.id].set_index("method").reindex(order)
        paper = theirs[theirs["task"] == task.id].set_index("method").reindex([paper_row_of(m) for m in order])
        ax.errorbar(x, mine["mean"], yerr=mine["std"], fmt="o", color="C0", label="this run")
        ax.plot(x, paper["mean"], "x", color="C3", markersize=8, label="paper")
        chance = chance_level(results, task)
        if chance is not None:
            ax.axhline(chance, color="0.4", linestyle="--", linewidth=1, label="chance")
        ax.set_xticks(x, order, rotation=45, ha="right")
        ax.set_title(f"{task.group}: {task.label}")
        ax.set_ylabel(METRIC_WORDS.get(task.metric, task.metric))
    for ax in list(axes.flat)[len(specs):]:
        ax.set_visible(False)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def method_ranks(frame: pd.DataFrame, tasks: Iterable[TaskSpec | str]) -> pd.DataFrame:
    """Rank of each method within each task, 1 = best (highest balanced accuracy, lowest MAE; ties share).

    frame: one row per (method label, task) with a `mean` column, e.g. `ours_by_method(results)` or the
    paper's cells (`tasks.paper_results()`). Returns [task x method] in the order of `tasks` and of
    METHOD_LABELS; NaN where a method has no score for a task.
    """
    specs = task_specs(tasks)
    wide = frame.pivot_table(index="task", columns="method", values="mean").reindex(
        index=[t.id for t in specs], columns=list(METHOD_LABELS.values()))
    lower_is_better = {t.id for t in specs if t.kind == "regression"}
    signed = wide.apply(lambda row: row if row.name in lower_is_better else -row, axis=1)
    return signed.rank(axis=1, method="min")


def _best(frame: pd.DataFrame, kind: str) -> pd.Series | None:
    """The row of `frame` with the best `mean` (lowest MAE, highest balanced accuracy), None if none is scored."""
    scored = frame.dropna(subset=["mean"])
    if scored.empty:
        return None
    return scored.loc[scored["mean"].idxmin() if kind == "regression" else scored["mean"].idxmax()]


def _why_not_scored(results: pd.DataFrame, task_id: str) -> str:
    """'not evaluable in this run', with the probes' reasons (e.g. a class too small) when they gave any."""
    notes = results.loc[(results["task"] == task_id) & ~results["evaluable"].astype(bool), "note"]
    reasons = [str(n).removeprefix("not evaluable: ") for n in notes.dropna().unique() if str(n)]
    return "not evaluable in this run" + (f": {'; '.join(reasons)}" if reasons else "")


def _task_row(task: TaskSpec, mine: pd.DataFrame, paper: pd.DataFrame, results: pd.DataFrame) -> dict:
    here, there = _best(mine, task.kind), _best(paper, task.kind)
    row = {"task": task.id, "metric": task.metric,
           "best_paper": np.nan if there is None else there["method"],
           "score_paper": np.nan if there is None else there["mean"]}
    if here is None:
        return {**row, "best_here": np.nan, "score_here": np.nan, "spread": np.nan, "typical_sd": np.nan,
                "note": _why_not_scored(results, task.id)}
    # Spread and typical SD side by side say whether the ranking means anything: a spread below one SD does not.
    return {**row, "best_here": here["method"], "score_here": here["mean"],
            "spread": mine["mean"].max() - mine["mean"].min(), "typical_sd": mine["std"].median(), "note": ""}


def best_methods(results: pd.DataFrame, tasks: Iterable[TaskSpec | str], table: int, *,
                 openbhb_split: str = "internal_test") -> pd.DataFrame:
    """Per task, the best method of this run and of the paper's Table `table`, and how far apart methods are.

    One row per task, in the order of `tasks`; columns (BEST_COLUMNS): task, metric ("balanced_accuracy"
    in %, "mae" in the target's unit), best_here and score_here (this run's best method label and its
    score; the reference rows of `methods.BASELINES` are never "best"), best_paper and score_paper (the same in
    the paper), spread (best minus worst of this run's
    methods, absolute, same unit), typical_sd (median over methods of the SD over folds, same unit), note.
    A task with no evaluable score here has NaN in best_here, score_here, spread and typical_sd and says why
    in note; a task the paper does not report has NaN in best_paper and score_paper.
    """
    ours, theirs = ours_by_method(results, openbhb_split), _paper(table)
    ours = ours[~ours["method"].isin(list(BASELINES.values()))]           # references, not candidates
    rows = [_task_row(task, ours[ours["task"] == task.id], theirs[theirs["task"] == task.id], results)
            for task in task_specs(tasks)]
    return pd.DataFrame(rows, columns=list(BEST_COLUMNS))


def _markdown_line(row: pd.Series) -> str:
    if pd.isna(row["score_here"]):
        return f"- **{row['task']}**: not evaluable in this run."
    paper = ("not in the paper" if pd.isna(row["score_paper"])
             else f"best in the paper {row['best_paper']} ({row['score_paper']:.2f})")
    sd = ("no SD (one test split)" if pd.isna(row["typical_sd"])
          else f"typical SD over folds {row['typical_sd']:.2f}")
    return (f"- **{row['task']}**: best here {row['best_here']} ({row['score_here']:.2f}); {paper}; "
            f"spread between our methods {row['spread']:.2f}, {sd}.")


def best_methods_markdown(frame: pd.DataFrame) -> str:
    """A `best_methods` frame as a Markdown bullet list, one line per task, scores to 2 decimals."""
    return "\n".join(_markdown_line(row) for _, row in frame.iterrows())
