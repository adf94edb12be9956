"""Off the happy path: mistyped flags, reruns into the same folder, kills at awkward moments, files that are not
what they claim. Each case ends in one clear line and exit status 1, or in a result equal to the careful run's."""
import os
import random
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
import torch

from anatcl_core import pretrain as engine
from anatcl_core.cli import main
from anatcl_core.data.cohort import CohortError, CohortWriter, UNFINISHED_MARKER, remove_abandoned_writes
from anatcl_core.embed import NonFiniteVolumes, embed_cohort
from anatcl_core.encoder import AnatCLModel
from anatcl_core.pretrain import PretrainConfig, pretrain
from anatcl_core.evaluation import parse_checkpoint
from anatcl_core.training_run import RunFolderError

from conftest import TINY_AFFINE, TINY_SHAPE, make_tiny_cohort


def small_config(cohort, out, method="yaware", **kw):
    base = dict(cohort=str(cohort.path), method=method, out=str(out), epochs=1, batch_size=8, n_folds=3,
                max_steps_per_epoch=2, progress=False, lr=1e-3, width=8)
    return PretrainConfig(**{**base, **kw})


def bad_arguments(cohort, tmp):
    """(argv, a fragment the one-line message must contain) per subcommand."""
    junk = tmp / "junk.pth"
    junk.write_bytes(random.Random(0).randbytes(256))   # fixed bytes: the same message every run
    common = ["--cohort", str(cohort), "--method", "yaware", "--out", str(tmp / "run")]
    return [
        (["pretrain", *common, "--epochs", "0"], "epochs: expected >= 1"),
        (["pretrain", *common, "--epochs", "-2"], "epochs: expected >= 1"),
        (["pretrain", *common, "--max-steps-per-epoch", "-5"], "max-steps-per-epoch: expected >= 0"),
        (["pretrain", *common, "--fold", "7"], "fold: expected 0 to 4"),
        (["pretrain", *common, "--resume", "--overwrite"], "give one of them"),
        (["pretrain", "--cohort", str(tmp / "nowhere"), "--method", "yaware", "--out", str(tmp / "r")], "not a folder"),
        (["pretrain", *common[:2], "--method", "anatcl", "--out", str(tmp / "r")], "invalid choice: 'anatcl'"),
        (["embed", "--checkpoint", str(junk), "--cohort", str(cohort), "--out", str(tmp / "f.npy"),
          "--batch-size", "-1"], "expected an integer >= 1, got -1"),
        (["embed", "--checkpoint", str(junk), "--cohort", str(cohort), "--out", str(tmp / "f.npy")],
         "not a torch checkpoint"),
        (["embed", "--checkpoint", str(tmp / "missing.pth"), "--cohort", str(cohort), "--out", str(tmp / "f.npy")],
         "checkpoint file not found"),
        (["pretrain", *common, "--device", "banana"], "--device banana: not a device name"),
        (["pretrain", *common, "--weight-decay", "inf"], "weight-decay: expected a finite number >= 0, got inf"),
        (["pretrain", *common, "--temperature", "inf"], "temperature: expected a finite number > 0, got inf"),
        (["pretrain", *common, "--arch", "resnet999"], "--arch: invalid choice: 'resnet999'"),
        (["embed", "--checkpoint", str(junk), "--cohort", str(cohort), "--out", str(junk)], "expected a file path ending"),
        (["embed", "--checkpoint", str(junk), "--cohort", str(cohort), "--out", str(cohort / "vbm.npy")],
         "would overwrite an input"),
        (["embed", "--checkpoint", str(junk), "--cohort", str(cohort), "--out", str(tmp)], "expected a file path"),
        (["embed", "--checkpoint", str(junk), "--cohort", str(cohort), "--out", str(tmp / "f.npy"), "--fold", "3"],
         "--fold selects one of the released weights"),
        (["embed", "--checkpoint", str(junk), "--cohort", str(cohort), "--out", str(tmp / "f.npy"), "--device",
          "mps"], "--device mps: the engine runs on cpu and cuda only"),
        (["embed", "--checkpoint", "released:global:7", "--cohort", str(cohort), "--out", str(tmp / "f.npy")],
         "fold '7' was not released"),
        (["embed", "--checkpoint", "released:golbal:0", "--images", str(tmp), "--out", str(tmp / "f.tsv")],
         "descriptor 'golbal' was not released"),
        (["embed", "--checkpoint", str(junk), "--images", str(tmp / "nowhere"), "--out", str(tmp / "f.tsv")],
         "no such file or folder"),
        (["embed", "--checkpoint", str(junk), "--images", str(tmp), "--out", str(tmp / "f.tsv")],
         "no .nii or .nii.gz file in this folder"),
        (["embed", "--checkpoint", str(junk), "--images", str(tmp), "--out", str(tmp / "f.xlsx")],
         "expected a file path ending in .tsv, .csv, .parquet, .npy"),
        (["embed", "--checkpoint", str(junk), "--cohort", str(cohort), "--images", str(tmp), "--out",
          str(tmp / "f.tsv")], "not allowed with argument"),
        (["embed", "--checkpoint", str(junk), "--out", str(tmp / "f.tsv")], "one of the arguments --cohort --images"),
        (["embed", "--checkpoint", str(junk), "--images", str(tmp), "--out", str(tmp / "f.tsv"), "--compile"],
         "--compile: only with --cohort"),
        (["probe", "--checkpoint", str(junk), "--data", str(tmp), "--tasks", "adni/nope", "--out",
          str(tmp / "r.csv")], "unknown task id(s) ['adni/nope']; known:"),
        (["probe", "--checkpoint", str(junk), "--data", str(tmp), "--n-splits", "1", "--out", str(tmp / "r.csv")],
         "expected an integer >= 2"),
        (["probe", "--checkpoint", str(junk), "--data", str(tmp), "--out", str(tmp / "r.csv"), "--cache",
          str(junk)], f"--cache {junk}: cannot be used as a folder"),
        (["probe", "--checkpoint", str(junk), "--data", str(tmp), "--out", str(tmp / "r.csv"), "--cache", ""],
         "argument --cache: expected a path, got ''"),
        (["probe", "--checkpoint", str(tmp), "--data", str(tmp), "--out", str(tmp / "r.csv")],
         f"{tmp}: is a folder; expected the checkpoint file"),
        (["probe", "--checkpoint", str(tmp / "missing.pth"), "--data", str(tmp), "--out", str(tmp / "r.csv")],
         "missing.pth: no such checkpoint file"),
        (["probe", "--checkpoint", "", "--data", str(tmp), "--out", str(tmp / "r.csv")],
         "--checkpoint '': expected [METHOD[:FOLD]=]PATH of a checkpoint file"),
        (["probe", "--checkpoint", str(junk), "--data", str(tmp), "--out", str(junk)],
         "is one of the input files"),
        (["import", "nifti", "--images", " ", "--participants", str(junk), str(tmp / "c")],
         "argument --images: expected a path, got ' '"),
        (["synth", "--out", str(tmp / "s"), "--n-subjects", "0"], "expected an integer >= 1, got 0"),
        (["book", "--params", str(tmp / "none.yaml")], "book parameters file not found"),
    ]


def test_every_subcommand_answers_a_mistake_in_one_line_with_status_1(tiny_cohort, tmp_path, capsys):
    for argv, expected in bad_arguments(tiny_cohort.path, tmp_path):
        try:
            status = main(argv)
        except SystemExit as exit_:               # argparse's own refusals
            status = exit_.code
        err = capsys.readouterr().err.strip()
        assert status == 1, (argv, status, err)
        assert len(err.splitlines()) == 1 and expected in err, (argv, err)
        assert not (tmp_path / "run" / "checkpoint.pth").exists()   # refused before any work
        assert not (tmp_path / "embedding_cache").exists(), argv     # nor any folder made for it


def test_no_traceback_reaches_the_terminal_and_debug_shows_it(tiny_cohort, tmp_path):
    argv = ["pretrain", "--cohort", str(tmp_path / "nowhere"), "--method", "yaware", "--out", str(tmp_path / "r")]
    quiet = subprocess.run([sys.executable, "-m", "anatcl_core.cli", *argv], capture_output=True, text=True)
    assert quiet.returncode == 1 and quiet.stderr.count("\n") == 1 and "Traceback" not in quiet.stderr
    assert quiet.stderr.startswith("anatcl pretrain: ")
    loud = subprocess.run([sys.executable, "-m", "anatcl_core.cli", "--debug", *argv], capture_output=True, text=True)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "CohortError" in loud.stderr


def test_a_finished_run_is_not_overwritten_without_being_asked(tiny_cohort, tmp_path):
    out = tmp_path / "run"
    pretrain(small_config(tiny_cohort, out))
    (out / "notes.txt").write_text("mine")
    before = (out / "checkpoint.pth").read_bytes()
    with pytest.raises(RunFolderError, match=r"already holds a run \(yaware, 1 epoch\(s\) done\).*--resume.*--overwrite"):
        pretrain(small_config(tiny_cohort, out, method="simclr"))
    assert (out / "checkpoint.pth").read_bytes() == before
    pretrain(small_config(tiny_cohort, out, method="simclr", overwrite=True))
    assert torch.load(out / "checkpoint.pth", weights_only=True)["config"]["method"] == "simclr"
    assert list(pd.read_csv(out / "metrics.csv")["epoch"]) == [1]          # not appended to the old run's rows
    assert (out / "notes.txt").read_text() == "mine"                       # only the run's own files replaced


def test_resume_refuses_another_cohort_but_accepts_the_same_one_moved(tiny_cohort, tmp_path):
    out = tmp_path / "run"
    pretrain(small_config(tiny_cohort, out))
    other = make_tiny_cohort(tmp_path / "other", seed=5)
    with pytest.raises(ValueError, match="is not the cohort this run trained on"):
        pretrain(small_config(other, out, epochs=2, resume=True))
    moved = tmp_path / "moved" / "tiny"
    shutil.copytree(tiny_cohort.path, moved)
    pretrain(PretrainConfig(**{**small_config(tiny_cohort, out, epochs=2, resume=True).to_dict(), "cohort": str(moved)}))
    assert torch.load(out / "checkpoint.pth", weights_only=True)["epoch"] == 2


def assert_same_run(straight, other):
    """Equal weights, equal metrics.csv (timing columns aside), and other's CSV equal to its checkpoint history."""
    a = torch.load(straight / "checkpoint.pth", weights_only=True)
    b = torch.load(other / "checkpoint.pth", weights_only=True)
    assert all(torch.equal(a["net"][k], b["net"][k]) for k in a["net"])
    metrics = pd.read_csv(other / "metrics.csv")
    timing = ["seconds", "volumes_per_s"]
    pd.testing.assert_frame_equal(pd.read_csv(straight / "metrics.csv").drop(columns=timing), metrics.drop(columns=timing))
    assert [row["loss"] for row in b["history"]] == list(metrics["loss"])


@pytest.mark.parametrize("stop_after", [1, 2], ids=["mid-epoch", "last-step-of-epoch"])
def test_a_stop_anywhere_resumes_to_the_uninterrupted_weights_and_metrics(tiny_cohort, tmp_path, monkeypatch,
                                                                          stop_after):
    straight = tmp_path / "straight"
    pretrain(small_config(tiny_cohort, straight, epochs=2))
    calls = {"n": 0}
    real = engine.stop_agreed

    def stop_once(requested, world, device):          # SIGTERM arriving during step `stop_after` of epoch 2
        calls["n"] += 1
        return real(requested, world, device) or calls["n"] == 2 + stop_after

    monkeypatch.setattr(engine, "stop_agreed", stop_once)
    split = tmp_path / "split"
    with pytest.raises(engine.Preempted):
        pretrain(small_config(tiny_cohort, split, epochs=2))
    monkeypatch.setattr(engine, "stop_agreed", real)
    pretrain(small_config(tiny_cohort, split, epochs=2, resume=True))
    assert_same_run(straight, split)


@pytest.mark.parametrize("kill_point", ["before the checkpoint's rename", "between the rename and the CSV"])
def test_a_kill_in_the_save_sequence_resumes_to_the_uninterrupted_run(tiny_cohort, tmp_path, kill_point):
    straight = tmp_path / "straight"
    pretrain(small_config(tiny_cohort, straight, epochs=2))
    out = tmp_path / "killed"
    if kill_point == "before the checkpoint's rename":
        pretrain(small_config(tiny_cohort, out, epochs=1))                  # epoch 2's save never completed:
        (out / ".checkpoint.pth.abc123.tmp").write_bytes(b"\0" * 1000)     # its partial file is all that is left
    else:
        pretrain(small_config(tiny_cohort, out, epochs=2))                  # epoch 2's checkpoint is in place,
        metrics = pd.read_csv(out / "metrics.csv")                          # its CSV row never written
        metrics[metrics["epoch"] == 1].to_csv(out / "metrics.csv", index=False)
    pretrain(small_config(tiny_cohort, out, epochs=2, resume=True))
    assert_same_run(straight, out)
    assert not list(out.glob(".*.tmp"))


def test_only_the_runs_own_temporary_files_are_removed(tiny_cohort, tmp_path):
    out = tmp_path / "run"
    pretrain(small_config(tiny_cohort, out))
    (out / ".checkpoint.pth.abc123.tmp").write_bytes(b"\0" * 1000)
    (out / ".keep.tmp").write_text("not ours")
    pretrain(small_config(tiny_cohort, out, epochs=2, resume=True))
    assert not (out / ".checkpoint.pth.abc123.tmp").exists() and (out / ".keep.tmp").exists()
    assert "removed from" in (out / "train.log").read_text()


def test_overwrite_replaces_only_a_cohort_never_another_folder(tmp_path):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "chapter1.tex").write_text("years of work")
    with pytest.raises(CohortError, match=r"holding \['chapter1.tex'\], not a cohort folder"):
        CohortWriter(precious, 2, TINY_SHAPE, TINY_AFFINE, overwrite=True)
    assert (precious / "chapter1.tex").read_text() == "years of work"
    old = make_tiny_cohort(tmp_path / "cohort")
    new = make_tiny_cohort(tmp_path / "cohort2", seed=3)
    with CohortWriter(old.path, len(new), TINY_SHAPE, TINY_AFFINE, overwrite=True) as writer:   # a cohort: replaced
        writer.volumes[:] = np.asarray(new.volumes)
        writer.finish(new.participants, np.asarray(new.roi), {"source": "test"})


def test_folders_of_killed_imports_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    target = tmp_path / "adni"
    abandoned, live = tmp_path / ".adni.partial-abc", tmp_path / ".adni.partial-def"
    for folder, pid in ((abandoned, dead.stdout.strip()), (live, str(os.getpid()))):
        folder.mkdir()
        (folder / UNFINISHED_MARKER).write_text(f"{pid} {os.uname().nodename}\n")
    with pytest.warns(UserWarning, match="interrupted write"):
        assert remove_abandoned_writes(target) == [abandoned]
    assert not abandoned.exists() and live.exists()


def test_non_finite_voxels_are_named_when_embedding(tmp_path):
    cohort = make_tiny_cohort(tmp_path / "c")
    volumes = np.load(cohort.path / "vbm.npy", mmap_mode="r+")
    volumes[3, 1, 1, 1] = np.inf
    volumes.flush()
    with pytest.raises(NonFiniteVolumes, match=r"vbm.npy: non-finite voxels in sub-003"):
        embed_cohort(AnatCLModel(width=8), cohort.path, progress=False)


def test_probe_names_the_pretrain_layout_and_refuses_a_collision(tmp_path, capsys):
    assert parse_checkpoint("runs/yaware-fold2/checkpoint.pth")[:2] == ("yaware", 2)
    assert parse_checkpoint("runs/anatcl-local-fold0/checkpoint.pth")[:2] == ("anatcl-local", 0)
    assert parse_checkpoint("runs/mine/checkpoint.pth")[:2] == ("mine", 0)
    assert parse_checkpoint("runs/a/checkpoint.pth")[:2] == ("a", 0)      # distinct folders: distinct names
    same = tmp_path / "c" / "fold0"
    same.mkdir(parents=True)
    torch.save({"model": {}}, same / "yaware.pth")
    torch.save({"model": {}}, tmp_path / "c" / "yaware.pth")
    status = main(["probe", "--checkpoint", str(same / "yaware.pth"), str(tmp_path / "c" / "yaware.pth"),
                   "--data", str(tmp_path), "--out", str(tmp_path / "r.csv")])
    err = capsys.readouterr().err
    assert status == 1 and "both read as method 'yaware' fold 0" in err and "METHOD[:FOLD]=PATH" in err


def test_embed_refuses_to_replace_features_unless_asked(tiny_cohort, tmp_path, capsys):
    (tmp_path / "f.npy").write_bytes(b"earlier features")
    argv = ["embed", "--checkpoint", str(tmp_path / "none.pth"), "--cohort", str(tiny_cohort.path), "--out",
            str(tmp_path / "f.npy")]
    assert main(argv) == 1 and "already exists; add --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 1 and "checkpoint file not found" in capsys.readouterr().err
    assert (tmp_path / "f.npy").read_bytes() == b"earlier features"


def test_a_second_process_cannot_train_into_a_folder_in_use(tiny_cohort, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / ".anatcl-run.lock").write_text(f"{os.getpid()} {os.uname().nodename}\n")   # a live owner
    with pytest.raises(RunFolderError, match=f"in use by process {os.getpid()}"):
        pretrain(small_config(tiny_cohort, out))
    assert not (out / "config.json").exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".anatcl-run.lock").write_text(f"{dead.stdout.strip()} {os.uname().nodename}\n")   # its owner died
    pretrain(small_config(tiny_cohort, out))
    assert (out / "checkpoint.pth").exists() and not (out / ".anatcl-run.lock").exists()


def test_a_config_json_that_is_not_a_run_is_never_replaced(tiny_cohort, tmp_path):
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.json").write_text('{"theme": "dark"}')
    with pytest.raises(RunFolderError, match="not the configuration of an anatcl run"):
        pretrain(small_config(tiny_cohort, out))
    assert (out / "config.json").read_text() == '{"theme": "dark"}'


def test_a_task_whose_column_is_missing_is_not_evaluable_not_an_abort(tiny_cohort):
    from anatcl_core.evaluation import evaluate_task
    from anatcl_core.tasks import TASKS
    results = evaluate_task(np.zeros((len(tiny_cohort), 4)), tiny_cohort.participants, TASKS["openbhb/age"])
    assert results and all(not r.evaluable and "no column(s) ['split']" in r.note for r in results.values())


def test_non_finite_features_name_the_cohort_and_the_subjects(tiny_cohort):
    from anatcl_core.evaluation import evaluate_task
    from anatcl_core.tasks import TASKS
    features = np.zeros((len(tiny_cohort), 4))
    features[[2, 7]] = np.nan
    with pytest.raises(ValueError, match=r"cohort 'openbhb' are not finite for sub-002, sub-007 \(2 row\(s\)\)"):
        evaluate_task(features, tiny_cohort.participants, TASKS["openbhb/age"])


@settings(max_examples=60, deadline=None)
@given(junk=st.binary(min_size=0, max_size=300))
def test_any_bytes_that_are_not_a_checkpoint_are_a_checkpoint_error(tmp_path_factory, junk):
    """Random bytes used to escape as IndexError from torch's weights-only unpickler, now and then."""
    from anatcl_core import CheckpointError, load_checkpoint
    path = tmp_path_factory.mktemp("junk") / "weights.pth"
    path.write_bytes(junk)
    # b"c" is a pickle asking for a global named "." : refused as code, also one line
    with pytest.raises(CheckpointError, match=r"weights\.pth: (not a torch checkpoint|refused to load)") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)
