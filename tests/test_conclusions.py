"""Conclusions written from the numbers: the verdicts follow the intervals, the words follow the verdicts."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from anatcl_core.conclusions import chance_verdicts, conclusions_markdown
from test_report import frame, result_row


def rows_for(task, scores, std=2.0, folds=5, fold=0, class_counts="50/50"):
    return [{**result_row(m, task, "cv", s, std), "n_scored": folds, "fold": fold, "class_counts": class_counts}
            for m, s in scores.items()]


def test_a_verdict_is_the_interval_against_chance():
    half = stats.t.ppf(0.975, 4) * 2.0 / np.sqrt(5)                 # 2.48 points
    results = frame(rows_for("adni/ad-vs-hc", {"yaware": 50 + half + 0.01, "simclr": 50 + half - 0.01,
                                               "l1": 50 - half - 0.01}))
    verdicts = chance_verdicts(results, ["adni/ad-vs-hc"]).set_index("method")["verdict"]
    assert verdicts.to_dict() == {"y-Aware": "above chance", "SimCLR": "at chance", "L1": "below chance"}


def test_chance_follows_the_number_of_classes():
    results = frame(rows_for("schizconnect/handedness", {"yaware": 40.0}, class_counts="10/20/30"))
    verdict = chance_verdicts(results, ["schizconnect/handedness"]).iloc[0]
    assert verdict["chance"] == pytest.approx(100 / 3) and verdict["verdict"] == "above chance"


def test_the_paragraph_names_what_the_numbers_say():
    results = frame(rows_for("adni/ad-vs-hc", {"yaware": 70.0, "simclr": 51.0})
                    + rows_for("oasis3/ad-vs-hc", {"yaware": 52.0, "simclr": 49.0})
                    + rows_for("adni/smci-vs-pmci", {"yaware": 40.0, "simclr": 50.0}, std=1.0))
    text = conclusions_markdown(results, ["adni/ad-vs-hc", "oasis3/ad-vs-hc", "adni/smci-vs-pmci"])
    assert "1 of 3 classification tasks has" in text and "adni/ad-vs-hc (y-Aware)" in text
    assert "cannot tell oasis3/ad-vs-hc, adni/smci-vs-pmci from guessing" in text
    assert "adni/smci-vs-pmci (y-Aware)" in text.split("Below chance")[1]
    assert "one seed" in text                                       # one checkpoint per method


def test_regression_tasks_are_ranked_only_when_the_spread_exceeds_the_sd():
    results = frame([result_row("yaware", "abide1/fiq", "cv", 10.0, 1.0), result_row("simclr", "abide1/fiq", "cv", 13.0, 1.0),
                     result_row("yaware", "abide1/viq", "cv", 10.0, 2.0), result_row("simclr", "abide1/viq", "cv", 10.5, 2.0)])
    text = conclusions_markdown(results, ["abide1/fiq", "abide1/viq"])
    assert "more than a typical SD over folds in abide1/fiq;" in text and "(abide1/viq)" in text
    several = pd.concat([results, results.assign(fold=1)])
    assert "one seed" not in conclusions_markdown(several, ["abide1/fiq"])


def test_the_anatomy_free_scores_are_checked_against_chance():
    from anatcl_core.conclusions import anatomy_free_markdown, phenotype_origins
    from anatcl_core.data.synthetic.phenotypes import PHENOTYPE_ORIGIN
    from anatcl_core.tasks import tasks_for
    origins = phenotype_origins(tasks_for(5), PHENOTYPE_ORIGIN).set_index("task")["driven"]
    assert origins["schizconnect/depression"] == "none" and origins["schizconnect/aims-overall"] == "anatomy"
    assert set(origins[origins == "none"].index) == {"schizconnect/aims-lower", "schizconnect/depression",
                                                     "schizconnect/gait"}
    quiet = frame(rows_for("schizconnect/gait", {"yaware": 51.0, "simclr": 49.0}))
    assert "every method sits at chance" in anatomy_free_markdown(quiet, tasks_for(5), PHENOTYPE_ORIGIN)
    leak = frame(rows_for("schizconnect/gait", {"yaware": 75.0, "simclr": 49.0}))
    text = anatomy_free_markdown(leak, tasks_for(5), PHENOTYPE_ORIGIN)
    assert "schizconnect/gait (y-Aware, above chance)" in text


def test_probe_notes_keep_the_warnings_pool_the_edge_counts_and_drop_the_routine():
    from anatcl_core.conclusions import notes_markdown
    note = "C by inner 3-fold CV over 7 values; C at the grid edge in {}/5 folds"
    rows = [{**result_row("yaware", "adni/ad-vs-hc", "cv", 60.0, 2.0), "note": note.format(2), "edge_folds": 2,
             "n_scored": 5},
            {**result_row("simclr", "adni/ad-vs-hc", "cv", 58.0, 2.0), "note": note.format(3), "edge_folds": 3,
             "n_scored": 5},
            {**result_row("yaware", "abide1/pdd-nos", "cv", 50.0, 1.0),
             "note": "smallest class has 7 subjects, fewer than 2 per test fold: 3 repeats; C by inner 3-fold CV "
                     "over 7 values"},
            {**result_row("yaware", "openbhb/age", "openbhb", 5.0, 0.0),
             "note": "fit on 100 train rows, scored on 20 internal_test rows; alpha by inner 3-fold CV over 7 values"}]
    text = notes_markdown(frame(rows))
    assert "**adni/ad-vs-hc**: C at the edge of its grid in 5 of 10 folds" in text
    assert "**abide1/pdd-nos**: smallest class has 7 subjects" in text
    assert "openbhb/age" not in text and "by inner" not in text
    assert "grid edge in" not in text                                  # the count replaces the note's words
    quiet = [{**r, "note": "C by inner 3-fold CV over 7 values", "edge_folds": 0} for r in rows]
    assert notes_markdown(frame(quiet)).startswith("No probe needed a warning")
    saved_before = notes_markdown(frame(rows).drop(columns="edge_folds"))    # results from before the column
    assert "**adni/ad-vs-hc**: C at the grid edge in 2/5 folds; C at the grid edge in 3/5 folds" in saved_before
    ridge = [{**result_row("yaware", "abide1/fiq", "cv", 12.0, 1.0), "edge_folds": 1, "n_scored": 5}]
    assert "**abide1/fiq**: alpha at the edge of its grid in 1 of 5 folds" in notes_markdown(frame(ridge))


def test_panel_grid_keeps_three_panels_a_row_and_exactly_the_panels_asked_for():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from anatcl_core.figure_layout import panel_grid
    for n, per_row, rows in [(1, 3, 1), (5, 3, 2), (7, 3, 3), (4, 2, 2)]:
        fig, axes = panel_grid(n, per_row=per_row)
        assert len(axes) == n == len(fig.axes)
        columns = {round(ax.get_position().x0, 3) for ax in axes}
        assert len(columns) == min(n, per_row) and len({round(ax.get_position().y0, 3) for ax in axes}) == rows
        plt.close(fig)
    for bad in [dict(n_panels=0), dict(n_panels=4, per_row=4)]:
        with pytest.raises(ValueError, match="panel_grid"):
            panel_grid(**bad)


def _paired(verdict_of):
    """anatomy_paired rows for AnatCL-L3/-G3 on both diagnoses of both worlds: +6 'better', -6 'worse', 0 'none'."""
    from anatcl_core.anatomy_experiment import DIAGNOSES
    shift = {"better": 6.0, "worse": -6.0, "none": 0.0}
    return pd.DataFrame([{"world": w, "task": t, "metric": "balanced_accuracy", "method": m, "minus": "yaware",
                          "difference": shift[verdict_of(w, m)], "low": shift[verdict_of(w, m)] - 3,
                          "high": shift[verdict_of(w, m)] + 3, "n_seeds": 3, "sd_seeds": 1.0, "detectable": 5.0}
                         for w in ("orthogonal", "aligned") for t in DIAGNOSES for m in ("anatcl-local", "anatcl-global")])


@pytest.mark.parametrize("verdict_of, expected, worse", [
    (lambda w, m: "better" if w == "aligned" else "none", "The prediction held:", False),
    (lambda w, m: "none", "did not hold: AnatCL beat y-Aware on no diagnosis", False),
    (lambda w, m: "better", "did not hold: AnatCL beat y-Aware in the orthogonal world too", False),
    (lambda w, m: "worse" if (w, m) == ("aligned", "anatcl-local") else "none", "did not hold", True),
])
def test_the_prediction_is_judged_from_the_intervals(verdict_of, expected, worse):
    from anatcl_core.anatomy_experiment import prediction_markdown
    text = prediction_markdown(_paired(verdict_of))
    overall = text.splitlines()[-1]
    assert expected in overall
    assert ("worse than y-Aware, with an interval clear of 0, in 2 of 8 comparisons" in overall) == worse
    if worse:
        assert "AnatCL-L3 on ADNI HC vs AD in the aligned world" in overall


def test_the_reading_of_the_anatomy_run_comes_from_its_rows():
    from anatcl_core.anatomy_experiment import reading_markdown
    scores = pd.DataFrame([{"world": w, "method": m, "seed": s, "task": "adni/ad-vs-hc", "score": v + s}
                           for w, values in {"orthogonal": {"desikan-table": 90, "yaware": 70, "simclr": 72},
                                             "aligned": {"desikan-table": 68, "yaware": 60, "simclr": 61}}.items()
                           for m, v in values.items() for s in (0, 2)])
    paired = _paired(lambda w, m: "none")
    paired = pd.concat([paired, paired.iloc[:1].assign(method="anatcl-rbf", difference=-6.0, low=-9.0, high=-3.0)])
    text = reading_markdown(scores, paired)
    assert "91.0 % in the orthogonal world, 69.0 % in the aligned world; the best encoder 73.0 %, 62.0 %" in text
    assert "AnatCL-RBF (extension) against y-Aware" in text and "-6.0 [-9.0, -3.0], worse" in text
    assert "AnatCL-L3" not in text            # the paper's methods are judged by prediction_markdown
    assert "ADNI HC vs AD is harder to see for every method, the Desikan table included" in text
    assert ("The best encoder sits below the Desikan table on ADNI HC vs AD: by 18.0 to 18.0 points in the "
            "orthogonal world, by 7.0 to 7.0 points in the aligned world.") in text
    encoders = reading_markdown(scores[scores["method"] != "desikan-table"], paired)
    assert "harder to see for every method." in encoders and "Desikan" not in encoders
    assert "harder to see" not in reading_markdown(scores[scores["world"] == "aligned"], paired)
    assert reading_markdown(scores.assign(task="openbhb/age"), paired.iloc[:0]) == ""
    mixed = scores.assign(score=np.where((scores["world"] == "aligned") & (scores["method"] == "simclr"), 95.0,
                                         scores["score"]))
    text = reading_markdown(mixed, paired)
    assert "In the aligned world 2 of 3 (diagnosis, method) scores are lower" in text
    assert "The best encoder reaches the Desikan table in 1 of 2 (diagnosis, world) cells" in text
