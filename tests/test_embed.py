"""Embedding a cohort: same features as the model applied by hand, in participants order, written atomically."""
import subprocess
import sys

import nibabel as nib
import numpy as np
import torch

from anatcl_core import AnatCLModel, load_checkpoint, save_checkpoint
from anatcl_core.cli import main
from anatcl_core.data.augment import center_crop, training_crop
from anatcl_core.embed import FEATURES_NOTE, embed_cohort, embed_images
from anatcl_core.images import CAT12_GRID


def test_embed_cohort_equals_the_model_on_centre_crops(tiny_cohort):
    torch.manual_seed(0)
    model = AnatCLModel().eval()
    features = embed_cohort(model, tiny_cohort, batch_size=5, device="cpu", amp=False, progress=False)
    assert features.shape == (len(tiny_cohort), 512) and features.dtype == np.float32
    x = torch.from_numpy(np.asarray(tiny_cohort.volumes[:7], dtype=np.float32)).unsqueeze(1)
    with torch.no_grad():
        expected = model.embed(center_crop(x, training_crop(tiny_cohort.shape))).numpy()
    np.testing.assert_allclose(features[:7], expected, rtol=1e-4, atol=1e-5)


def test_embed_command_line_writes_the_features(tiny_cohort, tmp_path):
    checkpoint = save_checkpoint(tmp_path / "ckpt.pth", AnatCLModel(feat_dim=16))
    out = tmp_path / "features" / "tiny.npy"
    subprocess.run([sys.executable, "-m", "anatcl_core.cli", "embed", "--checkpoint", str(checkpoint),
                    "--cohort", str(tiny_cohort.path), "--out", str(out), "--batch-size", "12"], check=True)
    saved = np.load(out)
    direct = embed_cohort(load_checkpoint(checkpoint), tiny_cohort, device="cpu", progress=False)
    np.testing.assert_allclose(saved, direct, rtol=1e-5, atol=1e-6)
    assert [p.name for p in out.parent.iterdir()] == ["tiny.npy"]


def test_compiled_embedding_with_folded_batchnorm_matches_eager(tiny_cohort):
    torch.manual_seed(1)
    model = AnatCLModel()
    x = torch.from_numpy(np.asarray(tiny_cohort.volumes[:8], dtype=np.float32)).unsqueeze(1)
    with torch.no_grad():                  # non-trivial BatchNorm statistics, so folding them changes the weights
        model.train()(center_crop(x, training_crop(tiny_cohort.shape)) * 3.0)
    assert len(tiny_cohort) % 5 != 0       # the last batch is short and gets padded
    eager = embed_cohort(model, tiny_cohort, batch_size=5, device="cpu", amp=False, progress=False)
    compiled = embed_cohort(model, tiny_cohort, batch_size=5, device="cpu", amp=False, compile=True, progress=False)
    np.testing.assert_allclose(compiled, eager, rtol=1e-4, atol=1e-5)


def test_embed_images_returns_ids_and_encoder_features_not_projections(tmp_path):
    torch.manual_seed(2)
    model = AnatCLModel(width=8, feat_dim=16).eval()
    data = np.random.default_rng(0).uniform(0, 1, CAT12_GRID[0]).astype(np.float32)
    nib.save(nib.Nifti1Image(data, CAT12_GRID[1]), str(tmp_path / "mwp1sub-42_T1w.nii"))
    ids, features = embed_images(model, [tmp_path], device="cpu", progress=False)
    with torch.no_grad():
        expected = model.embed(center_crop(torch.from_numpy(data)[None, None], training_crop(CAT12_GRID[0])))
    assert ids == ["sub-42"] and features.shape == (1, model.embed_dim) == (1, 64)     # 8 x width, not feat_dim 16
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_the_command_help_says_which_features_it_writes(capsys):
    assert "512-d encoder features" in FEATURES_NOTE and "128-d projection" in FEATURES_NOTE
    try:
        main(["embed", "--help"])
    except SystemExit:
        pass
    assert " ".join(capsys.readouterr().out.split()).count("the 128-d projection is `model(x)`/head") == 1


def test_images_embed_on_the_grid_the_encoder_was_trained_on(tmp_path):
    """A 3 mm encoder (the book's CPU runs) reads maps resampled to the 3 mm grid: equal to embedding that grid's
    volume directly, and a map already on it is used as is."""
    import nibabel as nib

    from anatcl_core.data.cohort import GRIDS
    from anatcl_core.embed import embed_images, embed_volumes
    from anatcl_core.encoder import AnatCLModel

    torch.manual_seed(0)
    model = AnatCLModel("resnet18", width=8).eval()
    shape, affine = GRIDS[3.0]
    volume = np.random.default_rng(0).random(shape, dtype=np.float32)
    nib.save(nib.Nifti1Image(volume, affine), tmp_path / "mwp1sub-07_T1w.nii.gz")
    ids, features = embed_images(model, [tmp_path], device="cpu", progress=False, voxel_size=3.0)
    direct = embed_volumes(model, volume[None], device="cpu", progress=False)
    assert ids == ["sub-07"] and features.shape == (1, 64)
    np.testing.assert_allclose(features, direct, rtol=1e-5, atol=1e-6)
