"""The in-domain classifier: it learns a tiny separable task in a few steps, its
features feed an in-domain FID under its own label, and its params round-trip on disk.

Letters: N images, H/W height/width, F features.
"""

import numpy as np
import pytest

from cofre_jax.evaluation import domain_classifier as dc
from cofre_jax.evaluation import fid


def _halves(n, seed):
    """Class 0: bright left half; class 1: bright right half (same mean brightness, so
    only where the light is tells them apart); uint8 [N, 28, 28] with noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    x = rng.normal(60, 30, (n, 28, 28))
    x[labels == 0, :, :14] += 120
    x[labels == 1, :, 14:] += 120
    return np.clip(x, 0, 255).astype(np.uint8), labels


@pytest.fixture(scope="module")
def trained():
    x, y = _halves(256, seed=0)
    xt, yt = _halves(200, seed=1)
    losses = []
    params, acc = dc.train_domain_classifier(
        x, y, xt, yt, num_classes=2, steps=40, batch_size=32,
        progress=lambda step, loss: losses.append((step, loss)),
    )  # fmt: skip
    return params, acc, losses


def test_reaches_high_accuracy_in_a_few_steps(trained):
    params, acc, losses = trained
    assert acc >= 0.95
    assert [s for s, _ in losses] == [40] and np.isfinite(losses[-1][1])
    f, logits = dc.features_and_logits(params, _halves(3, seed=2)[0])
    assert f.shape == (3, dc.FEATURES) and logits.shape == (3, 2)


def test_in_domain_fid_is_labelled_and_ranks_sets(trained, tmp_path):
    params = trained[0]
    extractor = dc.domain_extractor(params)
    assert extractor.label == "in-domain FID (Fashion-MNIST classifier)"
    real, _ = _halves(300, seed=3)
    ref = fid.reference_statistics(real, extractor, str(tmp_path), batch_size=100)
    same = fid.compute_fid(_halves(300, seed=4)[0], extractor, ref, batch_size=100)
    left_only = np.where(np.arange(28) < 14, 180, 60)[None, None, :].repeat(300, 0)
    left_only = np.broadcast_to(left_only, (300, 28, 28)).astype(np.uint8)
    collapsed = fid.compute_fid(left_only, extractor, ref, batch_size=100)
    assert same.label == collapsed.label == extractor.label
    assert 5 * same.value < collapsed.value
    with pytest.raises(ValueError, match="reserved"):
        dc.domain_extractor(params, label="FID")


def test_params_round_trip(trained, tmp_path):
    params = trained[0]
    dc.save_params(str(tmp_path / "clf.npz"), params)
    loaded = dc.load_params(str(tmp_path / "clf.npz"))
    assert fid.fingerprint_arrays(loaded) == fid.fingerprint_arrays(params)
    assert dc.domain_extractor(loaded).fingerprint == dc.domain_extractor(params).fingerprint


def test_rejects_float_images():
    with pytest.raises(ValueError, match="uint8"):
        dc.train_domain_classifier(np.zeros((4, 28, 28)), np.zeros(4), None, None, steps=1)
