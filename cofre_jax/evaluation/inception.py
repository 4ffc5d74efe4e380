"""pytorch-fid's FID InceptionV3 in pure JAX, and a loader of its weight file.

The network is the TensorFlow-ported Inception of the original FID code as pytorch-fid
writes it (`pytorch_fid/inception.py`, `fid_inception_v3()`): torchvision's Inception3
layout with 1008 classes, no aux head, and four patched block types: FIDInceptionA and
FIDInceptionC (Mixed_5b-d, Mixed_6b-e) and FIDInceptionE_1 (Mixed_7b) average-pool
without counting the padding (`count_include_pad=False`), FIDInceptionE_2 (Mixed_7c)
max-pools instead. Input: images in [0, 1], resized bilinearly to 299x299 as
`F.interpolate(mode="bilinear", align_corners=False)` does (no antialiasing), then
scaled to [-1, 1]. Outputs: the 2048-d pool3 features (FID) and the 1008 logits of the
fc layer (Inception Score).

The weights are the user's `pt_inception-2015-12-05-6726825d.pth` (a plain
`torch.save` state dict, read without torch by `cofre_jax.io.load_checkpoint`, or by
cofre_jax/io/torch_legacy.py when it is in the pre-1.6 format); nothing is
downloaded. Each BasicConv2d (conv without bias, BatchNorm with eps 0.001, ReLU) is
folded into one conv with a bias at load time, in float64.

Layout inside is NHWC with HWIO kernels. Legend: B batch, H/W height/width, C channels,
F 2048 pool3 features, K 1008 classes.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.io import load_checkpoint
from cofre_jax.io.torch_legacy import is_legacy_torch_file, load_legacy_torch

BN_EPS = 0.001
INPUT_SIZE = 299
HIGHEST = jax.lax.Precision.HIGHEST

_STEM = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1", "Conv2d_4a_3x3"]
_A = ["branch1x1", "branch5x5_1", "branch5x5_2"]
_A += ["branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3", "branch_pool"]
_B = ["branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"]
_C = ["branch1x1", "branch7x7_1", "branch7x7_2", "branch7x7_3"]
_C += [f"branch7x7dbl_{i}" for i in range(1, 6)] + ["branch_pool"]
_D = ["branch3x3_1", "branch3x3_2"] + [f"branch7x7x3_{i}" for i in range(1, 5)]
_E = ["branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1"]
_E += ["branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool"]
_BLOCKS = {"Mixed_5b": _A, "Mixed_5c": _A, "Mixed_5d": _A, "Mixed_6a": _B}
_BLOCKS |= {f"Mixed_6{c}": _C for c in "bcde"}
_BLOCKS |= {"Mixed_7a": _D, "Mixed_7b": _E, "Mixed_7c": _E}

# Every BasicConv2d of the network, by its state-dict prefix.
CONV_NAMES = _STEM + [f"{block}.{conv}" for block, convs in _BLOCKS.items() for conv in convs]
_BN_FIELDS = ("weight", "bias", "running_mean", "running_var")


class InceptionWeightsError(ValueError):
    """The weight file is not pytorch-fid's FID InceptionV3 state dict."""


# ------------------------------------------------------------------------------ layers


def _conv(params, name: str, x_BxHxWxC, stride: int = 1, valid: bool = False):
    """A folded BasicConv2d: conv + bias + ReLU; "same" padding is k // 2 per axis."""
    w_HWIO, b_C = params[name]["w"], params[name]["b"]
    kh, kw = w_HWIO.shape[:2]
    pad = ((0, 0), (0, 0)) if valid else ((kh // 2, kh // 2), (kw // 2, kw // 2))
    y = jax.lax.conv_general_dilated(
        x_BxHxWxC, w_HWIO, (stride, stride), pad,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=HIGHEST,
    )  # fmt: skip
    return jax.nn.relu(y + b_C)


def _max_pool(x_BxHxWxC, stride: int, pad: int = 0):
    window, strides = (1, 3, 3, 1), (1, stride, stride, 1)
    padding = ((0, 0), (pad, pad), (pad, pad), (0, 0))
    return jax.lax.reduce_window(x_BxHxWxC, -jnp.inf, jax.lax.max, window, strides, padding)


def _avg_pool_exclude_pad(x_BxHxWxC):
    """3x3, stride 1, padding 1, averaging over the in-image cells only (TensorFlow's)."""
    window, strides, padding = (1, 3, 3, 1), (1, 1, 1, 1), ((0, 0), (1, 1), (1, 1), (0, 0))
    total = jax.lax.reduce_window(x_BxHxWxC, 0.0, jax.lax.add, window, strides, padding)
    ones = jnp.ones((1, *x_BxHxWxC.shape[1:3], 1), x_BxHxWxC.dtype)
    count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, window, strides, padding)
    return total / count


def _block_a(p, n, x):
    b1 = _conv(p, f"{n}.branch1x1", x)
    b5 = _conv(p, f"{n}.branch5x5_2", _conv(p, f"{n}.branch5x5_1", x))
    b3 = _conv(p, f"{n}.branch3x3dbl_1", x)
    b3 = _conv(p, f"{n}.branch3x3dbl_3", _conv(p, f"{n}.branch3x3dbl_2", b3))
    bp = _conv(p, f"{n}.branch_pool", _avg_pool_exclude_pad(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


def _block_b(p, n, x):
    b3 = _conv(p, f"{n}.branch3x3", x, stride=2, valid=True)
    bd = _conv(p, f"{n}.branch3x3dbl_2", _conv(p, f"{n}.branch3x3dbl_1", x))
    bd = _conv(p, f"{n}.branch3x3dbl_3", bd, stride=2, valid=True)
    return jnp.concatenate([b3, bd, _max_pool(x, 2)], axis=-1)


def _block_c(p, n, x):
    b1 = _conv(p, f"{n}.branch1x1", x)
    b7 = x
    for i in range(1, 4):
        b7 = _conv(p, f"{n}.branch7x7_{i}", b7)
    bd = x
    for i in range(1, 6):
        bd = _conv(p, f"{n}.branch7x7dbl_{i}", bd)
    bp = _conv(p, f"{n}.branch_pool", _avg_pool_exclude_pad(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


def _block_d(p, n, x):
    b3 = _conv(p, f"{n}.branch3x3_2", _conv(p, f"{n}.branch3x3_1", x), stride=2, valid=True)
    b7 = x
    for i in range(1, 4):
        b7 = _conv(p, f"{n}.branch7x7x3_{i}", b7)
    b7 = _conv(p, f"{n}.branch7x7x3_4", b7, stride=2, valid=True)
    return jnp.concatenate([b3, b7, _max_pool(x, 2)], axis=-1)


def _block_e(p, n, x, max_pool: bool):
    b1 = _conv(p, f"{n}.branch1x1", x)
    b3 = _conv(p, f"{n}.branch3x3_1", x)
    b3 = [_conv(p, f"{n}.branch3x3_2a", b3), _conv(p, f"{n}.branch3x3_2b", b3)]
    bd = _conv(p, f"{n}.branch3x3dbl_2", _conv(p, f"{n}.branch3x3dbl_1", x))
    bd = [_conv(p, f"{n}.branch3x3dbl_3a", bd), _conv(p, f"{n}.branch3x3dbl_3b", bd)]
    pooled = _max_pool(x, 1, pad=1) if max_pool else _avg_pool_exclude_pad(x)
    bp = _conv(p, f"{n}.branch_pool", pooled)
    return jnp.concatenate([b1, *b3, *bd, bp], axis=-1)


# ------------------------------------------------------------------------------- input


@functools.cache
def bilinear_matrix(size_in: int, size_out: int) -> np.ndarray:
    """[size_out, size_in] weights of torch's bilinear resize, align_corners=False, with
    the source coordinates in float32 as torch computes them for float32 images."""
    f32 = np.float32
    scale = f32(size_in) / f32(size_out)
    src = np.maximum(scale * (np.arange(size_out, dtype=f32) + f32(0.5)) - f32(0.5), f32(0))
    i0 = np.floor(src).astype(np.int64)
    i1 = np.where(i0 < size_in - 1, i0 + 1, i0)
    frac = src - i0.astype(f32)
    m = np.zeros((size_out, size_in), np.float32)
    np.add.at(m, (np.arange(size_out), i0), f32(1) - frac)
    np.add.at(m, (np.arange(size_out), i1), frac)
    return m


def preprocess(images) -> jax.Array:
    """Images [B, H, W] or [B, H, W, C] (C 1 or 3; uint8 in 0..255 or floats in [0, 1])
    to the network's input: [B, 299, 299, 3] in [-1, 1]. Grayscale is repeated on three
    channels, as pytorch-fid's `Image.convert("RGB")` does."""
    is_uint8 = jnp.asarray(images).dtype == jnp.uint8
    x = jnp.asarray(images, jnp.float32)
    x = x / 255.0 if is_uint8 else x
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images must be [B, H, W] or [B, H, W, 1 or 3], got {x.shape}")
    rh = bilinear_matrix(x.shape[1], INPUT_SIZE)
    rw = bilinear_matrix(x.shape[2], INPUT_SIZE)
    x = jnp.einsum("oh,bhwc->bowc", rh, x, precision=HIGHEST)
    x = jnp.einsum("pw,bowc->bopc", rw, x, precision=HIGHEST)
    x = jnp.broadcast_to(x, (*x.shape[:3], 3))
    return 2.0 * x - 1.0


# ----------------------------------------------------------------------------- network


def inception_forward(params: dict[str, Any], images) -> tuple[jax.Array, jax.Array]:
    """(pool3 features [B, 2048], fc logits [B, 1008]) of images as `preprocess` takes."""
    p, x = params, preprocess(images)
    x = _conv(p, "Conv2d_1a_3x3", x, stride=2, valid=True)
    x = _conv(p, "Conv2d_2a_3x3", x, valid=True)
    x = _max_pool(_conv(p, "Conv2d_2b_3x3", x), 2)
    x = _conv(p, "Conv2d_3b_1x1", x)
    x = _max_pool(_conv(p, "Conv2d_4a_3x3", x, valid=True), 2)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = _block_a(p, name, x)
    x = _block_b(p, "Mixed_6a", x)
    for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        x = _block_c(p, name, x)
    x = _block_d(p, "Mixed_7a", x)
    x = _block_e(p, "Mixed_7b", x, max_pool=False)
    x = _block_e(p, "Mixed_7c", x, max_pool=True)
    pool_BxF = jnp.mean(x, axis=(1, 2))
    logits_BxK = jnp.dot(pool_BxF, p["fc"]["w"], precision=HIGHEST) + p["fc"]["b"]
    return pool_BxF, logits_BxK


inception_forward_jit = jax.jit(inception_forward)


# ------------------------------------------------------------------------------ loader


def _expected_keys() -> tuple[set[str], set[str]]:
    required = {"fc.weight", "fc.bias"}
    optional = set()
    for name in CONV_NAMES:
        required |= {f"{name}.conv.weight"} | {f"{name}.bn.{f}" for f in _BN_FIELDS}
        optional.add(f"{name}.bn.num_batches_tracked")
    return required, optional


def _listed(keys: set[str], most: int = 6) -> str:
    names = sorted(keys)
    more = f", ... ({len(names) - most} more)" if len(names) > most else ""
    return "[" + ", ".join(names[:most]) + more + "]"


def params_from_state_dict(state: dict[str, Any], source: str = "state dict") -> dict[str, Any]:
    """Folded params from a pytorch-fid FID InceptionV3 state dict {key: numpy array}."""
    if not isinstance(state, dict):
        raise InceptionWeightsError(f"{source}: expected a state dict, got {type(state)}")
    required, optional = _expected_keys()
    missing, unexpected = required - state.keys(), state.keys() - required - optional
    if missing or unexpected:
        raise InceptionWeightsError(
            f"{source} is not pytorch-fid's FID InceptionV3 state dict: "
            f"{len(missing)} missing keys {_listed(missing)}; "
            f"{len(unexpected)} unexpected keys {_listed(unexpected)}"
        )
    get = lambda key: np.asarray(state[key], np.float64)  # noqa: E731
    params: dict[str, Any] = {}
    for name in CONV_NAMES:
        w_OIHW = get(f"{name}.conv.weight")
        gamma, beta, mean, var = (get(f"{name}.bn.{f}") for f in _BN_FIELDS)
        if w_OIHW.ndim != 4 or not (gamma.shape == beta.shape == mean.shape == var.shape):
            raise InceptionWeightsError(f"{source}: {name} has shapes that do not fit")
        scale_O = gamma / np.sqrt(var + BN_EPS)
        w_HWIO = (w_OIHW * scale_O[:, None, None, None]).transpose(2, 3, 1, 0)
        params[name] = {
            "w": jnp.asarray(w_HWIO, jnp.float32),
            "b": jnp.asarray(beta - mean * scale_O, jnp.float32),
        }
    fc_KxF = get("fc.weight")
    if fc_KxF.ndim != 2 or fc_KxF.shape[1] != 2048:
        raise InceptionWeightsError(f"{source}: fc.weight has shape {fc_KxF.shape}")
    params["fc"] = {"w": jnp.asarray(fc_KxF.T, jnp.float32),
                    "b": jnp.asarray(get("fc.bias"), jnp.float32)}  # fmt: skip
    return params


def load_fid_inception(path: str) -> dict[str, Any]:
    """pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (a file the user gives) as
    folded params for `inception_forward`. Zip-format files are read by
    `cofre_jax.io.load_checkpoint`, legacy pre-1.6 ones by `torch_legacy`."""
    path = str(path)
    state = load_legacy_torch(path) if is_legacy_torch_file(path) else load_checkpoint(path)
    return params_from_state_dict(state, source=path)
