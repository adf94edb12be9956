"""benchmarks/bench_probe.py's --compare: two runs' CSVs compared, anything else refused in one line."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_probe.py"
ROW = {"method": "simclr", "fold": 0, "task": "adni/ad-vs-hc", "evaluation": "cv", "score": 61.0, "std": 2.0}


def compare(capsys, monkeypatch, *paths: Path) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `bench_probe.py --compare A B`, run in this process."""
    spec = importlib.util.spec_from_file_location("bench_probe", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, "argv", ["bench_probe.py", "--compare", *map(str, paths)])
    try:
        module.main()
        status = 0
    except SystemExit as exit_:
        status = exit_.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_compare_counts_the_rows_that_moved(tmp_path, capsys, monkeypatch):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    pd.DataFrame([ROW, {**ROW, "task": "oasis3/ad-vs-hc"}]).to_csv(a, index=False)
    pd.DataFrame([ROW, {**ROW, "task": "oasis3/ad-vs-hc", "score": 63.5}]).to_csv(b, index=False)
    status, out, err = compare(capsys, monkeypatch, a, b)
    assert status == 0, err
    assert "score: 1 rows differ by more than 1e-06; largest |difference| 2.5" in out
    assert "rows that differ, by task: oasis3/ad-vs-hc 1" in out


@pytest.mark.parametrize("content, message", [
    ("x,y\n1,2\n", "has columns ['x', 'y']; expected those of --results"),
    ("", "is not a CSV"),
    (pd.DataFrame([ROW, ROW]).to_csv(index=False), "repeat rows of the same method, fold, task, evaluation"),
    (pd.DataFrame([{**ROW, "outer_fold": 0, "chosen": 1.0, "fold_score": 60.0}]).drop(columns=["score", "std"])
     .to_csv(index=False), "is a per-fold CSV"),
])
def test_compare_refuses_what_is_not_a_run_in_one_line(tmp_path, capsys, monkeypatch, content, message):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    pd.DataFrame([ROW]).to_csv(good, index=False)
    bad.write_text(content)
    status, _, err = compare(capsys, monkeypatch, bad, good)
    assert status == 2 and message in err.splitlines()[-1], err
