"""The probe cache: a rerun reads what did not change and equals a run without the cache; anything a result
depends on (features, participants, task, options, code) misses it; bad entries and unwritable folders do
not stop the probes."""
import dataclasses
import json
import logging
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anatcl_core import evaluation, probe_cache
from anatcl_core.data.synthetic import simulate_tables
from anatcl_core.evaluation import evaluate_tasks
from anatcl_core.probe import ProbeResult
from anatcl_core.probe_cache import ProbeCache

TASKS = ["abide1/autism", "abide1/handedness", "abide1/fiq"]
OPTIONS = {"grid": (0.01, 1.0), "inner_splits": 2, "small_class_repeats": 1, "n_splits": 3}


@pytest.fixture(scope="module")
def abide():
    return simulate_tables("abide1", 120, seed=0).participants


def _embeddings(abide, methods=("simclr", "l1"), seed=0):
    rng = np.random.default_rng(seed)
    return {(m, 0): {"abide1": rng.normal(size=(len(abide), 6)).astype(np.float32)} for m in methods}


@pytest.fixture
def counted(monkeypatch):
    """The (method-free) task ids evaluate_task is called for, in order."""
    calls, probe = [], evaluation.evaluate_task

    def counting(X, participants, task, **options):
        calls.append(task.id)
        return probe(X, participants, task, **options)
    monkeypatch.setattr(evaluation, "evaluate_task", counting)
    return calls


def test_a_rerun_reads_every_probe_and_equals_a_run_without_cache(tmp_path, abide, counted):
    embeddings = _embeddings(abide)
    plain = evaluate_tasks(embeddings, {"abide1": abide}, TASKS, **OPTIONS)
    first = evaluate_tasks(embeddings, {"abide1": abide}, TASKS, cache=tmp_path, **OPTIONS)
    assert len(counted) == 2 * 2 * len(TASKS) and len(list(tmp_path.glob("*.json"))) == 2 * len(TASKS)
    again = evaluate_tasks(embeddings, {"abide1": abide}, TASKS, cache=tmp_path, **OPTIONS)
    assert len(counted) == 4 * len(TASKS)                           # nothing probed the third time
    pd.testing.assert_frame_equal(first, plain)
    pd.testing.assert_frame_equal(again, plain)
    assert plain["evaluable"].all()


def test_only_the_probes_whose_inputs_changed_run_again(tmp_path, abide, counted):
    embeddings = _embeddings(abide)
    evaluate_tasks(embeddings, {"abide1": abide}, TASKS, cache=tmp_path, **OPTIONS)
    counted.clear()
    changed = {key: dict(value) for key, value in embeddings.items()}
    changed["l1", 0]["abide1"] = changed["l1", 0]["abide1"].copy()
    changed["l1", 0]["abide1"][5, 2] += 1e-3                          # one value of one checkpoint's features
    rerun = evaluate_tasks(changed, {"abide1": abide}, TASKS, cache=tmp_path, **OPTIONS)
    assert len(counted) == len(TASKS)                                 # l1's probes only
    pd.testing.assert_frame_equal(rerun, evaluate_tasks(changed, {"abide1": abide}, TASKS, **OPTIONS))
    counted.clear()
    relabelled = abide.copy()
    relabelled.loc[relabelled.index[0], "fiq"] = relabelled["fiq"].iloc[0] + 1
    evaluate_tasks(changed, {"abide1": relabelled}, TASKS, cache=tmp_path, **OPTIONS)
    assert len(counted) == 2 * len(TASKS)                             # the cohort's table is in every key


@pytest.mark.parametrize("change", [{"seed": 1}, {"n_splits": 4}, {"protocol": "paper"}, {"grid": (0.01, 2.0)},
                                    {"groups_column": "site"}])
def test_another_option_misses_and_a_speed_only_option_does_not(tmp_path, abide, counted, change):
    embeddings = _embeddings(abide, ("simclr",))
    evaluate_tasks(embeddings, {"abide1": abide}, TASKS[:1], cache=tmp_path, **OPTIONS)
    evaluate_tasks(embeddings, {"abide1": abide}, TASKS[:1], cache=tmp_path, **{**OPTIONS, "n_jobs": 1})
    assert len(counted) == 1
    evaluate_tasks(embeddings, {"abide1": abide}, TASKS[:1], cache=tmp_path, **{**OPTIONS, **change})
    assert len(counted) == 2


def test_a_grid_as_array_or_tuple_is_one_key_and_a_digit_more_is_another(abide):
    cache, X, task = ProbeCache("unused"), np.zeros((len(abide), 2)), evaluation.select_tasks(["abide1/autism"])[0]
    keys = [cache.key(X, abide, task, {"grid": grid}) for grid in
            ((0.1, 1.0), np.array([0.1, 1.0]), [0.1, 1.0], pd.Series([0.1, 1.0]), (0.1, 1.0000000000000002))]
    assert keys[0] == keys[1] == keys[2] == keys[3] != keys[4]
    long = pd.Series([1e6] * 70)                       # pandas prints it shortened: its repr would collide
    other = long.copy()
    other[35] = 1.0
    assert cache.key(X, abide, task, {"grid": long}) != cache.key(X, abide, task, {"grid": other})
    # a default given or left out is one key; the protocol by name or as the object too
    from anatcl_core.probe_protocol import PROTOCOLS
    assert cache.key(X, abide, task, {}) == cache.key(X, abide, task, {"n_splits": 5, "protocol": PROTOCOLS["ours"]})


def test_another_version_of_the_probe_code_misses(tmp_path, abide, counted, monkeypatch):
    embeddings = _embeddings(abide, ("simclr",))
    evaluate_tasks(embeddings, {"abide1": abide}, TASKS[:1], cache=tmp_path, **OPTIONS)
    monkeypatch.setattr(probe_cache, "CODE_DIGEST", "edited")
    evaluate_tasks(embeddings, {"abide1": abide}, TASKS[:1], cache=tmp_path, **OPTIONS)
    assert len(counted) == 2


def test_the_code_digest_follows_the_probe_source_and_is_fixed_at_import(tmp_path):
    """A copy of the package elsewhere has this digest; editing its probe.py changes what `_code_digest` reads,
    while the imported process keeps the digest of the code it runs."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path
    package = Path(probe_cache.__file__).parent
    shutil.copytree(package, tmp_path / "anatcl_core", ignore=shutil.ignore_patterns("__pycache__"))
    script = ("import anatcl_core.probe_cache as c, pathlib; p = pathlib.Path(c.__file__).with_name('probe.py'); "
              "print(c.__file__); print(c.CODE_DIGEST); p.write_text(p.read_text() + '\\n# edited\\n'); "
              "print(c._code_digest()); print(c.CODE_DIGEST)")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(tmp_path)}, check=True).stdout.split()
    assert out[0].startswith(str(tmp_path))                               # the copy was imported
    assert out[1] == probe_cache.CODE_DIGEST == out[3] != out[2]


def test_features_changed_in_place_between_calls_are_probed_again(tmp_path, abide, counted):
    embeddings, cache = _embeddings(abide, ("simclr",)), ProbeCache(tmp_path)
    evaluate_tasks(embeddings, {"abide1": abide}, TASKS, cache=cache, **OPTIONS)
    embeddings["simclr", 0]["abide1"][:] += 1.0                      # the same array object, new values
    rerun = evaluate_tasks(embeddings, {"abide1": abide}, TASKS, cache=cache, **OPTIONS)
    assert len(counted) == 2 * len(TASKS)
    pd.testing.assert_frame_equal(rerun, evaluate_tasks(embeddings, {"abide1": abide}, TASKS, **OPTIONS))


def test_text_cells_of_another_type_and_targets_of_another_class_are_other_keys(abide):
    from anatcl_core.tasks import AtLeast, TaskSpec
    cache, X = ProbeCache("unused"), np.zeros((len(abide), 2))
    numbers, text = abide.copy(), abide.copy()
    numbers["s"] = pd.Series([1, 2] * 60, dtype=object)
    text["s"] = pd.Series(["1", "2"] * 60, dtype=object)
    task = evaluation.select_tasks(["abide1/fiq"])[0]
    assert cache.key(X, numbers, task, {}) != cache.key(X, text, task, {})

    @dataclasses.dataclass(frozen=True)
    class Below(AtLeast):
        pass
    at_least = TaskSpec("abide1/x", "abide1", "classification", "balanced_accuracy", 5, "x", AtLeast("fiq", 105))
    below = dataclasses.replace(at_least, target=Below("fiq", 105))
    assert cache.key(X, abide, at_least, {}) != cache.key(X, abide, below, {})


def test_inputs_with_no_exact_digest_are_probed_without_the_cache(tmp_path, abide, counted, caplog):
    odd = abide.copy()
    odd["unread"] = [[1, 2]] * len(odd)                              # a cell pandas cannot hash
    embeddings = _embeddings(abide, ("simclr",))
    with caplog.at_level(logging.WARNING, logger="anatcl_core.probe_cache"):
        results = evaluate_tasks(embeddings, {"abide1": odd}, TASKS[:1], cache=tmp_path, **OPTIONS)
    assert results["evaluable"].all() and not list(tmp_path.glob("*.json")) and "without the cache" in caplog.text
    task = evaluation.select_tasks(["abide1/fiq"])[0]
    assert ProbeCache(tmp_path).key(embeddings["simclr", 0]["abide1"], abide, task, {"grid": {1.0, 2.0}}) is None


GOOD = {"metric": "mae", "scores": [1.0, 2.0], "n_samples": 9, "n_splits": 2, "n_repeats": 1, "class_counts": [],
        "best_params": [1.0, 1.0], "note": "", "evaluable": True, "edge_folds": 0}


@pytest.mark.parametrize("content", [
    "", "{not json", "[]", "null", '{"results": {}}', '{"results": {"cv": {"metric": 1, "bogus": 2}}}',
    json.dumps({"results": {"other": GOOD}}), json.dumps({"results": {"cv": {**GOOD, "scores": None}}}),
    json.dumps({"results": {"cv": {**GOOD, "scores": "abc"}}}), json.dumps({"results": {"cv": {**GOOD, "scores": ["1"]}}}),
    json.dumps({"results": {"cv": {**GOOD, "n_samples": "x"}}}), json.dumps({"results": {"cv": {**GOOD, "evaluable": 1}}})])
def test_an_unreadable_entry_is_probed_again_and_rewritten(tmp_path, abide, counted, caplog, content):
    embeddings = _embeddings(abide, ("simclr",))
    expected = evaluate_tasks(embeddings, {"abide1": abide}, TASKS[:1], cache=tmp_path, **OPTIONS)
    (entry,) = tmp_path.glob("*.json")
    entry.write_text(content)
    with caplog.at_level(logging.WARNING, logger="anatcl_core.probe_cache"):
        again = evaluate_tasks(embeddings, {"abide1": abide}, TASKS[:1], cache=tmp_path, **OPTIONS)
    assert len(counted) == 2 and "unreadable" in caplog.text and entry.name in caplog.text
    pd.testing.assert_frame_equal(again, expected)
    assert json.loads(entry.read_text())["about"] == "simclr fold 0, abide1/autism"


def test_a_cache_that_cannot_be_written_warns_once_and_the_probes_still_run(tmp_path, abide, caplog):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder would go")
    embeddings = _embeddings(abide)
    with caplog.at_level(logging.WARNING, logger="anatcl_core.probe_cache"):
        results = evaluate_tasks(embeddings, {"abide1": abide}, TASKS, cache=blocked, **OPTIONS)
    pd.testing.assert_frame_equal(results, evaluate_tasks(embeddings, {"abide1": abide}, TASKS, **OPTIONS))
    assert caplog.text.count("cannot write") == 1 and blocked.read_text().startswith("a file")


def test_missing_embeddings_are_reported_and_not_cached(tmp_path, abide):
    results = evaluate_tasks({("simclr", 0): {}}, {"abide1": abide}, TASKS[:1], cache=tmp_path, **OPTIONS)
    assert not results["evaluable"].any() and not list(tmp_path.glob("*.json"))


numbers = st.floats(allow_nan=True, allow_infinity=True)


@settings(max_examples=60, deadline=None)
@given(scores=st.lists(numbers, max_size=6), params=st.lists(numbers, max_size=6),
       counts=st.lists(st.integers(0, 10 ** 6), max_size=3), note=st.text(max_size=40),
       n=st.integers(0, 10 ** 6), evaluable=st.booleans(), edge=st.integers(0, 50))
def test_results_come_back_exactly_as_saved(tmp_path_factory, scores, params, counts, note, n, evaluable, edge):
    cache = ProbeCache(tmp_path_factory.mktemp("cache"))
    result = ProbeResult("mae", tuple(scores), np.int64(n), 5, 1, tuple(np.int64(c) for c in counts),
                         tuple(params), note, evaluable, edge)
    cache.save("k", {"cv": result})
    loaded = cache.load("k", ["cv"])["cv"]
    for field in dataclasses.fields(ProbeResult):
        a, b = getattr(result, field.name), getattr(loaded, field.name)
        if field.name in ("scores", "best_params"):
            assert len(a) == len(b) and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))
        else:
            assert a == b and type(b) is not list, field.name


def test_a_killed_saves_temporary_file_is_removed_once_stale_and_a_fresh_one_is_kept(tmp_path):
    import os
    import time

    from anatcl_core.atomic import STALE_TEMPORARY_S
    key = "ab" * 32
    stale, fresh = tmp_path / f".{key}.json.x1.tmp", tmp_path / f".{key}.json.x2.tmp"
    mine = tmp_path / ".notes.json.x3.tmp"                      # not named as the cache names its files
    for path in (stale, fresh, mine):
        path.write_text("{half")
    old = time.time() - STALE_TEMPORARY_S - 60
    for path in (stale, mine):
        os.utime(path, (old, old))
    (tmp_path / "keep.json").write_text("{}")
    ProbeCache(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, mine.name, "keep.json"])


def test_entries_unused_for_a_month_are_removed_and_reading_one_keeps_it(tmp_path, abide, counted, monkeypatch):
    import os
    import time

    embeddings = {("simclr", 0): _embeddings(abide)["simclr", 0]}
    evaluate_tasks(embeddings, {"abide1": abide}, TASKS, cache=tmp_path, **OPTIONS)
    entries = sorted(tmp_path.glob("*.json"))
    own = tmp_path / "settings.json"                            # a user's file in the same folder
    own.write_text("{}")
    old = time.time() - probe_cache.UNUSED_ENTRY_S - 60
    for path in (*entries, own):
        os.utime(path, (old, old))
    ProbeCache(tmp_path)                                          # opening sweeps: the month-old entries go
    assert len(entries) == len(TASKS) and sorted(tmp_path.iterdir()) == [own]
    evaluate_tasks(embeddings, {"abide1": abide}, TASKS, cache=tmp_path, **OPTIONS)
    assert len(counted) == 2 * len(TASKS)                         # probed again, kept again
    nearly = time.time() - probe_cache.UNUSED_ENTRY_S + 3600      # an hour short of the limit
    for path in tmp_path.glob("*.json"):
        os.utime(path, (nearly, nearly))
    evaluate_tasks(embeddings, {"abide1": abide}, TASKS[:1], cache=tmp_path, **OPTIONS)
    assert len(counted) == 2 * len(TASKS)                         # read, not probed: its mtime renewed
    monkeypatch.setattr(probe_cache, "UNUSED_ENTRY_S", probe_cache.UNUSED_ENTRY_S - 7200)   # two hours on
    ProbeCache(tmp_path)
    kept = sorted(tmp_path.glob("*.json"))
    assert len(kept) == 2 and own in kept                         # the entry just read, and the user's file


def test_an_empty_cache_path_is_refused_and_an_unusable_one_only_warns(tmp_path, abide, caplog):
    with pytest.raises(ValueError, match="empty path"):
        evaluate_tasks(_embeddings(abide), {"abide1": abide}, TASKS[:1], cache="", **OPTIONS)
    too_long = tmp_path / ("x" * 300) / "probes"                  # beyond the file system's name length
    with caplog.at_level(logging.WARNING, logger="anatcl_core.probe_cache"):
        results = evaluate_tasks(_embeddings(abide), {"abide1": abide}, TASKS[:1], cache=too_long, **OPTIONS)
    assert results["evaluable"].all() and caplog.text.count("cannot write") == 1
