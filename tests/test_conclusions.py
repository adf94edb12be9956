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
