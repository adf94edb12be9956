"""Lab storage: results readable by colleagues (the user's umask, not tempfile's 0600), a data folder that is
only read (it may be a read-only mount), and two jobs starting together on one fresh data_root."""
from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anatcl_core.atomic import write_atomic
from anatcl_core.data.cohort import Cohort
from anatcl_core.data.synthetic import ensure_synthetic_data
from anatcl_core.pretrain import PretrainConfig, pretrain
from tests.conftest import make_tiny_cohort


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set a umask for one test and restore the process's afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


@pytest.mark.parametrize("mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775),
                                                       (0o077, 0o600, 0o700)])
def test_written_files_and_cohort_folders_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    umask(mask)
    assert mode(write_atomic(tmp_path / "results.csv", lambda f: f.write(b"a,b\n"))) == file_mode
    cohort = make_tiny_cohort(tmp_path / "cohort", n=12)
    assert mode(cohort.path) == dir_mode
    assert {mode(p) for p in cohort.path.iterdir()} == {file_mode}
    run = tmp_path / "run"
    pretrain(PretrainConfig(cohort=str(cohort.path), method="simclr", out=str(run), epochs=1, batch_size=4,
                            n_folds=2, max_steps_per_epoch=1, progress=False, width=4))
    for name in ("checkpoint.pth", "config.json", "metrics.csv", "folds.tsv"):
        assert mode(run / name) == file_mode, name


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `folder` with its size and modification time (ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_pretraining_and_reading_data_write_nothing_into_the_data_folder(tmp_path):
    # Tests run as root here, for whom chmod a-w changes nothing: so compare the folder before and after.
    data = tmp_path / "data"
    ensure_synthetic_data(data, 20, 3.0, 0, progress=False)
    before = snapshot(data)
    ensure_synthetic_data(data, 20, 3.0, 0, progress=False)              # a second chapter: reads only
    pretrain(PretrainConfig(cohort=str(data / "openbhb"), method="yaware", out=str(tmp_path / "run"), epochs=1,
                            batch_size=4, n_folds=2, max_steps_per_epoch=1, progress=False, width=4))
    assert snapshot(data) == before
    assert (tmp_path / "run" / "folds.tsv").exists()


def test_other_parameters_on_an_existing_data_root_are_refused_by_name(tmp_path):
    ensure_synthetic_data(tmp_path, 6, 3.0, 0, progress=False)
    with pytest.raises(ValueError, match=r"openbhb/meta.json: this cohort was generated with n_subjects 6, "
                                         r"the parameters ask for 7"):
        ensure_synthetic_data(tmp_path, 7, 3.0, 0, progress=False)
    with pytest.raises(ValueError, match="seed 0, the parameters ask for 1"):
        ensure_synthetic_data(tmp_path, 6, 3.0, 1, progress=False)


@pytest.mark.slow
def test_two_jobs_starting_together_on_a_fresh_root_both_succeed_with_the_same_data(tmp_path):
    command = [sys.executable, "-m", "anatcl_core.cli", "synth", "--out", str(tmp_path / "shared"),
               "--n-subjects", "6", "--quiet"]
    jobs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [job.communicate(timeout=600) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], outcomes
    reports = "".join(out for out, _ in outcomes)
    for name in ("openbhb", "adni", "oasis3", "schizconnect", "abide1"):   # written once, skipped once
        assert reports.count(f"{name}: written to") == 1 and reports.count(f"{name}: exists with these parameters, kept") == 1
    alone = tmp_path / "alone"
    subprocess.run(command[:5] + [str(alone)] + command[6:], check=True, capture_output=True)
    for name in ("openbhb", "abide1"):
        np.testing.assert_array_equal(Cohort.open(tmp_path / "shared" / name).volumes,
                                      Cohort.open(alone / name).volumes)
    assert not list((tmp_path / "shared").glob(".*partial*"))


def test_a_mismatched_or_foreign_root_is_refused_before_anything_is_generated(tmp_path):
    from anatcl_core.data.synthetic import write_synthetic_cohort
    write_synthetic_cohort(tmp_path / "a", "adni", 6, progress=False)
    with pytest.raises(ValueError, match="adni/meta.json: this cohort was generated with n_subjects 6"):
        ensure_synthetic_data(tmp_path / "a", 7, 3.0, 0, progress=False)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["adni"]      # nothing else generated
    (tmp_path / "b" / "oasis3").mkdir(parents=True)
    with pytest.raises(ValueError, match="oasis3: exists but is not a cohort"):
        ensure_synthetic_data(tmp_path / "b", 6, 3.0, 0, progress=False)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["oasis3"]


def test_a_run_folder_inside_the_data_or_a_batch_too_large_is_refused_before_writing(tmp_path):
    cohort = make_tiny_cohort(tmp_path / "cohort", n=12)
    inside = tmp_path / "cohort" / "run"
    with pytest.raises(ValueError, match="inside the cohort folder"):
        pretrain(PretrainConfig(cohort=str(cohort.path), method="simclr", out=str(inside), progress=False))
    assert not inside.exists()
    with pytest.raises(ValueError, match=r"--batch-size 32: fold 0 leaves \d+ training subjects"):
        pretrain(PretrainConfig(cohort=str(cohort.path), method="simclr", out=str(tmp_path / "run"),
                                progress=False))
    assert not (tmp_path / "run").exists()
