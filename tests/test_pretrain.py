"""The pretraining engine on CPU: every method runs and learns, resume is exact, checkpoints survive kills."""
import json
import shutil
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from anatcl_core import load_checkpoint
from anatcl_core.data.folds import load_or_make_folds, make_folds, training_rows
from anatcl_core.data.batches import epoch_plan
from anatcl_core.methods import METHODS
from anatcl_core.pretrain import AgeRegressor, PretrainConfig, compute_loss, pretrain
from anatcl_core.encoder import AnatCLModel


def small_config(cohort, out, method, **kw):
    base = dict(cohort=str(cohort.path), method=method, out=str(out), epochs=1, batch_size=8, n_folds=3,
                max_steps_per_epoch=2, progress=False, lr=1e-3)
    return PretrainConfig(**{**base, **kw})


@pytest.mark.parametrize("method", METHODS)
def test_each_method_runs_end_to_end(tiny_cohort, tmp_path, method):
    ckpt = pretrain(small_config(tiny_cohort, tmp_path / method, method))
    model = load_checkpoint(ckpt)
    assert isinstance(model, AnatCLModel) and not model.training
    metrics = pd.read_csv(tmp_path / method / "metrics.csv")
    assert list(metrics["epoch"]) == [1] and np.isfinite(metrics["loss"]).all()
    assert metrics["volumes_per_s"].iloc[0] > 0
    config = json.loads((tmp_path / method / "config.json").read_text())
    assert config["method"] == method and config["temperature"] == 0.1 and config["sigma"] == 2.0
    saved = torch.load(ckpt, weights_only=True)
    assert saved["config"]["lr"] == 1e-3 and saved["epoch"] == 1
    if method.startswith("anatcl"):
        assert terms_logged(metrics)


def terms_logged(metrics):
    return {"loss_age", "loss_anat"} <= set(metrics.columns)


@pytest.mark.parametrize("method", METHODS)
def test_each_method_overfits_a_fixed_batch(tiny_cohort, method):
    torch.manual_seed(0)
    cfg = small_config(tiny_cohort, "unused", method, n_views=2)
    model = AnatCLModel("resnet18", 32)
    net = AgeRegressor(model) if method == "l1" else model
    n = 6
    x = torch.from_numpy(np.asarray(tiny_cohort.volumes[:n], dtype=np.float32)).unsqueeze(1)
    gen = torch.Generator().manual_seed(0)
    views = torch.cat([x, x + 0.05 * torch.randn(x.shape, generator=gen)])   # two fixed views
    age = torch.as_tensor(tiny_cohort.participants["age"].to_numpy()[:n], dtype=torch.float32)
    desc = torch.rand(n, 3, 68, generator=gen)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(12):
        loss, _ = compute_loss(cfg, net(views), n, age, desc, (45.0, 20.0))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # "clearly": 30 % lower, or 1 nat lower for contrastive losses whose floor is far above 0 (with nearly
    # uniform weights, as global descriptors give, the best achievable loss stays near log(N*V - 1))
    assert losses[-1] < 0.7 * losses[0] or losses[-1] < losses[0] - 1.0, losses


def test_resume_is_bitwise_identical_to_an_uninterrupted_run(tiny_cohort, tmp_path):
    straight = pretrain(small_config(tiny_cohort, tmp_path / "straight", "anatcl-local", epochs=2))
    pretrain(small_config(tiny_cohort, tmp_path / "split", "anatcl-local", epochs=1))
    resumed = pretrain(small_config(tiny_cohort, tmp_path / "split", "anatcl-local", epochs=2, resume=True))
    a, b = torch.load(straight, weights_only=True), torch.load(resumed, weights_only=True)
    for key in a["net"]:
        assert torch.equal(a["net"][key], b["net"][key]), key
    assert a["optimizer"]["state"][0]["step"] == b["optimizer"]["state"][0]["step"]
    assert len(pd.read_csv(tmp_path / "split" / "metrics.csv")) == 2


def test_resume_refuses_a_different_configuration(tiny_cohort, tmp_path):
    pretrain(small_config(tiny_cohort, tmp_path / "run", "yaware"))
    with pytest.raises(ValueError, match=r"cannot resume.*temperature: saved 0.1 vs now 0.2"):
        pretrain(small_config(tiny_cohort, tmp_path / "run", "yaware", epochs=2, temperature=0.2, resume=True))


def test_narrow_runs_save_their_width_and_old_runs_resume_as_width_64(tiny_cohort, tmp_path):
    ckpt = pretrain(small_config(tiny_cohort, tmp_path / "narrow", "yaware", width=8))
    assert load_checkpoint(ckpt).embed_dim == 64
    with pytest.raises(ValueError, match=r"cannot resume.*width: saved 8 vs now 16"):
        pretrain(small_config(tiny_cohort, tmp_path / "narrow", "yaware", width=16, epochs=2, resume=True))

    pretrain(small_config(tiny_cohort, tmp_path / "old", "yaware"))
    # a run written before `width` existed: no such field in its saved config
    saved = torch.load(tmp_path / "old" / "checkpoint.pth", weights_only=True)
    del saved["config"]["width"]
    torch.save(saved, tmp_path / "old" / "checkpoint.pth")
    pretrain(small_config(tiny_cohort, tmp_path / "old", "yaware", epochs=2, resume=True))
    assert len(pd.read_csv(tmp_path / "old" / "metrics.csv")) == 2


def test_a_run_saved_before_augment_existed_is_not_resumed_as_unaugmented(tiny_cohort, tmp_path):
    pretrain(small_config(tiny_cohort, tmp_path / "old", "yaware"))
    saved = torch.load(tmp_path / "old" / "checkpoint.pth", weights_only=True)
    assert saved["config"]["augment"] == "none"            # the released recipe is the default
    del saved["config"]["augment"]                         # as written by earlier versions, which always flipped
    torch.save(saved, tmp_path / "old" / "checkpoint.pth")
    with pytest.raises(ValueError, match=r"cannot resume.*augment: saved 'crop, flip, blur.*vs now 'none'"):
        pretrain(small_config(tiny_cohort, tmp_path / "old", "yaware", epochs=2, resume=True))


def test_the_l1_target_is_standardised_age_or_years(tiny_cohort):
    age = torch.tensor([20.0, 40.0, 60.0, 80.0])
    predicted = torch.zeros(8)                                       # 2 views x 4 subjects
    mean, std = 50.0, 20.0
    for target, expected in (("standardised", (age - mean).abs().mean() / std), ("years", age.mean())):
        cfg = small_config(tiny_cohort, "unused", "l1", l1_target=target, batch_size=4)
        loss, logged = compute_loss(cfg, predicted, 4, age, torch.zeros(4, 3, 68), (mean, std))
        assert float(loss) == pytest.approx(float(expected))
    assert logged["l1_years"] == pytest.approx(50.0)


@pytest.mark.parametrize(("field", "value"), [("augment", "flip"), ("kernel", "cauchy"), ("l1_target", "log")])
def test_unknown_choices_are_refused_by_name(tiny_cohort, field, value):
    with pytest.raises(ValueError, match=f"{field.replace('_', '-')}: expected one of .*got '{value}'"):
        small_config(tiny_cohort, "unused", "yaware", **{field: value})


def test_folds_are_by_subject_stratified_and_shared(tiny_cohort, tmp_path):
    folds = load_or_make_folds(tiny_cohort.path, tiny_cohort.participants, 3, 0)
    assert not (tiny_cohort.path / "splits").exists()                    # nothing written into the data folder
    assert folds["fold"].value_counts().min() >= 7
    again = load_or_make_folds(tiny_cohort.path, tiny_cohort.participants, 3, 0)
    pd.testing.assert_frame_equal(folds, again)
    pretrain(small_config(tiny_cohort, tmp_path / "run", "simclr"))     # the run keeps the folds it used
    kept = pd.read_csv(tmp_path / "run" / "folds.tsv", sep="\t", dtype={"participant_id": str})
    pd.testing.assert_frame_equal(folds, kept)
    pinned = folds.assign(fold=(folds["fold"] + 1) % 3)                  # folds put in splits/ take precedence
    (tiny_cohort.path / "splits").mkdir()
    pinned.to_csv(tiny_cohort.path / "splits" / "folds-3-seed0.tsv", sep="\t", index=False)
    pd.testing.assert_frame_equal(load_or_make_folds(tiny_cohort.path, tiny_cohort.participants, 3, 0), pinned)
    shutil.rmtree(tiny_cohort.path / "splits")
    rows = training_rows(tiny_cohort.participants, folds, 1)
    assert set(folds["fold"].to_numpy()[rows]) == {0, 2}
    with pytest.raises(ValueError, match="unique"):
        make_folds(pd.concat([tiny_cohort.participants] * 2), 3)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(5, 60), n_sites=st.integers(1, 6), n_folds=st.integers(2, 5), seed=st.integers(0, 3))
def test_folds_fill_every_fold_without_warnings_whatever_the_strata(n, n_sites, n_folds, seed):
    rng = np.random.default_rng(seed)
    participants = pd.DataFrame({"participant_id": [f"s{i}" for i in range(n)],
                                 "site": rng.integers(0, n_sites, n).astype(str),
                                 "age": rng.uniform(6, 90, n)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # sklearn warns when a stratum cannot fill every fold
        folds = make_folds(participants, n_folds, seed)
    assert sorted(folds["fold"].unique()) == list(range(n_folds))
    assert folds["fold"].value_counts().max() - folds["fold"].value_counts().min() <= n_sites * 9


def test_epoch_plan_shards_every_global_batch():
    single = epoch_plan(20, 8, seed=3, epoch=1, rank=0, world=1)
    shards = [epoch_plan(20, 8, seed=3, epoch=1, rank=r, world=2) for r in range(2)]
    for s, batch in enumerate(single):
        np.testing.assert_array_equal(np.concatenate([shards[0][s], shards[1][s]]), batch)
    assert not np.array_equal(single[0], epoch_plan(20, 8, 3, 2, 0, 1)[0])
    with pytest.raises(ValueError, match="divisible"):
        epoch_plan(20, 9, 0, 0, 0, 2)


_WRITER = """
import sys, torch
from anatcl_core import AnatCLModel, save_checkpoint
model = AnatCLModel("resnet50")
print("ready", flush=True)
while True:
    save_checkpoint(sys.argv[1], model, blob=torch.zeros(20_000_000))
"""


def test_a_process_killed_while_writing_leaves_the_previous_checkpoint(tmp_path):
    from anatcl_core import save_checkpoint
    path = tmp_path / "checkpoint.pth"
    save_checkpoint(path, AnatCLModel(feat_dim=16))
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)                     # well inside a write of ~180 MB
    proc.kill()
    proc.wait()
    model = load_checkpoint(path)       # either the old file or a complete new one, never a torn one
    assert model.arch in ("resnet18", "resnet50")


def test_sigterm_checkpoints_mid_epoch_and_the_run_resumes(tiny_cohort, tmp_path):
    out = tmp_path / "term"
    def cmd(epochs, *extra):
        return [sys.executable, "-m", "anatcl_core.pretrain", "--cohort", str(tiny_cohort.path), "--method",
                "yaware", "--out", str(out), "--epochs", str(epochs), "--batch-size", "4", "--n-folds", "3",
                "--no-progress", *extra]

    proc = subprocess.Popen(cmd(50))
    deadline = time.time() + 600           # generous: CI machines may be slow or shared
    while not (out / "metrics.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert (out / "metrics.csv").exists(), "the first epoch did not finish"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143          # 128 + SIGTERM: the job did not finish
    saved = torch.load(out / "checkpoint.pth", weights_only=True)
    assert 1 <= saved["epoch"] < 50
    subprocess.run(cmd(saved["epoch"] + 1, "--resume"), check=True)
    assert torch.load(out / "checkpoint.pth", weights_only=True)["epoch"] == saved["epoch"] + 1


def test_device_resident_volumes_match_the_memmap_reads(tiny_cohort):
    from anatcl_core.data.batches import TrainingSet
    rows = np.array([7, 2, 19, 4, 11])
    resident = TrainingSet(tiny_cohort, rows, None, torch.device("cpu"), gpu_resident=True)
    mapped = TrainingSet(tiny_cohort, rows, None, torch.device("cpu"), gpu_resident=False)
    positions = np.array([2, 0, 4, 1])
    assert torch.equal(resident.volumes(positions), mapped.volumes(positions).half().float())
