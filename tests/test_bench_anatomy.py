"""The anatomy benchmark end to end at a toy size: its CSVs, its refusals, a rerun into the same folder."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from anatcl_core.anatomy_experiment import AGE, DIAGNOSES, AnatomyDesign, paired_table, read_results

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--quick", "--n-pretrain", "40", "--n-clinical", "60", "--epochs", "1", "--width", "4",
       "--methods", "yaware,anatcl-local", "--n-boot", "50"]


def bench(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_anatomy.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_quick_run_writes_every_table_and_a_rerun_resumes(tmp_path):
    done = bench(*TOY, "--out", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    tables = read_results(tmp_path)
    scores = tables["anatomy"]
    assert {"world", "method", "seed", "task", "metric", "score"} <= set(scores.columns)
    assert set(scores["task"]) == {*DIAGNOSES, AGE}
    assert set(scores["method"]) == {"yaware", "anatcl-local", "desikan-table"}
    paired = tables["anatomy_paired"]
    assert set(paired["minus"]) == {"yaware"} and (paired["low"] <= paired["high"]).all()
    assert tables["setting"]["n_clinical"] == 60
    assert "native bf16" in tables["setting"]["machine"] and tables["setting"]["finished"].startswith("20")
    assert tables["setting"]["worlds"] == ["aligned"] and tables["setting"]["seeds"] == [0]
    assert "ENIGMA example subjects (real)" in set(tables["anatomy_contrast"]["data"])
    assert paired_table(paired).shape == (2, 3)
    again = bench(*TOY, "--out", str(tmp_path))                 # resumes: nothing retrained, same scores
    assert again.returncode == 0, again.stderr[-2000:]
    pd.testing.assert_frame_equal(read_results(tmp_path)["anatomy"], scores)


@pytest.mark.parametrize("args, message", [(["--methods", "simclr,anatcl-local"], "must include 'yaware'"),
                                           (["--worlds", "flat"], "unknown ['flat']")])
def test_bad_designs_are_one_line_and_status_2(tmp_path, args, message):
    done = bench("--quick", "--out", str(tmp_path), *args)
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
    assert not any(tmp_path.iterdir())


def test_design_refuses_in_python_too():
    with pytest.raises(ValueError, match="yaware"):
        AnatomyDesign(methods=("simclr",))
