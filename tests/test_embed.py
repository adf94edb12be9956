"""Embedding a cohort: same features as the model applied by hand, in participants order, written atomically."""
import subprocess
import sys

import numpy as np
import torch

from anatcl_core import AnatCLModel, load_checkpoint, save_checkpoint
from anatcl_core.data.augment import center_crop, training_crop
from anatcl_core.embed import embed_cohort


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
