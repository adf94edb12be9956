"""The released-weights cache: checksums recorded then verified, hand-placed files, offline messages, the spec.

Nothing here touches the network: `urlopen` is replaced by a fake that serves bytes, or raises.
"""
import io
import json
import socket
from urllib.error import HTTPError, URLError

import numpy as np
import pandas as pd
import pytest
import torch

from anatcl_core import AnatCLModel, load_checkpoint, load_released
from anatcl_core import released
from anatcl_core.cli import main
from anatcl_core.data.cohort import write_cohort
from anatcl_core.embed import EmbeddingCache, embed_cohort
from anatcl_core.experiments import ensure_encoders, evaluate_methods, method_embeddings
from anatcl_core.methods import label_of, paper_row_of
from anatcl_core.report import paper_table
from anatcl_core.released import (REGISTRY_NAME, ReleasedWeightsError, cache_home, parse_released_spec,
                                  released_file_name, released_weights_url, sha256_hex)


@pytest.fixture(scope="module")
def weights():
    """Bytes of a small checkpoint, standing in for the authors' 134+ MB file."""
    torch.manual_seed(0)
    buffer = io.BytesIO()
    torch.save({"model": AnatCLModel(width=8, feat_dim=16).state_dict()}, buffer)
    return buffer.getvalue()


@pytest.fixture
def home(tmp_path, monkeypatch):
    folder = tmp_path / "anatcl-home"
    monkeypatch.setenv("ANATCL_HOME", str(folder))
    return folder


class FakeResponse(io.BytesIO):
    def __init__(self, payload, length=None):
        super().__init__(payload)
        self.headers = {"Content-Length": str(len(payload) if length is None else length)}


def serve(monkeypatch, payload, length=None):
    """Replace the download opener with one serving `payload`; -> the list of URLs requested."""
    asked = []

    def fake_urlopen(url, timeout=None):
        asked.append(url)
        return FakeResponse(payload, length)
    monkeypatch.setattr(released, "urlopen", fake_urlopen)
    return asked


def no_network(monkeypatch, error=None):
    def fail(url, timeout=None):
        if error is None:
            raise AssertionError(f"the network was used: {url}")
        raise error
    monkeypatch.setattr(released, "urlopen", fail)


def one_line(err) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_the_checksum_is_recorded_on_download_and_a_tampered_file_is_refused(home, monkeypatch, weights):
    asked = serve(monkeypatch, weights)
    model = load_checkpoint("released:global:0")
    target = home / released_file_name("global", 0)
    assert asked == [released_weights_url("global", 0)] and target.read_bytes() == weights
    assert model.width == 8 and not model.training
    entry = json.loads((home / REGISTRY_NAME).read_text())[target.name]
    assert entry["sha256"] == sha256_hex(target) and entry["url"] == asked[0]
    assert sorted(p.name for p in home.iterdir() if p.name.startswith(".")) == []      # no temporary file left

    no_network(monkeypatch)                       # cached: loads again without the network, hash verified
    load_released("global", 0)
    tampered = bytearray(weights)
    tampered[len(weights) // 2] ^= 0xFF                                        # one byte changed
    target.write_bytes(bytes(tampered))
    with pytest.raises(ReleasedWeightsError) as err:
        load_released("global", 0)
    message = one_line(err)
    assert str(target) in message and entry["sha256"] in message and sha256_hex(target) in message
    assert "delete it to download it again" in message

    target.unlink()                               # what the message says to do
    serve(monkeypatch, weights)
    assert load_released("global", 0).width == 8


def test_a_new_download_must_match_the_first_one(home, monkeypatch, weights):
    serve(monkeypatch, weights)
    load_released("local", 1)
    target = home / released_file_name("local", 1)
    first = sha256_hex(target)
    target.unlink()
    torch.manual_seed(9)
    other = io.BytesIO()
    torch.save({"model": AnatCLModel(width=8, feat_dim=16).state_dict()}, other)
    serve(monkeypatch, other.getvalue())          # the server now has other bytes under the same URL
    with pytest.raises(ReleasedWeightsError) as err:
        load_released("local", 1)
    message = one_line(err)
    assert first in message and "nothing was kept" in message and f"remove the '{target.name}' entry" in message
    assert not target.exists() and not [p for p in home.iterdir() if p.name.startswith(".")]
    registry = home / REGISTRY_NAME               # what the message says to do when the change is expected
    registry.write_text(json.dumps({k: v for k, v in json.loads(registry.read_text()).items() if k != target.name}))
    load_released("local", 1)
    assert json.loads(registry.read_text())[target.name]["sha256"] == sha256_hex(target) != first


def test_a_file_placed_by_hand_is_used_without_network_and_its_hash_recorded(home, monkeypatch, weights):
    home.mkdir()
    target = home / released_file_name("local", 3)
    target.write_bytes(weights)
    no_network(monkeypatch)
    assert load_checkpoint("released:local:3").width == 8
    assert json.loads((home / REGISTRY_NAME).read_text())[target.name]["sha256"] == sha256_hex(target)


@pytest.mark.parametrize("error", [URLError(socket.gaierror(-2, "Name or service not known")),
                                   TimeoutError("timed out"), ConnectionResetError(104, "Connection reset"),
                                   HTTPError("http://x", 503, "Service Unavailable", {}, None)],
                         ids=["dns", "timeout", "reset", "http-503"])
def test_offline_without_the_file_names_the_url_and_where_to_put_it(home, monkeypatch, error):
    no_network(monkeypatch, error)
    with pytest.raises(ReleasedWeightsError) as err:
        load_released("local", 2)
    message = one_line(err)
    target = home / released_file_name("local", 2)
    assert released_weights_url("local", 2) in message and f"put the file at {target}" in message
    assert not target.exists() and not any(home.iterdir())      # no half-written file, no temporary file


def test_a_cut_download_or_a_web_page_is_not_kept(home, monkeypatch, weights):
    serve(monkeypatch, weights[:1000], length=len(weights))
    with pytest.raises(ReleasedWeightsError, match=f"stopped after 1000 of {len(weights)} bytes"):
        load_released("global", 1)
    serve(monkeypatch, b"<!DOCTYPE html><html>Sign in</html>")
    with pytest.raises(ReleasedWeightsError, match="not a torch file"):
        load_released("global", 1)
    assert not any(home.iterdir())


def test_a_registry_that_is_not_json_is_named(home, monkeypatch, weights):
    home.mkdir()
    (home / released_file_name("global", 0)).write_bytes(weights)
    (home / REGISTRY_NAME).write_text("{not json")
    with pytest.raises(ReleasedWeightsError, match=f"{REGISTRY_NAME}: not a readable checksum registry.*delete it"):
        load_released("global", 0)


def test_the_cache_folder_defaults_to_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("ANATCL_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_home() == tmp_path / ".cache" / "anatcl"
    monkeypatch.setenv("ANATCL_HOME", str(tmp_path / "elsewhere"))
    assert cache_home() == tmp_path / "elsewhere" and cache_home(tmp_path / "given") == tmp_path / "given"


@pytest.mark.parametrize("spec, expected", [("released:global:0", ("global", 0)), ("released:local:4", ("local", 4))])
def test_released_specs_parse(spec, expected):
    assert parse_released_spec(spec) == expected


@pytest.mark.parametrize("spec, fragment", [
    ("released:glob:0", "descriptor 'glob' was not released"),
    ("released:Global:0", "descriptor 'Global' was not released"),
    ("released:global:5", "fold '5' was not released"),
    ("released:global:-1", "fold '-1' was not released"),
    ("released:global:x", "fold 'x' was not released"),
    ("released:global", "expected released:<descriptor>:<fold>"),
    ("released:global:0:1", "expected released:<descriptor>:<fold>"),
    ("released:", "expected released:<descriptor>:<fold>"),
])
def test_bad_released_specs_are_one_line_errors(spec, fragment, home, monkeypatch):
    no_network(monkeypatch)
    with pytest.raises(ReleasedWeightsError) as err:
        load_checkpoint(spec)
    message = one_line(err)
    assert fragment in message and repr(spec) in message and "global, local" in message


def test_the_old_released_flags_and_the_spec_give_the_same_features(home, monkeypatch, weights, tiny_cohort,
                                                                     tmp_path, capsys):
    home.mkdir()
    (home / released_file_name("local", 3)).write_bytes(weights)
    no_network(monkeypatch)
    old, new = tmp_path / "old.npy", tmp_path / "new.npy"
    common = ["--cohort", str(tiny_cohort.path), "--device", "cpu"]
    assert main(["embed", "--released", "local", "--fold", "3", *common, "--out", str(old)]) == 0
    assert main(["embed", "--checkpoint", "released:local:3", *common, "--out", str(new)]) == 0
    np.testing.assert_array_equal(np.load(old), np.load(new))
    direct = embed_cohort("released:local:3", tiny_cohort, device="cpu", progress=False)
    np.testing.assert_allclose(np.load(new), direct, rtol=1e-5, atol=1e-6)
    cache = EmbeddingCache(tmp_path / "cache")
    digest = sha256_hex(home / released_file_name("local", 3))
    assert cache.path_for("released:local:3", "tiny").parent.name == digest[:16]
    capsys.readouterr()
    assert main(["embed", "--checkpoint", "released:local:9", *common, "--out", str(tmp_path / "x.npy")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "fold '9' was not released" in err


def small_cohort(path, voxel_size, n=20, seed=0):
    """A cohort of `n` blobs on a small grid of `voxel_size` mm, half AD and half controls."""
    rng = np.random.default_rng(seed)
    shape = (24, 28, 24)
    affine = np.diag([-voxel_size, voxel_size, voxel_size, 1.0])
    affine[:3, 3] = [18, -21, -18]
    volumes = rng.uniform(0, 1, (n, *shape)).astype(np.float32)
    roi = rng.uniform(0.5, 1.5, (n, 7, 68)).astype(np.float32)
    participants = pd.DataFrame({"participant_id": [f"sub-{i:02d}" for i in range(n)],
                                 "age": rng.uniform(60, 90, n), "sex": rng.choice(["M", "F"], n),
                                 "site": "s1", "diagnosis": ["ad", "control"] * (n // 2)})
    return write_cohort(path, participants, volumes, roi, affine, provenance={"source": "tests"})


def test_the_released_weights_are_rows_of_the_tables_read_from_the_cache(tmp_path, monkeypatch, weights):
    home = tmp_path / "elsewhere"                         # given as released_home, not through $ANATCL_HOME
    home.mkdir()
    (home / released_file_name("global", 2)).write_bytes(weights)
    monkeypatch.delenv("ANATCL_HOME", raising=False)
    no_network(monkeypatch)
    adni = small_cohort(tmp_path / "data" / "adni", 1.5)
    results = evaluate_methods(tmp_path / "data", tmp_path / "out", ["adni/ad-vs-hc"], ["released-global"], fold=2,
                               n_splits=2, progress=False, released_home=home)
    assert results[["method", "fold", "task"]].drop_duplicates().values.tolist() == [
        ["released-global", 2, "adni/ad-vs-hc"]]
    assert bool(results["evaluable"].iloc[0])
    embeddings = method_embeddings(tmp_path / "data", tmp_path / "out", ["released-global"], fold=2,
                                   cohort_names=("adni",), progress=False, released_home=home)
    expected = embed_cohort(load_checkpoint(home / released_file_name("global", 2)), adni, device="cpu",
                            progress=False)
    np.testing.assert_allclose(embeddings[("released-global", 2)]["adni"], expected, rtol=1e-5, atol=1e-6)
    assert REGISTRY_NAME in {p.name for p in home.iterdir()}           # the hand-placed file's hash recorded
    table = paper_table(3, results)
    row = table.loc["AnatCL-G3 (released)"]
    assert row[("ADNI", "HC vs AD", "paper")] == table.loc["AnatCL-G3"][("ADNI", "HC vs AD", "paper")] != "—"


def test_released_weights_refuse_cohorts_off_their_grid_before_any_download(tmp_path, monkeypatch, home):
    no_network(monkeypatch)
    small_cohort(tmp_path / "data" / "adni", 3.0)
    with pytest.raises(ValueError, match=r"adni: field 'voxel_size_mm' is \[3\.0, 3\.0, 3\.0\]; released-local"):
        method_embeddings(tmp_path / "data", tmp_path / "out", ["released-local"], progress=False)
    assert not home.exists()


def test_released_methods_are_labelled_and_never_pretrained(tmp_path):
    assert label_of("released-local") == "AnatCL-L3 (released)" and paper_row_of(label_of("released-local")) == \
        "AnatCL-L3"
    assert ensure_encoders(tmp_path / "data", tmp_path / "out", ["released-global"]) == {}


def test_the_reference_rows_are_an_untrained_encoder_and_the_desikan_table(tmp_path):
    from anatcl_core.anatomy import CHANNELS
    from anatcl_core.experiments import desikan_features
    from anatcl_core.methods import BASELINES
    adni = small_cohort(tmp_path / "data" / "adni", 3.0)
    found = ensure_encoders(tmp_path / "data", tmp_path / "out", list(BASELINES), width=8, seed=3)
    assert set(found) == {"random-init"}
    saved = torch.load(found["random-init"], weights_only=True)
    torch.manual_seed(3)
    fresh = AnatCLModel(width=8).state_dict()
    assert all(torch.equal(saved["model"][k], v) for k, v in fresh.items()) and saved["untrained"]
    embeddings = method_embeddings(tmp_path / "data", tmp_path / "out", list(BASELINES), progress=False)
    table = embeddings[("desikan-table", 0)]["adni"]
    assert table.shape == (20, 204)
    thickness = CHANNELS.index("average_thickness_mm")                               # CT, GMV, SA: AnatCL's order
    np.testing.assert_allclose(np.exp(table[:, :68]), adni.roi[:, thickness], rtol=1e-5)
    np.testing.assert_allclose(desikan_features(adni), table)
    assert embeddings[("random-init", 0)]["adni"].shape == (20, 64)
    results = evaluate_methods(tmp_path / "data", tmp_path / "out", ["adni/ad-vs-hc"], list(BASELINES),
                               n_splits=2, progress=False)
    assert set(results["method"]) == set(BASELINES)
    assert set(paper_table(3, results).index[-2:]) == set(BASELINES.values())


def test_a_misspelt_method_is_refused_naming_every_kind_accepted(tmp_path):
    for call in (lambda: ensure_encoders(tmp_path, tmp_path, ["released-globl"]),
                 lambda: method_embeddings(tmp_path, tmp_path, ["yawre"], progress=False)):
        with pytest.raises(ValueError, match=r"unknown \['(released-globl|yawre)'\].*'released-global'.*'desikan-table'"):
            call()


def test_the_untrained_encoder_follows_the_settings_of_a_rerun(tmp_path):
    """A rerun with another width or seed must not keep the first run's untrained encoder."""
    small_cohort(tmp_path / "data" / "adni", 3.0)
    path = ensure_encoders(tmp_path / "data", tmp_path / "out", ["random-init"], width=8, seed=3)["random-init"]
    first = path.read_bytes()
    assert ensure_encoders(tmp_path / "data", tmp_path / "out", ["random-init"], width=8, seed=3)["random-init"] \
        .read_bytes() == first                                                     # same settings: kept
    for width, seed in ((16, 3), (16, 4)):
        ensure_encoders(tmp_path / "data", tmp_path / "out", ["random-init"], width=width, seed=seed)
        saved = torch.load(path, weights_only=True)
        assert (saved["width"], saved["seed"]) == (width, seed)
