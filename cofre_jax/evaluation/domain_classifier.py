"""A small in-domain classifier for 28x28 grayscale images (Fashion-MNIST and the like),
whose penultimate features give the offline FID substitute (docs/design.md §4-§5).

The distance it gives is never "FID": `domain_extractor` labels it by the classifier,
e.g. "in-domain FID (Fashion-MNIST classifier)" (cofre_jax/evaluation/fid.py).

Network: conv3x3(32) -> conv3x3(32) -> maxpool2 -> conv3x3(64) -> maxpool2 -> dense(128)
(the features, after ReLU) -> dense(classes). Pure functions over a params pytree, NHWC.
Legend: N images, B batch, H/W height/width, C channels, F features, K classes.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cofre_jax.evaluation import fid

FEATURES = 128
_CONVS = (("conv1", 1, 32), ("conv2", 32, 32), ("conv3", 32, 64))


def _normalise(images):
    """uint8 [B, H, W] (or [B, H, W, 1]) in 0..255 to float [B, H, W, 1] in [-1, 1]."""
    x = jnp.asarray(images, jnp.float32)
    x = x[..., None] if x.ndim == 3 else x
    return x / 127.5 - 1.0


def init_params(key, image_hw: tuple[int, int] = (28, 28), num_classes: int = 10):
    keys = jax.random.split(key, len(_CONVS) + 2)
    he = lambda k, shape, fan_in: jax.random.normal(k, shape) * np.sqrt(2.0 / fan_in)  # noqa: E731
    params: dict[str, Any] = {}
    for k, (name, cin, cout) in zip(keys, _CONVS):
        params[name] = {"w": he(k, (3, 3, cin, cout), 9 * cin), "b": jnp.zeros(cout)}
    flat = (image_hw[0] // 4) * (image_hw[1] // 4) * _CONVS[-1][2]
    params["feat"] = {"w": he(keys[-2], (flat, FEATURES), flat), "b": jnp.zeros(FEATURES)}
    params["out"] = {
        "w": he(keys[-1], (FEATURES, num_classes), FEATURES) / np.sqrt(2.0),
        "b": jnp.zeros(num_classes),
    }
    return params


def _conv(p, x):
    y = jax.lax.conv_general_dilated(
        x, p["w"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    return jax.nn.relu(y + p["b"])


def _pool(x):
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def features_and_logits(params, images) -> tuple[jax.Array, jax.Array]:
    """(penultimate features [B, 128], logits [B, K]) of uint8 images [B, H, W]."""
    x = _conv(params["conv2"], _conv(params["conv1"], _normalise(images)))
    x = _pool(_conv(params["conv3"], _pool(x)))
    f_BxF = jax.nn.relu(x.reshape(len(x), -1) @ params["feat"]["w"] + params["feat"]["b"])
    return f_BxF, f_BxF @ params["out"]["w"] + params["out"]["b"]


features_and_logits_jit = jax.jit(features_and_logits)


def accuracy(params, images, labels, batch_size: int = 500) -> float:
    logits = fid.extract_features(
        lambda x: features_and_logits_jit(params, x)[1], images, batch_size
    )
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels)))


def train_domain_classifier(
    train_images,
    train_labels,
    test_images,
    test_labels,
    *,
    num_classes: int = 10,
    steps: int = 2000,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[dict[str, Any], float]:
    """Adam with a cosine decay on cross-entropy over uint8 images [N, H, W] and integer
    labels [N]; returns (params, accuracy on the test arrays). `progress(step, loss)` is
    called every 100 steps and at the end."""
    train_images, train_labels = np.asarray(train_images), np.asarray(train_labels, np.int32)
    if train_images.dtype != np.uint8 or train_images.ndim != 3:
        raise ValueError(f"train_images must be uint8 [N, H, W], got {train_images.dtype}")
    if len(train_images) != len(train_labels):
        raise ValueError("train_images and train_labels differ in length")
    params = init_params(jax.random.key(seed), train_images.shape[1:], num_classes)
    schedule = optax.cosine_decay_schedule(learning_rate, steps)
    optimiser = optax.adamw(schedule, weight_decay=1e-4)
    opt_state = optimiser.init(params)

    @jax.jit
    def step(params, opt_state, x, y):
        def loss_fn(p):
            logits = features_and_logits(p, x)[1]
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimiser.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    batch_size = min(batch_size, len(train_images))
    for i in range(steps):
        idx = rng.choice(len(train_images), batch_size, replace=False)
        params, opt_state, loss = step(params, opt_state, train_images[idx], train_labels[idx])
        if progress is not None and ((i + 1) % 100 == 0 or i + 1 == steps):
            progress(i + 1, float(loss))
    return params, accuracy(params, test_images, test_labels)


def domain_extractor(
    params, label: str = "in-domain FID (Fashion-MNIST classifier)"
) -> fid.FeatureExtractor:
    """The classifier's penultimate features as a `fid.FeatureExtractor`."""
    fn = lambda x: features_and_logits_jit(params, x)[0]  # noqa: E731
    return fid.FeatureExtractor(fn, label, "domain-classifier:" + fid.fingerprint_arrays(params))


def save_params(path: str, params) -> None:
    """Atomically, as an .npz of "layer/name" arrays."""
    flat = {f"{layer}/{k}": np.asarray(v) for layer, d in params.items() for k, v in d.items()}
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **flat)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_params(path: str) -> dict[str, Any]:
    params: dict[str, Any] = {}
    with np.load(path) as f:
        for key in f.files:
            layer, name = key.split("/")
            params.setdefault(layer, {})[name] = jnp.asarray(f[key])
    return params
