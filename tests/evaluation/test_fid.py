"""Frechet distances, the Inception Score, batched extraction, the on-disk reference
statistics cache and the naming of in-domain distances.

Letters: N samples, F features, K classes.
"""

import os

import numpy as np
import pytest
import torch
from inception_reference import FIDInceptionV3

from cofre_jax.evaluation import fid

RNG = np.random.default_rng(0)


def _stats(x_NxF):
    s = fid.feature_statistics(x_NxF)
    return s.mu_F, s.sigma_FxF


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_distance_of_a_set_to_itself_is_zero(method):
    x_NxF = RNG.normal(size=(400, 32)) @ RNG.normal(size=(32, 32))
    mu, sigma = _stats(x_NxF)
    assert abs(fid.frechet_distance(mu, sigma, mu, sigma, method=method)) < 1e-6 * np.trace(sigma)


@pytest.mark.parametrize("method", ["sqrtm", "eigh"])
def test_diagonal_covariances_have_the_closed_form(method):
    mu1, mu2 = RNG.normal(size=8), RNG.normal(size=8)
    a, b = RNG.uniform(0.1, 2, 8), RNG.uniform(0.1, 2, 8)
    want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    got = fid.frechet_distance(mu1, np.diag(a), mu2, np.diag(b), method=method)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_halves_of_one_sample_are_close_next_to_a_shifted_set():
    mix_FxF = RNG.normal(size=(16, 16)) / 4
    x_NxF = RNG.normal(size=(4000, 16)) @ mix_FxF
    half_a, half_b = _stats(x_NxF[:2000]), _stats(x_NxF[2000:])
    shifted = _stats(x_NxF[2000:] + 0.5)
    noise = _stats(RNG.normal(size=(2000, 16)))
    same = fid.frechet_distance(*half_a, *half_b)
    for other in (shifted, noise):
        assert 20 * same < fid.frechet_distance(*half_a, *other)
    # The two square roots agree on real data.
    np.testing.assert_allclose(
        fid.frechet_distance(*half_a, *noise, method="eigh"),
        fid.frechet_distance(*half_a, *noise),
        rtol=1e-8,
    )


def test_singular_covariances_give_a_finite_distance():
    # Fewer samples than features: both covariances are singular.
    a, b = _stats(RNG.normal(size=(10, 32))), _stats(RNG.normal(size=(10, 32)) + 0.1)
    d_sqrtm, d_eigh = fid.frechet_distance(*a, *b), fid.frechet_distance(*a, *b, method="eigh")
    assert np.isfinite(d_sqrtm) and d_sqrtm > 0
    np.testing.assert_allclose(d_sqrtm, d_eigh, rtol=1e-3)


def test_inception_score_extremes():
    assert fid.inception_score(np.zeros((50, 1008))) == pytest.approx((1.0, 0.0))
    one_hot_NxK = 100.0 * np.tile(np.eye(10, 1008), (10, 1))  # 10 distinct classes per split
    mean, std = fid.inception_score(one_hot_NxK, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std == pytest.approx(0.0, abs=1e-6)
    assert fid.inception_score(one_hot_NxK[:7], splits=1)[0] == pytest.approx(7.0, rel=1e-6)


def test_extract_features_pads_the_last_batch_and_reports_progress():
    shapes, seen = [], []

    def fn(batch):
        shapes.append(batch.shape)
        return batch.reshape(len(batch), -1)[:, :3] * 2.0

    images = RNG.random((23, 4, 4), dtype=np.float32)
    out = fid.extract_features(fn, images, batch_size=10, progress=lambda d, t: seen.append((d, t)))
    np.testing.assert_allclose(out, images.reshape(23, -1)[:, :3] * 2.0)
    assert out.dtype == np.float64 and shapes == [(10, 4, 4)] * 3
    assert seen == [(10, 23), (20, 23), (23, 23)]


def _counting_extractor(calls, label="in-domain FID (test features)"):
    def fn(batch):
        calls.append(len(batch))
        return batch.reshape(len(batch), -1).astype(np.float64)

    return fid.FeatureExtractor(fn, label, fingerprint="test-net-v1")


def test_reference_statistics_are_cached_on_disk(tmp_path):
    images, calls = RNG.random((30, 2, 3)), []
    extractor = _counting_extractor(calls)
    first = fid.reference_statistics(images, extractor, str(tmp_path), batch_size=8)
    assert len(calls) == 4
    second = fid.reference_statistics(images, extractor, str(tmp_path), batch_size=8)
    assert len(calls) == 4  # read back, not recomputed
    np.testing.assert_array_equal(first.sigma_FxF, second.sigma_FxF)
    assert second.count == 30
    assert [p for p in os.listdir(tmp_path) if p.endswith(".npz")] == os.listdir(tmp_path)
    # Other images or another network: another entry.
    fid.reference_statistics(images[:20], extractor, str(tmp_path), batch_size=8)
    other = fid.FeatureExtractor(extractor.fn, extractor.label, fingerprint="test-net-v2")
    fid.reference_statistics(images, other, str(tmp_path), batch_size=8)
    assert len(os.listdir(tmp_path)) == 3


def test_in_domain_distances_are_never_called_fid_alone():
    with pytest.raises(ValueError, match="reserved"):
        _counting_extractor([], label="FID")
    extractor, images = _counting_extractor([]), RNG.random((40, 5))
    ref = fid.image_statistics(images, extractor)
    result = fid.compute_fid(images, extractor, ref, batch_size=16)
    assert result.label == "in-domain FID (test features)" and result.count == 40
    assert abs(result.value) < 1e-9
    assert str(result).startswith("in-domain FID (test features): ")


def test_inception_extractor_is_labelled_fid(tmp_path):
    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(FIDInceptionV3().state_dict(), path)
    extractor = fid.load_inception_extractor(str(path))
    assert extractor.label == "FID"
    assert extractor.fingerprint.endswith(fid.fingerprint_file(str(path)))
