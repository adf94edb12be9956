"""Probe results beside the paper's: best methods per task, the score figure, and clear errors on bad input."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from anatcl_core.evaluation import RESULT_COLUMNS
from anatcl_core.report import (METRIC_WORDS, best_methods, best_methods_markdown, paper_table, plot_scores,
                                summarise)
from anatcl_core.methods import METHOD_LABELS
from anatcl_core.tasks import TASKS, paper_results, tasks_for

METHODS = list(METHOD_LABELS)


def result_row(method: str, task: str, evaluation: str, score: float, std: float, evaluable: bool = True,
               note: str = "") -> dict:
    """One row of an evaluate_tasks frame (all of evaluation.RESULT_COLUMNS), pretraining fold 0."""
    spec = TASKS[task]
    return {"method": method, "fold": 0, "task": task, "cohort": spec.cohort, "table": spec.table,
            "metric": spec.metric, "evaluation": evaluation, "score": score, "std": std, "n_scored": 3, "n": 40,
            "n_splits": 3, "n_repeats": 1, "class_counts": "", "evaluable": evaluable, "edge_folds": 0,
            "protocol": "ours", "note": note}


def frame(rows: list[dict]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def random_scores(seed: int, low: float, high: float) -> dict[str, tuple[float, float]]:
    """{method id: (score, std)}, distinct scores so that the best method is unique."""
    rng = np.random.default_rng(seed)
    scores = rng.permutation(np.linspace(low, high, len(METHODS)))
    return {m: (float(s), float(rng.uniform(0.5, 2.0))) for m, s in zip(METHODS, scores)}


@pytest.fixture
def openbhb_results():
    """Table 2: age (regression) and sex (classification), scored on both OpenBHB test splits."""
    age, sex = random_scores(0, 2.5, 6.0), random_scores(1, 55.0, 80.0)
    rows = [result_row(m, "openbhb/age", "internal_test", s, sd) for m, (s, sd) in age.items()]
    rows += [result_row(m, "openbhb/sex", "internal_test", s, sd) for m, (s, sd) in sex.items()]
    # The external split must be ignored: there, every method would beat the internal-split winner.
    rows += [result_row(m, "openbhb/age", "external_test", 0.1, 0.0) for m in METHODS]
    rows += [result_row(m, "openbhb/sex", "external_test", 99.0, 0.0) for m in METHODS]
    return frame(rows), age, sex


def test_best_method_is_lowest_mae_and_highest_balanced_accuracy(openbhb_results):
    results, age, sex = openbhb_results
    best = best_methods(results, ["openbhb/age", "openbhb/sex"], 2).set_index("task")
    paper = paper_results().query("table == 2")
    for task, scores, pick in [("openbhb/age", age, min), ("openbhb/sex", sex, max)]:
        winner = pick(scores, key=lambda m: scores[m][0])
        assert best.loc[task, "best_here"] == METHOD_LABELS[winner]
        assert best.loc[task, "score_here"] == pytest.approx(scores[winner][0])
        values = [s for s, _ in scores.values()]
        assert best.loc[task, "spread"] == pytest.approx(max(values) - min(values))
        assert best.loc[task, "typical_sd"] == pytest.approx(np.median([sd for _, sd in scores.values()]))
        cells = {r.method: r.mean for r in paper[paper["task"] == task].itertuples()}
        paper_winner = pick(cells, key=cells.get)
        assert (best.loc[task, "best_paper"], best.loc[task, "score_paper"]) == (paper_winner, cells[paper_winner])
        assert best.loc[task, "note"] == ""
    text = best_methods_markdown(best.reset_index())
    assert text.count("\n") == 1 and f"best here {best.loc['openbhb/age', 'best_here']} (" in text


def test_a_task_without_an_evaluable_score_gets_a_row_of_nans_and_says_why():
    rows = [result_row(m, "adni/ad-vs-hc", "cv", 60.0 + i, 3.0) for i, m in enumerate(METHODS)]
    rows += [result_row(m, "adni/smci-vs-pmci", "cv", np.nan, np.nan, evaluable=False,
                        note="not evaluable: class 1 has 1 subject; cross-validation needs at least 2 per class")
             for m in METHODS]
    best = best_methods(frame(rows), ["adni/ad-vs-hc", "adni/smci-vs-pmci", "oasis3/ad-vs-hc"], 3)
    assert list(best["task"]) == ["adni/ad-vs-hc", "adni/smci-vs-pmci", "oasis3/ad-vs-hc"]
    assert best.loc[0, "best_here"] == "AnatCL-L3"
    for i in (1, 2):        # no rows that score, and no rows at all
        assert best.loc[i, ["best_here", "score_here", "spread", "typical_sd"]].isna().all()
        assert best.loc[i, "note"].startswith("not evaluable in this run")
        assert pd.notna(best.loc[i, "best_paper"])                     # the paper's side is still shown
    assert "class 1 has 1 subject" in best.loc[1, "note"]
    assert "**adni/smci-vs-pmci**: not evaluable in this run." in best_methods_markdown(best)


def test_figure_has_one_panel_per_task_with_the_papers_methods(openbhb_results):
    results, _, _ = openbhb_results
    fig = plot_scores(results, ["openbhb/age", "openbhb/sex"], 2)
    try:
        assert len(fig.axes) == 2
        for ax, task in zip(fig.axes, ["openbhb/age", "openbhb/sex"]):
            assert [t.get_text() for t in ax.get_xticklabels()] == list(METHOD_LABELS.values())
            assert ax.get_title() == f"OpenBHB: {TASKS[task].label}"
            assert ax.get_ylabel() == METRIC_WORDS[TASKS[task].metric]
        chance = [line.get_ydata()[0] for line in fig.axes[1].get_lines() if line.get_linestyle() == "--"]
        assert chance == [50.0] and not [l for l in fig.axes[0].get_lines() if l.get_linestyle() == "--"]
    finally:
        plt.close(fig)


def test_figures_wrap_after_three_panels_per_row(openbhb_results):
    tasks = [t.id for t in tasks_for(5)]                     # ten phenotype panels
    rows = [result_row(m, t, "cv", 50.0 + i, 2.0) for i, m in enumerate(METHODS) for t in tasks]
    fig = plot_scores(frame(rows), tasks, 5)
    try:
        visible = [ax for ax in fig.axes if ax.get_visible()]
        assert len(visible) == 10 and len(fig.axes) == 12          # 4 rows of 3, the last two hidden
        assert {round(ax.get_position().width, 2) for ax in visible} == {round(visible[0].get_position().width, 2)}
        assert fig.get_size_inches()[0] <= 3 * 4.2 + 1e-9
    finally:
        plt.close(fig)


def test_several_checkpoints_per_method_are_averaged():
    rows = [{**result_row(m, "adni/ad-vs-hc", "cv", 60.0 + i + fold, 3.0), "fold": fold}
            for i, m in enumerate(METHODS) for fold in (0, 2)]
    results = frame(rows)
    best = best_methods(results, ["adni/ad-vs-hc"], 3)
    assert (best.loc[0, "best_here"], best.loc[0, "score_here"]) == ("AnatCL-L3", 66.0)
    plt.close(plot_scores(results, ["adni/ad-vs-hc"], 3))


@pytest.mark.parametrize("call", [best_methods, plot_scores])
def test_a_missing_column_is_named(openbhb_results, call):
    results, _, _ = openbhb_results
    with pytest.raises(ValueError, match=r"\['std'\]"):
        call(results.drop(columns="std"), ["openbhb/age"], 2)


def test_method_ranks_rank_within_each_task_with_the_right_direction_and_shared_ties():
    from anatcl_core.report import method_ranks
    labels = list(METHOD_LABELS.values())
    scores = {"abide1/autism": [60, 70, 70, 50, 80, 55], "openbhb/age": [5.0, 3.0, 4.0, 6.0, 2.0, 3.0]}
    frame = pd.DataFrame([{"method": m, "task": t, "mean": v} for t, values in scores.items()
                          for m, v in zip(labels, values)])
    ranks = method_ranks(frame, ["openbhb/age", "abide1/autism"])
    assert list(ranks.index) == ["openbhb/age", "abide1/autism"] and list(ranks.columns) == labels
    assert list(ranks.loc["abide1/autism"]) == [4, 2, 2, 6, 1, 5]      # higher accuracy is better; a tie shares
    assert list(ranks.loc["openbhb/age"]) == [5, 2, 4, 6, 1, 2]        # lower MAE is better
    missing = method_ranks(frame[frame["method"] != labels[0]], ["openbhb/age"])
    assert missing[labels[0]].isna().all()


def test_the_spread_over_folds_pools_every_test_fold_and_the_spread_over_checkpoints_their_means():
    rng = np.random.default_rng(2)
    folds = {0: rng.normal(60, 8, 5), 1: rng.normal(66, 8, 5), 2: rng.normal(58, 8, 10)}   # 10: a repeated split
    rows = [{**result_row("yaware", "adni/ad-vs-hc", "cv", s.mean(), s.std()), "fold": k, "n_scored": len(s)}
            for k, s in folds.items()]
    both = summarise(frame(rows)).iloc[0]
    means = np.array([s.mean() for s in folds.values()])
    assert both["mean"] == pytest.approx(means.mean())
    assert both["std_checkpoints"] == pytest.approx(means.std())
    assert both["std_folds"] == pytest.approx(np.concatenate(list(folds.values())).std())  # weighted by folds
    assert (both["std"], both["spread"]) == (both["std_folds"], "cv folds")
    by_checkpoint = summarise(frame(rows), spread="checkpoints").iloc[0]
    assert (by_checkpoint["std"], by_checkpoint["spread"]) == (both["std_checkpoints"], "checkpoints")
    table = paper_table(3, frame(rows))
    assert table.loc["y-Aware", ("ADNI", "HC vs AD", "ours")] == f"{means.mean():.2f} ± {both['std_folds']:.2f}"
    assert any("every downstream test fold" in note for note in table.attrs["footnotes"])
    with pytest.raises(ValueError, match="spread: expected one of"):
        summarise(frame(rows), spread="seeds")


def test_one_checkpoint_has_one_spread_its_folds():
    rows = [result_row("yaware", "adni/ad-vs-hc", "cv", 61.0, 4.0)]
    for spread in ("folds", "checkpoints"):
        row = summarise(frame(rows), spread=spread).iloc[0]
        assert (row["std"], row["spread"], row["runs"]) == (4.0, "cv folds", 1)


def test_the_best_method_lines_never_print_nan(openbhb_results):
    results, _, _ = openbhb_results
    results = results.assign(std=np.nan)                          # test splits: one score, no SD
    text = best_methods_markdown(best_methods(results, ["openbhb/age", "openbhb/sex"], 2))
    assert "nan" not in text and text.count("no SD (one test split)") == 2
