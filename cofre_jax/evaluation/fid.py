"""Frechet distances between feature statistics (FID and its in-domain variants) and the
Inception Score, with reference statistics computed once and cached on disk.

A distance is always named by its `FeatureExtractor.label`: "FID" is reserved for
pytorch-fid's InceptionV3 pool3 features (`inception_extractor`, weights from the user's
file; cofre_jax/evaluation/inception.py); any other network (an in-domain classifier's
penultimate features, cofre_jax/evaluation/domain_classifier.py) must carry its own
label, e.g. "in-domain FID (Fashion-MNIST classifier)" (docs/design.md §5).

Inception Score convention: the softmax over all the logits given, so for the FID
Inception all 1008 (background and 7 unused classes included), as the original IS code
(improved-GAN's `inception_score.py`) and torch-fidelity compute it; splits=10 in the
order given, mean and standard deviation of exp(E KL(p(y|x) || p(y))) over the splits.

Legend: N images, F features, K classes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
import scipy.linalg
import scipy.special

from cofre_jax.evaluation import inception

Progress = Callable[[int, int], None]  # (images done, images in all)
FID_LABEL = "FID"
_INCEPTION_PREFIX = "pytorch-fid-inception-v3:"


class FeatureStats(NamedTuple):
    mu_F: np.ndarray  # float64 mean
    sigma_FxF: np.ndarray  # float64 covariance (np.cov, N - 1 normalisation)
    count: int


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """`fn` maps a batch of images [B, ...] to features [B, F]; `label` names the distance
    ("FID" only for pytorch-fid's Inception); `fingerprint` identifies the network and
    its weights in cache keys."""

    fn: Callable[[np.ndarray], Any]
    label: str
    fingerprint: str

    def __post_init__(self):
        is_inception = self.fingerprint.startswith(_INCEPTION_PREFIX)
        if self.label.strip().upper() == FID_LABEL and not is_inception:
            raise ValueError(
                "the label 'FID' is reserved for pytorch-fid's InceptionV3 features; name "
                "this distance by its network, e.g. 'in-domain FID (Fashion-MNIST classifier)'"
            )


@dataclasses.dataclass(frozen=True)
class FIDResult:
    label: str
    value: float
    count: int
    reference_count: int

    def __str__(self) -> str:
        return f"{self.label}: {self.value:.4f} ({self.count} images vs {self.reference_count})"


# ------------------------------------------------------------------------ fingerprints


def fingerprint_arrays(*arrays) -> str:
    """sha256 of the arrays' shapes, dtypes and bytes (a pytree's leaves, in order)."""
    h = hashlib.sha256()
    for leaf in jax.tree.leaves(arrays):
        a = np.ascontiguousarray(np.asarray(leaf))
        h.update(f"{a.shape}{a.dtype.str};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def fingerprint_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- extractors


def inception_extractor(params: dict[str, Any], weights_fingerprint: str) -> FeatureExtractor:
    fn = lambda x: inception.inception_forward_jit(params, x)[0]  # noqa: E731
    return FeatureExtractor(fn, FID_LABEL, _INCEPTION_PREFIX + weights_fingerprint)


def load_inception_extractor(weights_path: str) -> FeatureExtractor:
    """FID's extractor from the user's `pt_inception-2015-12-05-6726825d.pth`."""
    params = inception.load_fid_inception(weights_path)
    return inception_extractor(params, fingerprint_file(weights_path))


def extract_features(
    fn: Callable[[np.ndarray], Any],
    images,
    batch_size: int = 50,
    progress: Progress | None = None,
) -> Any:
    """`fn` over `images` in batches; outputs (a pytree of [B, ...] arrays) concatenated
    as float64 numpy. The last batch is padded to `batch_size` (one compilation) and the
    padding dropped. `progress(done, total)` is called after each batch."""
    images = np.asarray(images)
    n = len(images)
    if n == 0:
        raise ValueError("no images")
    parts = []
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        real = len(batch)
        if real < batch_size and n > batch_size:
            pad = np.repeat(batch[-1:], batch_size - real, axis=0)
            batch = np.concatenate([batch, pad])
        out = jax.tree.map(lambda a, r=real: np.asarray(a, np.float64)[:r], fn(batch))
        parts.append(out)
        if progress is not None:
            progress(start + real, n)
    return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)


def feature_statistics(features_NxF) -> FeatureStats:
    f = np.asarray(features_NxF, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"need features [N >= 2, F], got {f.shape}")
    return FeatureStats(f.mean(axis=0), np.cov(f, rowvar=False), len(f))


def image_statistics(images, extractor: FeatureExtractor, batch_size=50, progress=None):
    return feature_statistics(extract_features(extractor.fn, images, batch_size, progress))


# ---------------------------------------------------------------------------- distances


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6, method: str = "sqrtm"):
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)) in float64.

    "sqrtm" is pytorch-fid's `calculate_frechet_distance`: scipy's sqrtm of S1 S2, retried
    with eps on both diagonals if not finite, small imaginary parts dropped (an error if
    the diagonal's exceed 1e-3). "eigh" takes Tr sqrt(S1 S2) as the sum of the square
    roots of the eigenvalues of the symmetric sqrt(S1) S2 sqrt(S1) (negatives clipped):
    faster, and agrees to rounding on positive semi-definite inputs."""
    as64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    mu1, mu2 = np.atleast_1d(as64(mu1)), np.atleast_1d(as64(mu2))
    s1, s2 = np.atleast_2d(as64(sigma1)), np.atleast_2d(as64(sigma2))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: {mu1.shape} {s1.shape} vs {mu2.shape} {s2.shape}")
    diff = mu1 - mu2
    if method == "sqrtm":
        covmean = scipy.linalg.sqrtm(s1 @ s2)
        if not np.isfinite(covmean).all():
            offset = np.eye(len(s1)) * eps
            covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
        if np.iscomplexobj(covmean):
            if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
                raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag))}")
            covmean = covmean.real
        tr_covmean = np.trace(covmean)
    elif method == "eigh":
        w, v = np.linalg.eigh((s1 + s1.T) / 2)
        s1_half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        m = s1_half @ s2 @ s1_half
        tr_covmean = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)))
    else:
        raise ValueError(f"method must be 'sqrtm' or 'eigh', got {method!r}")
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fid_from_features(features_NxF, reference: FeatureStats, label: str, **kw) -> FIDResult:
    stats = feature_statistics(features_NxF)
    value = frechet_distance(stats.mu_F, stats.sigma_FxF, reference.mu_F, reference.sigma_FxF, **kw)
    return FIDResult(label, value, stats.count, reference.count)


def compute_fid(
    images,
    extractor: FeatureExtractor,
    reference: FeatureStats,
    batch_size: int = 50,
    progress: Progress | None = None,
    method: str = "sqrtm",
) -> FIDResult:
    """The distance named `extractor.label` between `images` and the reference."""
    features = extract_features(extractor.fn, images, batch_size, progress)
    return fid_from_features(features, reference, extractor.label, method=method)


def inception_fid_and_score(
    images,
    params: dict[str, Any],
    reference: FeatureStats,
    batch_size: int = 50,
    splits: int = 10,
    progress: Progress | None = None,
    method: str = "sqrtm",
) -> tuple[FIDResult, tuple[float, float]]:
    """FID against `reference` and the Inception Score (mean, std), from one pass of
    pytorch-fid's Inception (`inception.load_fid_inception` params) over `images`."""
    fn = lambda x: inception.inception_forward_jit(params, x)  # noqa: E731
    pool_NxF, logits_NxK = extract_features(fn, images, batch_size, progress)
    result = fid_from_features(pool_NxF, reference, FID_LABEL, method=method)
    return result, inception_score(logits_NxK, splits)


def inception_score(logits_NxK, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `splits` of exp(mean_x KL(p(y|x) || p(y))), softmax over all K."""
    logits = np.asarray(logits_NxK, np.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"need logits [N >= splits={splits}, K], got {logits.shape}")
    logp = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    n, scores = len(logits), []
    for i in range(splits):
        part = logp[i * n // splits : (i + 1) * n // splits]
        log_marginal = scipy.special.logsumexp(part, axis=0) - np.log(len(part))
        kl = np.sum(np.exp(part) * (part - log_marginal), axis=1)
        scores.append(np.exp(np.mean(kl)))
    return float(np.mean(scores)), float(np.std(scores))


# ----------------------------------------------------------------------------- caching


def reference_statistics(
    images,
    extractor: FeatureExtractor,
    cache_dir: str,
    dataset_fingerprint: str | None = None,
    batch_size: int = 50,
    progress: Progress | None = None,
) -> FeatureStats:
    """Statistics of the reference images under `extractor`, cached in `cache_dir` as
    `.npz`, keyed by the dataset's fingerprint (default: a hash of the image bytes) and
    the extractor's. Written atomically (temporary file, then rename)."""
    data_fp = dataset_fingerprint or fingerprint_arrays(images)
    key = hashlib.sha256(f"{data_fp}\n{extractor.fingerprint}".encode()).hexdigest()[:24]
    path = os.path.join(cache_dir, f"ref_stats_{key}.npz")
    if os.path.exists(path):
        with np.load(path) as f:
            if str(f["dataset"]) == data_fp and str(f["extractor"]) == extractor.fingerprint:
                return FeatureStats(f["mu"], f["sigma"], int(f["count"]))
    stats = image_statistics(images, extractor, batch_size, progress)
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=".ref_stats_", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            fields = dict(dataset=data_fp, extractor=extractor.fingerprint, label=extractor.label)
            np.savez(f, mu=stats.mu_F, sigma=stats.sigma_FxF, count=stats.count, **fields)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return stats
