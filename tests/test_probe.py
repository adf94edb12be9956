"""Linear probes: no leakage, signal recovery, determinism, small classes, the paper's tables, the cache, the CLI."""
from __future__ import annotations

import csv
import json
import os
import re
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.dummy import DummyRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import mean_absolute_error
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from anatcl_core import evaluation
from anatcl_core.atomic import STALE_TEMPORARY_S
from anatcl_core.data.cohort import Cohort
from anatcl_core.embed import EmbeddingCache
from anatcl_core.evaluation import evaluate_openbhb, evaluate_tasks, parse_checkpoint
from anatcl_core.feature_study import TABLE6_MEASURES, age_from_measures, feature_table
from anatcl_core.methods import METHOD_LABELS
from anatcl_core.probe import C_GRID, cross_validate_probe, fit_probe, score
from anatcl_core.probe_folds import cv_splits
from anatcl_core.probe_search import REFERENCE_SOLVER
from anatcl_core.report import paper_table, summarise
from anatcl_core.tasks import TASKS, tasks_for

PAPER_CSV = Path(__file__).resolve().parents[1] / "anatcl_core" / "paper_tables.csv"
PAPER_MD = Path(__file__).resolve().parents[2] / "shared" / "reference" / "paper.md"
PAIR = re.compile(r"(-?\d+(?:\.\d+)?)\s*(?:±|\\pm)\s*(-?\d+(?:\.\d+)?)")
SMALL_GRID = (0.01, 1.0)


def balanced_labels(n: int) -> np.ndarray:
    return np.r_[np.zeros(n // 2), np.ones(n - n // 2)].astype(np.int64)


# ----------------------------------------------------------------------------- no leakage

def test_noise_features_score_at_chance():
    scores = []
    for seed in range(8):
        rng = np.random.default_rng(seed)
        X, y = rng.normal(size=(100, 20)), rng.permutation(balanced_labels(100))
        scores.append(cross_validate_probe(X, y, "classification", seed=seed, grid=SMALL_GRID).mean)
    assert abs(np.mean(scores) - 50) < 5, scores


def test_noise_regression_does_not_beat_the_mean_predictor():
    ours, dummy = [], []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        X, y = rng.normal(size=(100, 20)), rng.normal(50, 10, 100)
        ours.append(cross_validate_probe(X, y, "regression", seed=seed, grid=(1.0, 100.0, 1e4)).mean)
        dummy.append(np.mean([mean_absolute_error(y[te], DummyRegressor().fit(X[tr], y[tr]).predict(X[te]))
                              for tr, te in cv_splits(y, "regression", 5, seed=seed)]))
    assert np.mean(ours) >= 0.99 * np.mean(dummy), (ours, dummy)


def scale_trap(seed: int, n_groups: int = 5, per_group: int = 40, scale: float = 1e3):
    """A weak real signal, plus one noise feature per group whose values are huge only inside that group.

    When a group is the test fold, a scaler fitted on the training rows leaves its trap feature at
    ordinary scale, the model gives it a small weight, and the huge test values swamp the prediction.
    A scaler fitted on all rows sees the huge values, shrinks the feature to nothing and escapes the trap:
    information about the test rows that a deployed model would not have.
    """
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), per_group)
    y = np.tile(balanced_labels(per_group), n_groups)
    signal = 0.6 * (2 * y - 1)[:, None] + rng.normal(size=(len(y), 3))
    trap = rng.normal(size=(len(y), n_groups))
    trap[np.arange(len(y)), groups] *= scale
    return np.hstack([signal, trap]), y, groups


def test_scaler_fitted_on_all_rows_would_inflate_the_score_ours_does_not():
    C = 1.0
    for seed in range(3):
        X, y, groups = scale_trap(seed)
        ours = cross_validate_probe(X, y, "classification", groups, seed=seed, grid=(C,))
        splits = cv_splits(y, "classification", ours.n_splits, groups=groups, seed=seed)
        # our probe solves its logistic regression exactly: the same optimum as scikit-learn's exact solver
        model = LogisticRegression(C=C, class_weight="balanced", **REFERENCE_SOLVER)
        with threadpool_limits(limits=1, user_api="blas"):
            honest = [make_pipeline(StandardScaler(), model).fit(X[tr], y[tr]).score(X[te], y[te])
                      for tr, te in splits]
            X_leaky = StandardScaler().fit_transform(X)           # statistics of the test rows included
            leaky = [model.fit(X_leaky[tr], y[tr]).score(X_leaky[te], y[te]) for tr, te in splits]
        # balanced test folds: accuracy equals balanced accuracy
        assert ours.scores == pytest.approx([100 * s for s in honest])
        assert 100 * np.mean(leaky) > ours.mean + 20, (np.mean(leaky), ours.mean)


def test_hyperparameter_search_on_all_rows_would_inflate_the_score_nested_does_not():
    grid = np.logspace(-3, 1, 9)
    nested, leaky = [], []
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        X, y = rng.normal(size=(40, 10)), balanced_labels(40)
        nested.append(cross_validate_probe(X, y, "classification", seed=seed, grid=grid, inner_splits=2).mean)
        # The classic mistake: choose C by CV on every row, then report that same CV's best score.
        search = GridSearchCV(make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced")),
                              {"logisticregression__C": grid}, cv=cv_splits(y, "classification", 5, seed=seed),
                              scoring="balanced_accuracy")
        with threadpool_limits(limits=1, user_api="blas"):       # as the probe does: tiny fits, no threads
            leaky.append(100 * search.fit(X, y).best_score_)
    assert abs(np.mean(nested) - 50) < 5
    assert np.mean(leaky) > np.mean(nested) + 3, (np.mean(leaky), np.mean(nested))


# ----------------------------------------------------------------------------- signal, determinism

def test_planted_linear_signal_is_recovered():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 10))
    y_class = (X[:, :3].sum(axis=1) + 0.3 * rng.normal(size=200) > 0).astype(np.int64)
    assert cross_validate_probe(X, y_class, "classification", grid=SMALL_GRID).mean > 90
    y_reg = 10 * X[:, :3] @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=200)
    result = cross_validate_probe(X, y_reg, "regression", grid=(0.1, 10.0))
    assert result.metric == "mae" and result.mean < 0.1 * y_reg.std()


def test_same_seed_same_result_other_seed_other_folds():
    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(80, 10)), rng.permutation(balanced_labels(80))
    first = cross_validate_probe(X, y, "classification", seed=3, grid=SMALL_GRID)
    assert cross_validate_probe(X, y, "classification", seed=3, grid=SMALL_GRID) == first
    assert cross_validate_probe(X, y, "classification", seed=4, grid=SMALL_GRID).scores != first.scores


# ----------------------------------------------------------------------------- small classes, groups

def test_seven_subject_class_is_repeated_and_says_so():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(7), np.zeros(93)].astype(np.int64)
    X = rng.normal(size=(100, 5)) + 2.0 * y[:, None]
    result = cross_validate_probe(X, y, "classification", grid=SMALL_GRID, inner_splits=2)
    assert result.evaluable and result.class_counts == (93, 7)
    assert (result.n_splits, result.n_repeats, len(result.scores)) == (5, 10, 50)
    assert "7 subjects" in result.note and "10 repeats" in result.note
    assert result.mean > 75


def test_class_smaller_than_the_folds_reduces_them():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(3), np.zeros(57)].astype(np.int64)
    result = cross_validate_probe(rng.normal(size=(60, 4)), y, "classification", grid=SMALL_GRID)
    assert result.evaluable and result.n_splits == 3 and "3 folds instead of 5" in result.note


@pytest.mark.parametrize("y, reason", [
    (np.r_[1, np.zeros(59)], "has 1 subject"),
    (np.zeros(60), "only one class"),
])
def test_too_small_class_is_not_evaluable(y, reason):
    result = cross_validate_probe(np.zeros((60, 3)), y.astype(np.int64), "classification")
    assert not result.evaluable and reason in result.note and result.scores == ()
    assert np.isnan(result.mean)


def test_tiny_regression_is_not_evaluable_and_small_one_uses_fewer_folds():
    assert not cross_validate_probe(np.zeros((3, 2)), np.arange(3.0), "regression").evaluable
    rng = np.random.default_rng(0)
    result = cross_validate_probe(rng.normal(size=(6, 2)), np.arange(6.0), "regression", grid=(1.0,))
    assert result.n_splits == 3 and "3 folds instead of 5" in result.note


def test_groups_stay_whole_within_folds():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(30), 4)
    y = np.repeat(rng.permutation(balanced_labels(30)), 4)
    for train, test in cv_splits(y, "classification", 5, groups=groups, n_repeats=2, seed=0):
        assert not set(groups[train]) & set(groups[test])
    result = cross_validate_probe(rng.normal(size=(120, 5)), y, "classification", groups, grid=SMALL_GRID)
    assert result.evaluable and len(result.scores) == 5


def test_regression_folds_are_stratified_even_with_tied_scores():
    y = np.repeat([90.0, 100.0, 110.0], [10, 60, 30])          # IQ-like: few distinct values
    means = [y[test].mean() for _, test in cv_splits(y, "regression", 5, seed=0)]
    assert np.ptp(means) < 2.0


# ----------------------------------------------------------------------------- OpenBHB protocol

def test_openbhb_protocol_fits_on_train_and_scores_both_test_splits():
    rng = np.random.default_rng(0)
    n = 300
    participants = pd.DataFrame({"age": rng.uniform(10, 80, n), "sex": rng.choice(["M", "F"], n),
                                 "split": rng.choice(["train", "internal_test", "external_test"], n,
                                                     p=[0.6, 0.2, 0.2])})
    X = np.c_[participants["age"] / 10 + 0.1 * rng.normal(size=n), rng.normal(size=(n, 5))]
    results = evaluate_openbhb(X, participants, TASKS["openbhb/age"], grid=(0.1, 1.0))
    assert set(results) == {"internal_test", "external_test"}
    for name, result in results.items():
        assert result.n_samples == (participants["split"] == name).sum()
        assert result.mean < 2.0 and np.isnan(result.std) and "train rows" in result.note
    no_external = participants.assign(split=participants["split"].replace("external_test", "train"))
    assert not evaluate_openbhb(X, no_external, TASKS["openbhb/sex"], grid=SMALL_GRID)["external_test"].evaluable


# ----------------------------------------------------------------------------- the paper's tables

def parse_paper_markdown(text: str) -> dict[int, dict[str, list[tuple[float, float]]]]:
    """{table number: {row name: [(mean, std) per column]}} from the paper's markdown tables."""
    tables: dict[int, dict[str, list[tuple[float, float]]]] = {}
    current = None
    for line in text.splitlines():
        caption = re.match(r"Table (\d+):", line)
        if caption:
            current = int(caption[1])
            continue
        line = line.replace("<u>", "").replace("</u>", "")
        pairs = PAIR.findall(line)
        if current is not None and line.startswith("|") and pairs:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            name = next(c for c in cells if c and c != "ResNet-18")
            tables.setdefault(current, {})[name] = [(float(m), float(s)) for m, s in pairs]
    return tables


def rendered_pairs(cells: pd.Series) -> list[tuple[float, float]]:
    return [tuple(map(float, PAIR.fullmatch(cell).groups())) for cell in cells]


@pytest.mark.parametrize("table", [2, 3, 4, 5])
def test_paper_table_reproduces_the_papers_markdown(table):
    if not PAPER_MD.exists():
        pytest.skip(f"{PAPER_MD} (the paper as text, kept outside the repository) is not here")
    printed = parse_paper_markdown(PAPER_MD.read_text(encoding="utf-8"))[table]
    rendered = paper_table(table)
    assert list(rendered.index) == list(METHOD_LABELS.values())
    for row_name, values in printed.items():
        method = next(m for m in METHOD_LABELS.values() if row_name.startswith(m))
        assert rendered_pairs(rendered.loc[method]) == values, (table, method)


@pytest.mark.parametrize("table", [2, 3, 4, 5])
def test_paper_table_reproduces_the_csv(table):
    with PAPER_CSV.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["table"]) == table]
    rendered = paper_table(table)
    assert rendered.shape == (6, len(tasks_for(table)))
    for r in rows:
        column = [t.id for t in tasks_for(table)].index(r["task"])
        assert rendered_pairs(rendered.loc[[r["method"]]].iloc[:, column]) == [(float(r["mean"]), float(r["std"]))]


def test_table6_reproduces_the_papers_markdown():
    if not PAPER_MD.exists():
        pytest.skip(f"{PAPER_MD} is not here")
    printed = parse_paper_markdown(PAPER_MD.read_text(encoding="utf-8"))[6]
    rendered = feature_table()
    assert rendered_pairs(rendered.loc[("MAE (years)", "paper")]) == [(-m, s) for m, s in printed["Neg. MAE"]]
    assert rendered_pairs(rendered.loc[("R^2", "paper")]) == printed["R^2"]


def fake_results(scores: dict[tuple[str, int, str], float]) -> pd.DataFrame:
    """An evaluate_tasks-shaped frame (every RESULT_COLUMNS, blank where not given) with the given scores
    (std 1.0) for cross-validated tasks."""
    rows = [{"method": m, "fold": f, "task": t, "metric": TASKS[t].metric, "evaluation": "cv", "score": s,
             "std": 1.0, "evaluable": True} for (m, f, t), s in scores.items()]
    return pd.DataFrame(rows, columns=list(evaluation.RESULT_COLUMNS))


def test_paper_table_puts_ours_beside_the_paper_with_the_difference():
    ours = fake_results({("anatcl-local", 0, "abide1/pdd-nos"): 60.0, ("random-init", 0, "abide1/pdd-nos"): 50.0})
    table = paper_table(4, ours)
    cell = {source: table.loc["AnatCL-L3", ("ABIDE-I", "PDD-NOS", source)] for source in ("paper", "ours", "Δ")}
    assert cell == {"paper": "65.37 ± 6.73", "ours": "60.00 ± 1.00", "Δ": "-5.37"}
    assert table.loc["SimCLR", ("ABIDE-I", "PDD-NOS", "ours")] == "—"
    assert list(table.index)[-1] == "untrained encoder"                # methods the paper lacks come last
    assert table.loc["untrained encoder", ("ABIDE-I", "PDD-NOS", "paper")] == "—"


def test_iq_columns_are_marked_and_explained():
    table = paper_table(5)
    assert ("ABIDE-I", "FIQ (MAE)†") in table.columns
    assert any("abide1/fiq" in note for note in table.attrs["footnotes"])


def test_summarise_takes_mean_and_std_over_checkpoints():
    ours = fake_results({("expw", fold, "adni/ad-vs-hc"): s for fold, s in enumerate([70.0, 72.0, 74.0])})
    row = summarise(ours, spread="checkpoints").iloc[0]
    assert (row["mean"], row["runs"], row["spread"]) == (72.0, 3, "checkpoints")
    assert row["std"] == pytest.approx(np.std([70.0, 72.0, 74.0]))


def test_evaluate_tasks_tidy_frame_over_methods_and_folds():
    rng = np.random.default_rng(0)
    participants = pd.DataFrame({"diagnosis": np.repeat(["control", "ad", "smci", "pmci"], [30, 20, 12, 10])})
    embeddings = {(m, f): {"adni": rng.normal(size=(72, 6))} for m in ("simclr", "l1") for f in (0, 1)}
    results = evaluate_tasks(embeddings, {"adni": participants}, ["adni/ad-vs-hc", "adni/smci-vs-pmci"],
                             grid=SMALL_GRID, inner_splits=2, small_class_repeats=1)
    assert list(results.columns) == list(evaluation.RESULT_COLUMNS) and len(results) == 8
    assert set(results["class_counts"]) == {"30/20", "12/10"}
    assert paper_table(3, results).loc["L1", ("ADNI", "HC vs AD", "ours")] != "—"


# ----------------------------------------------------------------------------- feature study

def test_feature_study_finds_the_measure_that_carries_age():
    rng = np.random.default_rng(0)
    n = 200
    participants = pd.DataFrame({"age": rng.uniform(10, 80, n), "split": "train"})
    roi = rng.normal(size=(n, 7, 68))
    roi[:, 1, :10] += participants["age"].to_numpy()[:, None] / 10     # channel 1: gray-matter volume
    study = age_from_measures(roi, participants, grid=(1.0, 10.0), inner_splits=2)
    assert set(study["task"]) == {f"openbhb/age[{m}]" for m in TABLE6_MEASURES}
    mae = study.query("metric == 'mae'").set_index("measure")["mean"]
    r2 = study.query("metric == 'r2'").set_index("measure")["mean"]
    assert mae.idxmin() == "gray_matter_volume" and r2.idxmax() == "gray_matter_volume" and r2.max() > 0.9
    assert feature_table(study).loc[("R^2", "ours"), "GMV"].startswith(f"{r2.max():.2f}")


# ----------------------------------------------------------------------------- embedding cache, CLI

def small_cohort(path: Path, n: int, seed: int = 0, level: float = 0.0):
    """A real cohort of n subjects on a 4x4x4 grid whose tables depend on `seed` and volumes on `level`."""
    from anatcl_core.data.cohort import write_cohort
    rng = np.random.default_rng(seed)
    participants = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(n)], "age": rng.uniform(20, 80, n),
                                 "sex": "F", "site": "s1", "diagnosis": "control"})
    return write_cohort(path, participants, np.full((n, 4, 4, 4), level, np.float32),
                        rng.uniform(1, 2, (n, 7, 68)).astype(np.float32), np.diag([9.0, 9.0, 9.0, 1.0]),
                        provenance={"source": "tests/test_probe.py"}, overwrite=True)


def test_embedding_cache_embeds_once_and_again_when_the_cohort_changes(tmp_path):
    checkpoint = tmp_path / "ckpt.pth"
    checkpoint.write_bytes(b"weights")
    calls = []

    def fake_embed(model, cohort, batch_size, device, progress):
        calls.append(cohort.path.name)
        return np.full((len(cohort), 4), float(len(calls)), dtype=np.float32)

    cache = EmbeddingCache(tmp_path / "cache", load_model=lambda path, device: "model", embed_cohort=fake_embed)
    cohorts = {"adni": small_cohort(tmp_path / "data" / "adni", 5), "oasis3": small_cohort(tmp_path / "data" / "o", 3)}
    first = cache.embeddings(checkpoint, cohorts)
    again = cache.embeddings(checkpoint, cohorts)
    assert calls == ["adni", "o"] and all(np.array_equal(first[k], again[k]) for k in first)
    digest_dir = cache.path_for(checkpoint, "adni").parent
    assert len(digest_dir.name) == 16 and sorted(p.name for p in digest_dir.iterdir()) == [
        "adni.npy", "adni.source", "oasis3.npy", "oasis3.source"]                 # no temporary files left
    cohorts["adni"] = small_cohort(tmp_path / "data" / "adni", 5, seed=1)        # regenerated
    assert cache.embeddings(checkpoint, cohorts)["adni"][0, 0] == 3.0 and calls == ["adni", "o", "adni"]
    cohorts["adni"] = small_cohort(tmp_path / "data" / "adni", 5, seed=1, level=0.5)   # same tables, new volumes
    assert cache.embeddings(checkpoint, cohorts)["adni"][0, 0] == 4.0 and calls == ["adni", "o", "adni", "adni"]
    moved = tmp_path / "elsewhere" / "adni"                                       # a copy elsewhere: same content
    shutil.copytree(tmp_path / "data" / "adni", moved)
    cache.embeddings(checkpoint, {"adni": Cohort.open(moved)})
    assert calls == ["adni", "o", "adni", "adni"]
    # the temporary files of a run killed while saving go once they are old; a fresh one may be a live save's
    killed, live = digest_dir / ".adni.npy.k1.tmp", digest_dir / ".oasis3.source.k2.tmp"
    for path in (killed, live):
        path.write_bytes(b"half")
    old = time.time() - STALE_TEMPORARY_S - 1
    os.utime(killed, (old, old))
    cache.embeddings(checkpoint, cohorts)
    assert not killed.exists() and live.exists()


def test_parse_checkpoint_specs(tmp_path):
    assert parse_checkpoint("anatcl-global:3=runs/x.pth") == ("anatcl-global", 3, Path("runs/x.pth"))
    assert parse_checkpoint("runs/yaware/fold2/last.pth") == ("yaware", 2, Path("runs/yaware/fold2/last.pth"))
    assert parse_checkpoint("weights.pth") == ("weights", 0, Path("weights.pth"))


def test_probe_command_writes_results_from_cached_embeddings(tmp_path, capsys):
    from anatcl_core.cli import main
    from anatcl_core.data.cohort import write_cohort
    rng = np.random.default_rng(0)
    diagnosis = np.repeat(["control", "ad", "smci"], [30, 20, 5])
    n = len(diagnosis)
    participants = pd.DataFrame({"participant_id": [f"sub-{i}" for i in range(n)], "age": rng.uniform(60, 90, n),
                                 "sex": rng.choice(["M", "F"], n), "site": "s1", "diagnosis": diagnosis})
    cohort = write_cohort(tmp_path / "data" / "adni", participants, np.zeros((n, 4, 4, 4), np.float32),
                          rng.uniform(1, 2, (n, 7, 68)).astype(np.float32), np.diag([9.0, 9.0, 9.0, 1.0]),
                          provenance={"source": "tests/test_probe.py"})
    checkpoint = tmp_path / "ckpt.pth"
    checkpoint.write_bytes(b"weights")
    features = rng.normal(size=(n, 8)) + (diagnosis == "ad")[:, None]
    EmbeddingCache(tmp_path / "cache", load_model=lambda *_: None,
                   embed_cohort=lambda *_, **__: features).embeddings(checkpoint, {"adni": cohort})

    out = tmp_path / "out" / "results.csv"
    assert main(["probe", "--checkpoint", f"l1:2={checkpoint}", "--data", str(tmp_path / "data"), "--tasks",
                 "adni/ad-vs-hc", "oasis3/ad-vs-hc", "--out", str(out), "--cache", str(tmp_path / "cache")]) == 0
    results = pd.read_csv(out).set_index("task")
    assert results.loc["adni/ad-vs-hc", "evaluable"] and results.loc["adni/ad-vs-hc", "score"] > 70
    assert (results["method"] == "l1").all() and (results["fold"] == 2).all()
    assert not results.loc["oasis3/ad-vs-hc", "evaluable"]
    assert f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_the_paper_protocol_is_the_authors_plain_estimators_on_the_same_folds(kind):
    """protocol='paper': no scaler, no class weights, 10^-2..10^2 by GridSearchCV(cv=5), as their estimators.py."""
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.model_selection import GridSearchCV
    rng = np.random.default_rng(5)
    X = rng.normal(size=(150, 12)) * rng.uniform(0.5, 20, 12)          # unscaled on purpose
    signal = X[:, 0] / 10 + X[:, 1] / 20
    y = (signal + rng.normal(size=150) > 0.3).astype(int) if kind == "classification" else 40 + 5 * signal
    result = cross_validate_probe(X, y, kind, n_splits=5, seed=3, protocol="paper")
    grid = 10.0 ** np.arange(-2, 3)
    for fold, (train, test) in enumerate(cv_splits(y, kind, 5, seed=3)):
        if kind == "classification":
            search = GridSearchCV(LogisticRegression(solver="saga", max_iter=150, random_state=3 + fold),
                                  {"C": grid}, cv=5, scoring="balanced_accuracy")
        else:
            search = GridSearchCV(Ridge(), {"alpha": grid}, cv=5, scoring="r2")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                       # saga at 150 iterations does not converge
            search.fit(X[train], y[train])
        assert result.best_params[fold] == search.best_params_["C" if kind == "classification" else "alpha"]
        assert result.scores[fold] == pytest.approx(score(kind, y[test], search.predict(X[test])), abs=1e-9)
    ours = cross_validate_probe(X, y, kind, n_splits=5, seed=3)
    assert ours.scores != result.scores                          # the protocols differ on unscaled features


def test_table_results_saves_the_table_with_its_settings_and_a_rerun_probes_only_what_changed(tmp_path,
                                                                                             monkeypatch):
    from types import SimpleNamespace

    from anatcl_core import experiments
    from anatcl_core.data.synthetic import simulate_tables
    tables = {c: simulate_tables(c, 80, seed=0).participants for c in ("adni", "oasis3")}
    rng = np.random.default_rng(0)
    features = {m: {c: rng.normal(size=(len(t), 4)) for c, t in tables.items()} for m in ("simclr", "l1")}
    monkeypatch.setattr(experiments, "open_cohorts", lambda root, names=None: {
        c: SimpleNamespace(participants=t) for c, t in tables.items()})
    monkeypatch.setattr(experiments, "method_embeddings", lambda root, out, methods, fold, **kw: {
        (m, fold): features[m] for m in methods})
    calls, probe = [], evaluation.evaluate_task
    monkeypatch.setattr(evaluation, "evaluate_task", lambda *a, **kw: calls.append(1) or probe(*a, **kw))
    options = {"protocol": "ours", "small_class_repeats": 1, "grid": (1.0,)}
    first = experiments.table_results("data", tmp_path, 3, ["simclr", "l1"], **options)
    assert len(calls) == 6 and first["evaluable"].all()
    saved = experiments.results_path(tmp_path, 3)
    pd.testing.assert_frame_equal(pd.read_csv(saved), pd.read_csv(saved.parent / "table3.csv"))
    assert json.loads(saved.with_suffix(".settings.json").read_text()) == {"seed": 0, "n_splits": 5, **{
        k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}}
    again = experiments.table_results("data", tmp_path, 3, ["simclr", "l1"], **options)
    assert len(calls) == 6                                   # every probe read from <output_dir>/probes
    pd.testing.assert_frame_equal(again, first)
    features["l1"] = {c: x + 1e-3 * rng.normal(size=x.shape) for c, x in features["l1"].items()}   # l1 retrained
    experiments.table_results("data", tmp_path, 3, ["simclr", "l1"], **options)
    assert len(calls) == 9
    experiments.table_results("data", tmp_path, 3, ["simclr", "l1"], **{**options, "protocol": "paper"})
    assert len(calls) == 15


def test_edge_folds_counts_the_folds_whose_penalty_is_at_an_end_of_the_grid():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 8)), rng.integers(0, 2, 60)
    result = cross_validate_probe(X, y, "classification", seed=1)
    grid = np.asarray(C_GRID)
    assert result.edge_folds == int(np.isin(result.best_params, [grid.min(), grid.max()]).sum())
    assert result.edge_folds > 0                                 # no signal: the strongest penalty wins
    assert f"C at the grid edge in {result.edge_folds}/5 folds" in result.note
    assert cross_validate_probe(X, y, "classification", grid=(0.1, 1.0), seed=1).edge_folds == 0


@pytest.mark.parametrize("protocol", ["ours", "paper"])
@pytest.mark.parametrize("kind, n, d", [("classification", 120, 40), ("classification", 60, 80),
                                        ("regression", 120, 40), ("regression", 60, 80)])
def test_the_direct_search_chooses_what_grid_search_chooses(kind, n, d, protocol):
    """probe_search against scikit-learn's GridSearchCV on the same folds: penalties equal, scores to 1e-6."""
    rng = np.random.default_rng(n + d)
    X = (rng.normal(size=(n, d)) * rng.uniform(0.2, 5, d)).astype(np.float32)
    signal = X[:, :3].sum(axis=1)
    y = (signal + rng.normal(size=n) > 0).astype(int) if kind == "classification" else 30 + signal + rng.normal(size=n)
    y[:4] = 1 if kind == "classification" else y[:4]
    direct = cross_validate_probe(X, y, kind, n_splits=4, seed=2, protocol=protocol)
    reference = cross_validate_probe(X, y, kind, n_splits=4, seed=2, protocol=protocol, grid_search=True)
    assert direct.best_params == reference.best_params
    np.testing.assert_allclose(direct.scores, reference.scores, rtol=0, atol=1e-6)


def test_the_ridge_path_is_sklearns_ridge_for_every_alpha():
    from sklearn.linear_model import Ridge
    from anatcl_core.probe_search import ridge_path
    rng = np.random.default_rng(0)
    for n, d in ((50, 10), (20, 60)):                          # more rows than features, and fewer
        Z, y, new = rng.normal(size=(n, d)) + 3, rng.normal(size=n), rng.normal(size=(7, d))
        alphas = [1e-3, 0.1, 10.0, 1e4]
        expected = [Ridge(alpha=a).fit(Z, y).predict(new) for a in alphas]
        np.testing.assert_allclose(ridge_path(Z, y, new, alphas), expected, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_features_are_refused_with_the_rows_named(bad):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(40, 4)), rng.integers(0, 2, 40)
    X[[3, 17], 1] = bad
    with pytest.raises(ValueError, match=r"features: 2 row\(s\) hold NaN or inf \(rows \[3, 17\]\)"):
        cross_validate_probe(X, y, "classification")
    with pytest.raises(ValueError, match="hold NaN or inf"):
        fit_probe(X, y, "regression")


def test_workers_probe_side_by_side_and_give_the_same_rows():
    rng = np.random.default_rng(2)
    cohort = pd.DataFrame({"participant_id": [f"s{i}" for i in range(60)], "diagnosis": ["control"] * 30 + ["ad"] * 30,
                           "age": rng.uniform(60, 80, 60), "sex": rng.integers(0, 2, 60)})
    embeddings = {(m, 0): {"adni": rng.normal(size=(60, 6))} for m in ("simclr", "yaware")}
    alone = evaluation.evaluate_tasks(embeddings, {"adni": cohort}, ["adni/ad-vs-hc"], small_class_repeats=1)
    together = evaluation.evaluate_tasks(embeddings, {"adni": cohort}, ["adni/ad-vs-hc"], small_class_repeats=1,
                                         workers=2)
    pd.testing.assert_frame_equal(alone, together)
    assert list(alone["method"]) == ["simclr", "yaware"] and alone["evaluable"].all()


def test_no_more_worker_processes_than_probes_to_run(tmp_path, monkeypatch):
    rng = np.random.default_rng(2)
    cohort = pd.DataFrame({"participant_id": [f"s{i}" for i in range(60)], "diagnosis": ["control"] * 30 + ["ad"] * 30,
                           "age": rng.uniform(60, 80, 60), "sex": rng.integers(0, 2, 60)})
    embeddings = {(m, 0): {"adni": rng.normal(size=(60, 6))} for m in ("simclr", "yaware")}
    started = []
    real = evaluation.Parallel
    monkeypatch.setattr(evaluation, "Parallel", lambda n_jobs, **kw: started.append(n_jobs) or real(n_jobs, **kw))
    monkeypatch.setattr(evaluation, "cpu_count", lambda: 8)
    tasks = ["adni/ad-vs-hc", "abide1/autism"]                    # no abide1 cohort: not evaluable, nothing to run
    options = dict(small_class_repeats=1, workers=64, cache=tmp_path)
    first = evaluation.evaluate_tasks(embeddings, {"adni": cohort}, tasks, **options)
    assert started == [2]                                         # two probes: two processes, not 64 or 4
    monkeypatch.setattr(evaluation, "cpu_count", lambda: 1)
    for key in embeddings:
        embeddings[key]["adni"] = embeddings[key]["adni"] + 1.0
    evaluation.evaluate_tasks(embeddings, {"adni": cohort}, tasks, **options)
    assert started == [2]                                         # two probes, one core: probed in this process
    again = evaluation.evaluate_tasks(embeddings, {"adni": cohort}, tasks, **options)
    assert started == [2]                                         # all read from the cache: none started
    assert list(again["evaluable"]) == [True, False, True, False]
    assert first["score"].notna().sum() == 2


def test_groups_that_never_mix_the_classes_are_not_evaluable_and_missing_labels_are_refused():
    rng = np.random.default_rng(4)
    X, y = rng.normal(size=(40, 5)), np.repeat([0, 1], 20)
    sites = np.repeat(["a", "b", "c", "d"], 10)                 # every site holds one class only
    result = cross_validate_probe(X, y, "classification", groups=sites)
    assert not result.evaluable and "held a single class" in result.note and result.scores == ()
    labels = y.astype(float)
    labels[[2, 7]] = np.nan
    for kind in ("classification", "regression"):
        with pytest.raises(ValueError, match=r"labels: 2 missing value\(s\) in y \(rows \[2, 7\]\)"):
            cross_validate_probe(X, labels, kind)
