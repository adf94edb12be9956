"""The encoder and checkpoint loading, against the authors' own model code (PyPI `anatcl` 0.0.3)."""
import argparse

import pytest
import torch
from anatcl.anatcl import AnatCL
from anatcl.models import SupConResNet

from anatcl_core import AnatCLModel, CheckpointError, load_checkpoint, save_checkpoint
from anatcl_core.checkpoints import released_weights_url

SHAPE = (2, 1, 24, 28, 24)


def _authors_model(arch="resnet18", seed=0):
    torch.manual_seed(seed)
    model = SupConResNet(arch, feat_dim=128, use_head=True)
    # Non-trivial BatchNorm statistics, so eval-mode outputs depend on every buffer being loaded.
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
            if isinstance(m, torch.nn.Linear):
                m.bias.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def released_file(tmp_path_factory):
    model = _authors_model()
    path = tmp_path_factory.mktemp("released") / "weights.pth"
    torch.save({"model": model.state_dict(), "epoch": 299,
                "opts": argparse.Namespace(lr=1e-4, batch_size=32)}, path)
    return path, model


def test_state_dict_matches_authors_keys_and_shapes():
    ours, theirs = AnatCLModel().state_dict(), SupConResNet("resnet18").state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in theirs)


def test_released_checkpoint_round_trip_gives_identical_outputs(released_file):
    path, theirs = released_file
    ours = load_checkpoint(path)
    assert not ours.training and ours.arch == "resnet18"
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
        theirs.use_head = False
        torch.testing.assert_close(ours.embed(x), theirs(x), rtol=0, atol=0)
        theirs.use_head = True


def test_authors_wrapper_without_download_agrees(released_file):
    path, _ = released_file
    wrapper = AnatCL(descriptor="global", fold=0, pretrained=False, use_head=False)
    wrapper.backbone.load_state_dict(torch.load(path, weights_only=False)["model"])
    wrapper.eval()
    x = torch.randn(*SHAPE, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(load_checkpoint(path).embed(x), wrapper(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", ["resnet34", "resnet50"])
def test_architecture_is_inferred_from_keys(tmp_path, arch):
    theirs = _authors_model(arch)
    torch.save({"model": theirs.state_dict()}, tmp_path / "w.pth")
    ours = load_checkpoint(tmp_path / "w.pth")
    assert ours.arch == arch
    x = torch.randn(1, 1, 20, 20, 20)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)


def test_explicit_arch_mismatch_is_an_error(released_file):
    with pytest.raises(CheckpointError, match="resnet34.*resnet18"):
        load_checkpoint(released_file[0], arch="resnet34")


def test_ddp_prefixed_keys_load(tmp_path, released_file):
    state = torch.load(released_file[0], weights_only=False)["model"]
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ddp.pth")
    assert load_checkpoint(tmp_path / "ddp.pth").arch == "resnet18"


class _Payload:
    def __reduce__(self):
        return (print, ("this would run at load time",))


def test_file_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": AnatCLModel().state_dict(), "hook": _Payload()}, path)
    with pytest.raises(CheckpointError, match=r"evil\.pth.*run code.*asks for \S*print\)") as err:
        load_checkpoint(path)
    assert "\n" not in str(err.value)


def test_truncated_and_corrupt_files_are_refused(tmp_path, released_file):
    data = released_file[0].read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.pth.*truncated or corrupt"):
        load_checkpoint(tmp_path / "cut.pth")
    (tmp_path / "noise.pth").write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CheckpointError, match=r"noise\.pth"):
        load_checkpoint(tmp_path / "noise.pth")
    with pytest.raises(FileNotFoundError, match=r"absent\.pth"):
        load_checkpoint(tmp_path / "absent.pth")


def test_missing_unexpected_and_misshaped_keys_are_named(tmp_path):
    state = AnatCLModel().state_dict()
    missing = {k: v for k, v in state.items() if k != "head.0.weight"}
    torch.save({"model": missing}, tmp_path / "missing.pth")
    with pytest.raises(CheckpointError, match=r"missing\.pth.*missing keys \['head\.0\.weight'\]"):
        load_checkpoint(tmp_path / "missing.pth")
    torch.save({"model": {**state, "encoder.extra.weight": torch.zeros(1)}}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"unexpected keys \['encoder\.extra\.weight'\]"):
        load_checkpoint(tmp_path / "extra.pth")
    torch.save({"model": {**state, "encoder.bn1.weight": torch.zeros(3)}}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=r"encoder\.bn1\.weight: file \[3\] vs model \[64\]"):
        load_checkpoint(tmp_path / "shape.pth")
    torch.save(torch.zeros(3), tmp_path / "tensor.pth")
    with pytest.raises(CheckpointError, match="expected a dict with a 'model' state dict"):
        load_checkpoint(tmp_path / "tensor.pth")


def test_project_checkpoint_round_trip_and_atomic_save(tmp_path, monkeypatch):
    model = AnatCLModel(feat_dim=32).eval()
    path = save_checkpoint(tmp_path / "ckpt.pth", model, config={"method": "yaware", "lr": 1e-4}, epoch=3)
    loaded = load_checkpoint(path)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert torch.load(path, weights_only=True)["config"]["method"] == "yaware"

    before = path.read_bytes()

    def interrupted_save(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, AnatCLModel(feat_dim=32))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


@pytest.mark.parametrize("arch, width", [("resnet18", 16), ("resnet18", 8), ("resnet50", 4)])
def test_narrow_encoder_round_trips_with_its_width_inferred(tmp_path, arch, width):
    model = AnatCLModel(arch, feat_dim=24, width=width).eval()
    expansion = 4 if arch == "resnet50" else 1
    assert model.embed_dim == 8 * width * expansion
    loaded = load_checkpoint(save_checkpoint(tmp_path / "narrow.pth", model))
    assert (loaded.arch, loaded.width, loaded.feat_dim) == (arch, width, 24)
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded.embed(x), model.embed(x), rtol=0, atol=0)
        assert loaded.embed(x).shape == (1, 8 * width * expansion)


def test_default_width_is_the_papers_resnet18():
    # Parameter count of the authors' SupConResNet-18 encoder: the width-64 default must be that network.
    ours = sum(p.numel() for p in AnatCLModel().encoder.parameters())
    theirs = sum(p.numel() for p in SupConResNet("resnet18", feat_dim=128, use_head=True).encoder.parameters())
    assert ours == theirs
    with pytest.raises(ValueError, match="width must be a positive int"):
        AnatCLModel(width=0)


@pytest.mark.parametrize("bad, error, match", [
    (torch.zeros(2, 24, 24, 24), ValueError, r"\[B, 1, X, Y, Z\].*add the channel axis"),
    (torch.zeros(2, 2, 24, 24, 24), ValueError, r"\[B, 1, X, Y, Z\]"),
    (torch.zeros(2, 1, 24, 24, 24, dtype=torch.int64), TypeError, "floating-point"),
    (torch.zeros(1, 1, 4, 24, 24), ValueError, "too small"),
])
def test_bad_input_is_a_clear_error(bad, error, match):
    with pytest.raises(error, match=match):
        AnatCLModel()(bad)


def test_released_urls_are_per_descriptor_and_fold():
    urls = {released_weights_url(d, f) for d in ("global", "local") for f in range(5)}
    assert len(urls) == 10 and all(u.endswith("/weights.pth") for u in urls)
    assert "_local_lambd1.0_fold3_" in released_weights_url("local", 3)
    with pytest.raises(ValueError, match="fold"):
        released_weights_url("global", 5)


def test_released_urls_match_the_authors_package():
    from anatcl.anatcl import WEIGHTS_URLS
    theirs = WEIGHTS_URLS["anatcl-g3"]["resnet18"]
    for descriptor in ("global", "local"):
        assert [released_weights_url(descriptor, f) for f in range(5)] == theirs[descriptor]


def test_a_model_saved_in_the_released_format_loads_as_the_released_files_do(tmp_path):
    from anatcl_core.checkpoints import save_released_format
    torch.manual_seed(4)
    model = AnatCLModel(width=8, feat_dim=16).eval()
    path = save_released_format(tmp_path / "w.pth", model)
    saved = torch.load(path, weights_only=True)
    assert list(saved) == ["model"]                          # no arch, width or config: inferred on loading
    back = load_checkpoint(path)
    assert (back.width, back.feat_dim) == (8, 16)
    x = torch.randn(1, 1, 16, 20, 16)
    with torch.no_grad():
        torch.testing.assert_close(back.embed(x), model.embed(x))
