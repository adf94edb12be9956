"""`anatcl embed --images`: one's own NIfTI maps -> a feature table whose rows are the authors' encoder features.

Maps are written here with nibabel: on the CAT12 grid, on MNI 2 mm grids (resampled), in native space (refused).
"""
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from anatcl.models import SupConResNet

from anatcl_core import AnatCLModel, save_checkpoint
from anatcl_core import feature_files
from anatcl_core.cli import main
from anatcl_core.data.augment import RELEASED_CROP, center_crop
from anatcl_core.feature_files import feature_columns, read_features, write_features
from anatcl_core.images import (CAT12_GRID, MapError, check_mni_space, find_images, inspect_maps, participant_id,
                                read_map)

CAT12_SHAPE, CAT12_AFFINE = CAT12_GRID
COS15, SIN15 = np.cos(np.radians(15)), np.sin(np.radians(15))
#: FSL's MNI152 2 mm grid: the CAT12 field of view at 2 mm, stored LAS like CAT12's.
MNI2_SHAPE, MNI2_AFFINE = (91, 109, 91), np.array([[-2.0, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]])


def write_map(path, data, affine):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data, dtype=np.float32), affine), str(path))
    return path


def random_map(seed):
    return np.random.default_rng(seed).uniform(0, 1, CAT12_SHAPE).astype(np.float32)


def smooth_map(shape, affine):
    """A few Gaussian blobs (sigma 18 mm) defined in MNI mm, sampled on any grid: resampling barely changes it."""
    voxels = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    mm = nib.affines.apply_affine(affine, voxels)
    centres = np.array([[-40.0, -20, 20], [35, 10, 40], [0, -70, 5], [10, 30, -10]])
    values = sum(np.exp(-((mm - c) ** 2).sum(-1) / (2 * 18.0 ** 2)) for c in centres)
    return values.astype(np.float32)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    torch.manual_seed(3)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "w8.pth", AnatCLModel(width=8, feat_dim=16))


def embed(argv, capsys=None):
    status = main(["embed", *map(str, argv), "--device", "cpu"])
    err = capsys.readouterr().err if capsys is not None else ""
    return status, err


def test_features_are_the_authors_encoder_output_on_the_centre_crop(tmp_path):
    torch.manual_seed(0)
    theirs = SupConResNet("resnet18", feat_dim=128, use_head=True)
    with torch.no_grad():                          # non-trivial BatchNorm statistics: every buffer must load
        for m in theirs.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    checkpoint = tmp_path / "weights.pth"
    torch.save({"model": theirs.state_dict()}, checkpoint)
    data = random_map(1)
    write_map(tmp_path / "scans" / "sub-01" / "mwp1sub-01_T1w.nii.gz", data, CAT12_AFFINE)
    out = tmp_path / "features.tsv"
    assert embed(["--checkpoint", checkpoint, "--images", tmp_path / "scans", "--out", out])[0] == 0
    table = pd.read_csv(out, sep="\t", dtype={"participant_id": str})
    assert list(table.columns) == ["participant_id", *feature_columns(512)]
    assert table["participant_id"].tolist() == ["sub-01"]
    theirs.use_head = False                        # the authors' forward without the head: the 512-d features
    with torch.no_grad():
        expected = theirs.eval()(center_crop(torch.from_numpy(data)[None, None], RELEASED_CROP)).numpy()[0]
    ours = table.iloc[0, 1:].to_numpy(dtype=np.float64)
    assert ours @ expected / np.linalg.norm(ours) / np.linalg.norm(expected) >= 0.9999


def test_rows_follow_sorted_files_and_every_format_round_trips(tmp_path, small_checkpoint):
    scans = tmp_path / "scans"
    for i, name in enumerate(["mwp1sub-02_T1w.nii", "mwp1sub-01_T1w.nii", "control7.nii"]):
        write_map(scans / name, random_map(10 + i), CAT12_AFFINE)
    results = {}
    for suffix in (".tsv", ".npy"):
        out = tmp_path / f"features{suffix}"
        assert embed(["--checkpoint", small_checkpoint, "--images", scans, "--out", out, "--batch-size", "2"])[0] == 0
        results[suffix] = read_features(out)
    assert (tmp_path / "features.ids.tsv").exists()
    ids, features = results[".tsv"]
    write_features(tmp_path / "features.csv", ids, features)
    results[".csv"] = read_features(tmp_path / "features.csv")
    assert ids == ["control7", "sub-01", "sub-02"] and features.shape == (3, 64) and features.dtype == np.float32
    for other in (".csv", ".npy"):
        assert results[other][0] == ids
        np.testing.assert_array_equal(results[other][1], features)     # 9 significant digits round-trip float32


def test_maps_on_mni_2mm_grids_are_resampled_to_the_cat12_grid(tmp_path, small_checkpoint):
    write_map(tmp_path / "mwp1sub-a.nii", smooth_map(CAT12_SHAPE, CAT12_AFFINE), CAT12_AFFINE)
    write_map(tmp_path / "mwp1sub-b.nii", smooth_map(MNI2_SHAPE, MNI2_AFFINE), MNI2_AFFINE)
    ras = MNI2_AFFINE @ np.array([[-1.0, 0, 0, MNI2_SHAPE[0] - 1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])
    write_map(tmp_path / "mwp1sub-c.nii", smooth_map(MNI2_SHAPE, ras), ras)            # same brain, stored RAS
    maps = inspect_maps(find_images([tmp_path / "mwp1sub-*.nii"]))
    assert [(m.participant_id, m.on_grid) for m in maps] == [("sub-a", True), ("sub-b", False), ("sub-c", False)]
    fine, coarse, flipped = (read_map(m) for m in maps)
    assert coarse.shape == CAT12_SHAPE and np.abs(coarse - fine).max() < 0.01 * fine.max()
    np.testing.assert_allclose(flipped, coarse, atol=1e-5)
    out = tmp_path / "f.npy"
    assert embed(["--checkpoint", small_checkpoint, "--images", tmp_path, "--out", out])[0] == 0
    features = np.load(out).astype(np.float64)
    cosine = features @ features.T / np.outer(*[np.linalg.norm(features, axis=1)] * 2)
    assert cosine[0, 1] > 0.999 and cosine[1, 2] > 0.99999


@pytest.mark.parametrize("shape, affine, fragment", [
    ((40, 48, 40), np.array([[4.0, 0, 0, -80], [0, 4 * COS15, -4 * SIN15, -90], [0, 4 * SIN15, 4 * COS15, -60],
                             [0, 0, 0, 1]]), "is oblique (a voxel axis is tilted 15.0 degrees"),   # scanner slices
    ((60, 60, 60), np.diag([3.0, 3.0, 3.0, 1.0]), "of the MNI brain (x -72..72"),                # origin at a corner
    ((100, 80, 70), np.array([[3.0, 0, 0, -90], [0, 3, 0, -126], [0, 0, 3, -72], [0, 0, 0, 1]]),  # 60 mm off
     "from the MNI field of view centre"),
    ((10, 12, 10, 3), np.diag([3.0, 3.0, 3.0, 1.0]), "has 4 dimensions; expected one 3-D"),
])
def test_maps_not_in_mni_space_are_refused_in_one_line_before_the_model_loads(tmp_path, capsys, shape, affine,
                                                                             fragment):
    path = write_map(tmp_path / "p1sub-01_T1w.nii", np.ones(shape), affine)
    out = tmp_path / "f.tsv"
    status, err = embed(["--checkpoint", tmp_path / "absent.pth", "--images", path, "--out", out], capsys)
    assert status == 1 and err.count("\n") == 1 and str(path) in err and fragment in err, err
    assert not out.exists()


def test_cat12_and_mni_grids_pass_the_space_check():
    assert check_mni_space(CAT12_AFFINE, CAT12_SHAPE, "x") is True
    assert check_mni_space(MNI2_AFFINE, MNI2_SHAPE, "x") is False
    one_mm = np.array([[1.0, 0, 0, -98], [0, 1, 0, -134], [0, 0, 1, -72], [0, 0, 0, 1]])   # nilearn's MNI152
    assert check_mni_space(one_mm, (197, 233, 189), "x") is False
    permuted = CAT12_AFFINE[:, [1, 0, 2, 3]]                  # voxel axes stored y, x, z: still MNI, resampled
    assert check_mni_space(permuted, (145, 121, 121), "x") is False
    with pytest.raises(MapError, match="oblique"):           # two voxel axes along world x: not a valid grid
        check_mni_space(CAT12_AFFINE[:, [0, 0, 2, 3]], CAT12_SHAPE, "x")


def test_two_maps_with_one_participant_id_are_refused_naming_both(tmp_path, capsys, small_checkpoint):
    first = write_map(tmp_path / "ses-1" / "mwp1sub-07_ses-1_T1w.nii", random_map(1), CAT12_AFFINE)
    second = write_map(tmp_path / "ses-2" / "mwp1sub-07_ses-2_T1w.nii", random_map(2), CAT12_AFFINE)
    status, err = embed(["--checkpoint", small_checkpoint, "--images", tmp_path, "--out", tmp_path / "f.tsv"], capsys)
    assert status == 1 and err.count("\n") == 1 and str(first) in err and str(second) in err and "'sub-07'" in err


@pytest.mark.parametrize("name, content, fragment", [
    ("notes.txt", b"age 71", "not a NIfTI file (name ends in '.txt')"),
    ("mwp1sub-01.nii", b"not an image", "not a readable NIfTI image"),
    ("mwp1sub-01.nii.gz", b"not gzip", "not a readable NIfTI image"),
])
def test_a_file_that_is_not_nifti_is_refused_in_one_line(tmp_path, capsys, small_checkpoint, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    status, err = embed(["--checkpoint", small_checkpoint, "--images", path, "--out", tmp_path / "f.tsv"], capsys)
    assert status == 1 and err.count("\n") == 1 and err.startswith(f"anatcl embed: {path}: ") and fragment in err


def test_empty_or_non_finite_maps_and_missing_paths_are_named(tmp_path, capsys, small_checkpoint):
    data = random_map(4)
    data[60, 70, 60] = np.nan
    bad = write_map(tmp_path / "mwp1sub-09.nii", data, CAT12_AFFINE)
    status, err = embed(["--checkpoint", small_checkpoint, "--images", bad, "--out", tmp_path / "f.tsv"], capsys)
    assert status == 1 and f"{bad}: voxel values include 1 NaN/inf" in err
    status, err = embed(["--checkpoint", small_checkpoint, "--images", tmp_path / "nope", "--out",
                         tmp_path / "f.tsv"], capsys)
    assert status == 1 and "nope: no such file or folder" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(MapError, match="no .nii or .nii.gz file in this folder"):
        find_images([tmp_path / "empty"])


def test_an_existing_output_is_kept_unless_overwrite(tmp_path, capsys, small_checkpoint):
    write_map(tmp_path / "scans" / "mwp1sub-01.nii", random_map(5), CAT12_AFFINE)
    out = tmp_path / "f.tsv"
    out.write_text("earlier features\n")
    argv = ["--checkpoint", small_checkpoint, "--images", tmp_path / "scans", "--out", out]
    status, err = embed(argv, capsys)
    assert status == 1 and "already exists; add --overwrite" in err and out.read_text() == "earlier features\n"
    assert embed([*argv, "--overwrite"])[0] == 0 and read_features(out)[0] == ["sub-01"]
    (tmp_path / "g.ids.tsv").write_text("participant_id\nold\n")          # a .npy's sidecar counts too
    status, err = embed([*argv[:-1], tmp_path / "g.npy"], capsys)
    assert status == 1 and "g.ids.tsv already exists" in err and not (tmp_path / "g.npy").exists()


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path, capsys, small_checkpoint, monkeypatch):
    monkeypatch.setattr(feature_files, "parquet_available", lambda: False)
    path = write_map(tmp_path / "mwp1sub-01.nii", random_map(6), CAT12_AFFINE)
    status, err = embed(["--checkpoint", small_checkpoint, "--images", path, "--out", tmp_path / "f.parquet"], capsys)
    assert status == 1 and err.count("\n") == 1 and "needs pyarrow" in err and "pip install pyarrow" in err


def test_parquet_round_trips_when_pyarrow_is_installed(tmp_path):
    pytest.importorskip("pyarrow")
    features = np.random.default_rng(0).standard_normal((3, 512)).astype(np.float32)
    write_features(tmp_path / "f.parquet", ["sub-1", "sub-2", "x"], features)
    ids, back = read_features(tmp_path / "f.parquet")
    assert ids == ["sub-1", "sub-2", "x"] and np.array_equal(back, features)


@pytest.mark.parametrize("name, expected", [
    ("mwp1sub-01_T1w.nii", "sub-01"), ("mwp1sub-CC110033_ses-1_T1w.nii.gz", "sub-CC110033"),
    ("sub-ADNI002S0295.nii", "sub-ADNI002S0295"), ("mwp1scan_7.nii.gz", "mwp1scan_7"), ("brain.nii", "brain"),
])
def test_participant_ids_come_from_bids_names_else_the_stem(name, expected):
    assert participant_id(f"/data/{name}") == expected


def test_write_maps_names_files_as_cat12_and_embed_reads_them_back(tmp_path, tiny_cohort):
    from anatcl_core.images import write_maps

    paths = write_maps(tiny_cohort, tmp_path / "maps", rows=[0, 2])
    subjects = tiny_cohort.participants["participant_id"].iloc[[0, 2]].tolist()
    assert [p.name for p in paths] == [f"mwp1{s}_T1w.nii.gz" for s in subjects]
    assert [participant_id(p) for p in paths] == subjects
    back = nib.load(paths[1])
    np.testing.assert_array_equal(back.get_fdata(dtype=np.float32), tiny_cohort.volumes[2])
    np.testing.assert_allclose(back.affine, tiny_cohort.affine)
