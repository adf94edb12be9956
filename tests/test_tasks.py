"""The 22 downstream tasks: ids, metadata and how they read participants tables (data_recipes/COLUMNS.md)."""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anatcl_core.evaluation import evaluate_tasks
from anatcl_core.tasks import TASKS, TaskColumnError, paper_results, select_tasks, tasks_for

PAPER_CSV = Path(__file__).resolve().parents[1] / "anatcl_core" / "paper_tables.csv"

#: Subjects per diagnosis code in the test tables: small, but keeping the paper's rare classes rare.
DIAGNOSES = {
    "openbhb": {"control": 120},
    "adni": {"control": 40, "smci": 25, "pmci": 15, "ad": 30},
    "oasis3": {"control": 50, "ad": 12},
    "schizconnect": {"control": 40, "scz_broad": 25, "scz_strict": 18, "schizoaffective": 11, "bipolar": 9},
    "abide1": {"control": 60, "autism": 35, "asperger": 15, "pdd_nos": 7},
}


def participants_table(cohort: str, seed: int = 0) -> pd.DataFrame:
    """A participants table with every column COLUMNS.md names for `cohort`, values drawn at random."""
    rng = np.random.default_rng(seed)
    diagnosis = np.repeat(list(DIAGNOSES[cohort]), list(DIAGNOSES[cohort].values()))
    n = len(diagnosis)
    table = pd.DataFrame({
        "participant_id": [f"sub-{cohort}{i:04d}" for i in range(n)],
        "age": rng.uniform(8, 90, n).round(1),
        "sex": rng.choice(["M", "F"], n),
        "site": rng.choice(["s1", "s2", "s3"], n),
        "diagnosis": diagnosis,
    })

    def sometimes_missing(values: np.ndarray, fraction: float = 0.15) -> np.ndarray:
        values = values.astype(object)
        values[rng.random(n) < fraction] = np.nan
        return values

    if cohort == "openbhb":
        table["split"] = rng.choice(["train", "internal_test", "external_test"], n, p=[0.7, 0.15, 0.15])
    if cohort in ("schizconnect", "abide1"):
        table["handedness"] = sometimes_missing(rng.choice(["right", "left", "ambidextrous"], n, p=[.7, .2, .1]))
    if cohort == "schizconnect":
        for column, top in (("aims_overall", 4), ("aims_upper", 4), ("aims_lower", 4), ("depression", 3),
                            ("gait", 4)):
            table[column] = pd.to_numeric(sometimes_missing(rng.integers(0, top + 1, n).astype(float), 0.3))
    if cohort == "abide1":
        for column in ("fiq", "viq", "piq"):
            table[column] = pd.to_numeric(sometimes_missing(rng.normal(105, 15, n).round()))
    return table


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return {cohort: participants_table(cohort) for cohort in DIAGNOSES}


def test_task_ids_and_metadata_match_the_papers_tables():
    with PAPER_CSV.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["table"] in {"2", "3", "4", "5"}]
    expected = {r["task"]: (int(r["table"]), r["metric"]) for r in rows}
    assert len(TASKS) == 22 and set(TASKS) == set(expected)
    for task in TASKS.values():
        assert (task.table, task.metric) == expected[task.id], task.id
        assert task.kind == ("regression" if task.metric == "mae" else "classification")
        assert task.id.startswith(task.cohort + "/")
    assert sum(t.kind == "classification" for t in TASKS.values()) == 18     # 12 diagnoses + 6 phenotypes
    assert [len(tasks_for(t)) for t in (2, 3, 4, 5)] == [2, 3, 7, 10]


def test_specs_are_frozen():
    with pytest.raises(AttributeError):
        TASKS["abide1/autism"].cohort = "adni"


@pytest.mark.parametrize("task_id", list(TASKS))
def test_every_task_resolves_with_sensible_classes(task_id, tables):
    task = TASKS[task_id]
    participants = tables[task.cohort]
    rows, y = task.resolve(participants)
    assert rows.dtype.kind == "i" and len(rows) == len(y) > 0
    assert np.all(np.diff(rows) > 0) and rows.min() >= 0 and rows.max() < len(participants)
    if task.kind == "classification":
        assert set(np.unique(y)) == {0, 1}
        assert np.bincount(y).min() >= 2
    else:
        assert y.dtype == np.float64 and np.isfinite(y).all()


@pytest.mark.parametrize("task_id, negative, positive", [
    ("adni/ad-vs-hc", 40, 30), ("adni/smci-vs-pmci", 25, 15), ("oasis3/ad-vs-hc", 50, 12),
    ("schizconnect/scz-broad", 40, 25), ("schizconnect/scz-strict", 40, 18),
    ("schizconnect/schizoaffective", 40, 11), ("schizconnect/bipolar", 40, 9),
    ("abide1/autism", 60, 35), ("abide1/asperger", 60, 15), ("abide1/pdd-nos", 60, 7),
])
def test_diagnosis_tasks_contrast_one_code_against_its_reference(task_id, negative, positive, tables):
    participants = tables[TASKS[task_id].cohort]
    rows, y = TASKS[task_id].resolve(participants)
    assert np.bincount(y).tolist() == [negative, positive]
    codes = participants["diagnosis"].to_numpy()[rows]
    assert set(codes[y == 1]) == {TASKS[task_id].target.positive[0]}


@pytest.mark.parametrize("task_id, column, threshold", [
    ("schizconnect/aims-overall", "aims_overall", 2), ("schizconnect/aims-upper", "aims_upper", 2),
    ("schizconnect/aims-lower", "aims_lower", 2), ("schizconnect/depression", "depression", 1),
    ("schizconnect/gait", "gait", 1),
])
def test_ordinal_phenotypes_split_at_the_papers_thresholds(task_id, column, threshold, tables):
    participants = tables["schizconnect"]
    rows, y = TASKS[task_id].resolve(participants)
    values = participants[column]
    assert rows.tolist() == np.flatnonzero(values.notna()).tolist()     # unassessed subjects excluded
    assert (y == (values.to_numpy()[rows] >= threshold)).all()


def test_handedness_is_right_against_left_or_ambidextrous(tables):
    for task_id in ("schizconnect/handedness", "abide1/handedness"):
        participants = tables[TASKS[task_id].cohort]
        rows, y = TASKS[task_id].resolve(participants)
        hand = participants["handedness"].to_numpy()[rows]
        assert set(hand[y == 0]) == {"right"} and set(hand[y == 1]) == {"left", "ambidextrous"}
        assert len(rows) == participants["handedness"].notna().sum()


def test_iq_and_openbhb_tasks(tables):
    rows, y = TASKS["abide1/fiq"].resolve(tables["abide1"])
    assert np.allclose(y, tables["abide1"]["fiq"].dropna().to_numpy())
    rows, y = TASKS["openbhb/sex"].resolve(tables["openbhb"])
    assert len(rows) == len(tables["openbhb"]) and (y == (tables["openbhb"]["sex"] == "M")).all()
    assert TASKS["openbhb/age"].protocol == "openbhb" and "split" in TASKS["openbhb/age"].columns


def test_missing_column_error_names_cohort_and_column(tables):
    with pytest.raises(TaskColumnError, match=r"'schizconnect'.*\['aims_lower'\]"):
        TASKS["schizconnect/aims-lower"].resolve(tables["schizconnect"].drop(columns="aims_lower"))
    with pytest.raises(TaskColumnError, match=r"'openbhb'.*\['split'\]"):
        TASKS["openbhb/age"].resolve(tables["openbhb"].drop(columns="split"))


def test_non_numeric_scores_are_an_error_naming_the_column(tables):
    broken = tables["abide1"].assign(fiq=tables["abide1"]["fiq"].astype(object))
    broken.loc[3, "fiq"] = "n/a"
    with pytest.raises(ValueError, match=r"'abide1'.*'fiq'.*n/a"):
        TASKS["abide1/fiq"].resolve(broken)


def test_select_tasks():
    assert len(select_tasks(["all"])) == 22 and len(select_tasks(None)) == 22
    assert [t.id for t in select_tasks(["abide1/fiq"])] == ["abide1/fiq"]
    with pytest.raises(ValueError, match="unknown task"):
        select_tasks(["abide1/typo"])


def test_paper_results_loads_the_vendored_csv():
    table = paper_results()
    with PAPER_CSV.open(newline="") as f:
        assert len(table) == sum(1 for _ in csv.DictReader(f))
    assert set(table["method"]) == {"SimCLR", "L1", "y-Aware", "ExpW", "AnatCL-G3", "AnatCL-L3", "Ridge"}


def test_all_tasks_run_end_to_end_on_random_features(tables):
    rng = np.random.default_rng(0)
    embeddings = {("simclr", 0): {c: rng.normal(size=(len(t), 16)) for c, t in tables.items()}}
    results = evaluate_tasks(embeddings, tables, grid=(1.0,), small_class_repeats=2)
    assert set(results["task"]) == set(TASKS)
    assert len(results) == 20 + 2 * 2                     # OpenBHB tasks score two test splits each
    assert results["evaluable"].all(), results.loc[~results["evaluable"], ["task", "note"]]
    assert results["score"].notna().all()


def test_missing_cohort_is_reported_not_dropped(tables):
    embeddings = {("l1", 1): {"adni": np.zeros((len(tables["adni"]), 4))}}
    results = evaluate_tasks(embeddings, {"adni": tables["adni"]}, ["adni/ad-vs-hc", "oasis3/ad-vs-hc"],
                             grid=(1.0,), inner_splits=2)
    missing = results.set_index("task").loc["oasis3/ad-vs-hc"]
    assert not missing["evaluable"] and "oasis3" in missing["note"]


def _synthetic_participants(n_subjects: int, seed: int) -> dict[str, pd.DataFrame]:
    """Participants tables of the five synthetic cohorts (tables only: no images are rendered)."""
    if importlib.util.find_spec("anatcl_core.data.synthetic") is None:
        pytest.skip("anatcl_core.data.synthetic (the `anatcl synth` generator) is not written yet")
    from anatcl_core.data.synthetic import simulate_tables
    return {name: simulate_tables(name, n_subjects, seed=seed).participants for name in DIAGNOSES}


def test_tasks_resolve_and_run_on_synthetic_cohorts():
    cohorts = _synthetic_participants(n_subjects=60, seed=0)
    for task in TASKS.values():
        rows, y = task.resolve(cohorts[task.cohort])
        if task.kind == "classification":
            assert np.unique(y).tolist() == [0, 1] and np.bincount(y).min() >= 2, (task.id, np.bincount(y))
        else:
            assert len(y) >= 4 and np.isfinite(y).all(), task.id
    rng = np.random.default_rng(0)
    embeddings = {("expw", 0): {c: rng.normal(size=(len(t), 8)) for c, t in cohorts.items()}}
    results = evaluate_tasks(embeddings, cohorts, grid=(1.0,), small_class_repeats=2)
    assert results["evaluable"].all(), results.loc[~results["evaluable"], ["task", "note"]]
    assert set(results["task"]) == set(TASKS) and results["score"].notna().all()
