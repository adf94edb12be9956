"""What a run's probe results say, in words written from the numbers: the conclusions of chapters 5-8.

For each classification task, every method's cross-validated balanced accuracy is compared with chance
(100 / classes) through a rough 95% interval over its test folds (mean ± t * SD / sqrt(folds)). The folds share
training subjects, so the interval is optimistic: "above chance" is a claim this run can make, not a proof;
"at chance" means this run cannot tell the method from guessing. Regression tasks have no chance level in the
results, so for them only the spread between methods is set against the typical SD over folds.

Example::

    Markdown(conclusions_markdown(results, tasks_for(3)))
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
from scipy import stats

from anatcl_core.methods import label_of
from anatcl_core.report import chance_level, scored_folds, summarise, task_specs
from anatcl_core.tasks import TaskSpec


def chance_verdicts(results: pd.DataFrame, tasks: Iterable[TaskSpec | str]) -> pd.DataFrame:
    """One row per (classification task, method) of the cross-validated results: mean, rough 95% interval over
    folds, chance, and `verdict` ("above chance", "at chance" or "below chance").

    Columns: task, method (the paper's label), mean, low, high (balanced accuracy, %), chance (%), folds, verdict.
    """
    rows = []
    for task in task_specs(tasks):
        if task.kind != "classification":
            continue
        chance = chance_level(results, task)
        scored = results[(results["task"] == task.id) & (results["evaluation"] == "cv")
                         & results["evaluable"].astype(bool)]
        for (_, row), folds in zip(scored.iterrows(), scored_folds(scored).astype(int)):
            half = stats.t.ppf(0.975, folds - 1) * row["std"] / np.sqrt(folds) if folds > 1 else np.inf
            low, high = row["score"] - half, row["score"] + half
            verdict = "above chance" if low > chance else "below chance" if high < chance else "at chance"
            rows.append({"task": task.id, "method": label_of(row["method"]), "mean": row["score"], "low": low,
                         "high": high, "chance": chance, "folds": folds, "verdict": verdict})
    return pd.DataFrame(rows, columns=["task", "method", "mean", "low", "high", "chance", "folds", "verdict"])


def _names(items: list[str]) -> str:
    return ", ".join(items) if items else "none"


def conclusions_markdown(results: pd.DataFrame, tasks: Iterable[TaskSpec | str]) -> str:
    """A paragraph per kind of task, written from `results` (an evaluate_tasks frame of one or more methods)."""
    specs = task_specs(tasks)
    verdicts = chance_verdicts(results, specs)
    lines = []
    if not verdicts.empty:
        lifted = verdicts[verdicts["verdict"] == "above chance"]
        by_task = {t: sorted(lifted.loc[lifted["task"] == t, "method"]) for t in verdicts["task"].unique()}
        some = [f"{t} ({', '.join(m)})" for t, m in by_task.items() if m]
        none = [t for t, m in by_task.items() if not m]
        below = verdicts[verdicts["verdict"] == "below chance"]
        text = (f"In this run, {len(some)} of {len(by_task)} classification tasks {'has' if len(some) == 1 else 'have'} "
                f"at least one method whose "
                f"rough 95% interval over folds lies above chance: {_names(some)}. For every method, this run "
                f"cannot tell {_names(none)} from guessing.")
        if not below.empty:
            pairs = [f"{t} ({m})" for t, m in zip(below["task"], below["method"])]
            text += f" Below chance, which a probe can only reach by noise: {_names(pairs)}."
        lines.append(text)
    regression = [t for t in specs if t.kind == "regression"]
    if regression:
        summary = summarise(results[results["task"].isin([t.id for t in regression])])
        resolved, unresolved = [], []
        for task in regression:
            scores = summary[summary["task"] == task.id]
            if scores.empty:
                continue
            spread, sd = scores["mean"].max() - scores["mean"].min(), scores["std"].median()
            (resolved if pd.notna(sd) and spread > sd else unresolved).append(task.id)
        lines.append(f"Of the score (regression) tasks, the methods' MAEs differ by more than a typical SD over "
                     f"folds in {_names(resolved)}; elsewhere ({_names(unresolved)}) this run cannot rank them.")
    n_checkpoints = results.groupby("method")["fold"].nunique().max() if not results.empty else 0
    if n_checkpoints <= 1:
        lines.append("Each method here is one pretraining run (one seed, one fold): a verdict this run gives "
                     "may not survive another seed.")
    return "\n\n".join(lines)


def phenotype_origins(tasks: Iterable[TaskSpec | str], origin: dict[str, str]) -> pd.DataFrame:
    """How the synthetic generator made each task's score: task, column, driven ('anatomy' or 'none'), how.

    origin: column -> description, e.g. `data.synthetic.phenotypes.PHENOTYPE_ORIGIN` (its text starts with
    "anatomy" or "anatomy-free"). Tasks whose column is not in `origin` are left out.
    """
    rows = [{"task": t.id, "column": t.target.column,
             "driven": "none" if origin[t.target.column].startswith("anatomy-free") else "anatomy",
             "how": origin[t.target.column].split(": ", 1)[-1]}
            for t in task_specs(tasks) if t.target.column in origin]
    return pd.DataFrame(rows, columns=["task", "column", "driven", "how"])


def anatomy_free_markdown(results: pd.DataFrame, tasks: Iterable[TaskSpec | str], origin: dict[str, str]) -> str:
    """Whether every method sits at chance on the scores the generator drew with no anatomy: a check on the
    evaluation itself (a probe that beats chance there has leaked or overfitted)."""
    origins = phenotype_origins(tasks, origin)
    free = origins.loc[origins["driven"] == "none", "task"].tolist()
    verdicts = chance_verdicts(results, free)
    if verdicts.empty:
        return "No anatomy-free score could be scored in this run."
    off = verdicts[verdicts["verdict"] != "at chance"]
    if off.empty:
        return (f"On the scores the generator drew with no anatomy ({', '.join(free)}), every method sits at "
                "chance, as a sound probe must.")
    pairs = ", ".join(f"{t} ({m}, {v})" for t, m, v in zip(off["task"], off["method"], off["verdict"]))
    return (f"On the scores the generator drew with no anatomy ({', '.join(free)}), some intervals miss chance: "
            f"{pairs}. With {len(verdicts)} intervals at 95%, about {0.05 * len(verdicts):.1f} are expected to "
            "miss by chance alone; more than that would point at a leak.")


#: Parts of a probe's note that say how the search ran: not warnings.
_ROUTINE = ("by inner", "fit on ", "fixed C", "fixed alpha")


def notes_markdown(results: pd.DataFrame) -> str:
    """The warnings among the probes' notes, one bullet per task, every method pooled: penalties chosen at the
    edge of the grid (the rows' `edge_folds` over their `n_scored` folds), folds reduced or repeated for small
    classes, tasks not scored. The routine parts (how the penalty was searched) are left out; the full notes
    stay in the results."""
    counted = "edge_folds" in results              # results saved before the column keep the notes' own words
    routine = _ROUTINE + (("at the grid edge",) if counted else ())
    lines = []
    for task, rows in results.groupby("task", sort=False):
        other = []
        for note in rows["note"].fillna(""):
            for part in filter(None, (p.strip() for p in note.split(";"))):
                if not any(r in part for r in routine) and part not in other:
                    other.append(part)
        edge = int(rows["edge_folds"].sum()) if counted else 0
        if edge:
            name = "C" if (rows["metric"] == "balanced_accuracy").all() else "alpha"
            other.insert(0, f"{name} at the edge of its grid in {edge} of {int(rows['n_scored'].sum())} folds "
                            "(all methods together): a wider grid might score differently")
        if other:
            lines.append(f"- **{task}**: " + "; ".join(other))
    if not lines:
        return "No probe needed a warning: every penalty was chosen inside its grid, on the folds asked for."
    return "Warnings from the probes (the full notes are in the collapsed table below):\n\n" + "\n".join(lines)
