"""Reads LlamaGen's published VQ tokenizer (`vq_ds16_c2i.pt`) into our VQModel, without
torch.

The file is a `torch.save` of {"model": state_dict} (training checkpoints add optimiser,
discriminator and `args` entries, and possibly "ema"), read by the restricted unpickler
`cofre_jax.io.load_checkpoint`. LlamaGen's module names (tokenizer/tokenizer_image/
vq_model.py) are ours with `.i` for `_i` (`encoder.conv_blocks.0.res.1.norm1.weight` is
`encoder/conv_blocks_0/res_1/norm1/scale`); conv weights (O, I, kh, kw) become Flax
kernels (kh, kw, I, O), GroupNorm `weight` becomes `scale`, and the codebook
`quantize.embedding.weight` (K x D) is `quantize/embedding`. The usage buffer
`quantize.codebook_used` is not a parameter and is skipped.

`LLAMAGEN_VQ16` is the published VQ-16 configuration: 3 channels, width 128,
channel_mult (1, 1, 2, 2, 4), 2 res blocks, z_channels 256, 16384 codes of dim 8,
l2-normalised, GroupNorm with 32 groups, attention blocks: 256x256 images -> 16x16 codes.

Letters: K codebook size, D code dim, O I output and input channels, kh kw kernel size.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.io import TorchCheckpointError, load_checkpoint
from cofre_jax.io.layout import check_state_dict
from cofre_jax.vq.model import VQConfig, init_params

LLAMAGEN_VQ16 = VQConfig(
    in_channels=3,
    base_channels=128,
    channel_mult=(1, 1, 2, 2, 4),
    num_res_blocks=2,
    z_channels=256,
    codebook_size=16384,
    code_dim=8,
    l2_normalised_codes=True,
    commitment_beta=0.25,
    norm_groups=32,
    attention=True,
)

# Buffers LlamaGen keeps in its state dict that are not parameters.
IGNORED_KEYS = ("quantize.codebook_used",)

_LEAF_NAMES = {
    "kernel": "weight",
    "scale": "weight",
    "bias": "bias",
    "embedding": "embedding.weight",
}


def torch_key(path: tuple[str, ...]) -> str:
    """Our param path -> LlamaGen's state-dict key (`mid_0` -> `mid.0`)."""
    parts = [re.sub(r"^(.+)_(\d+)$", r"\1.\2", name) for name in path[:-1]]
    return ".".join([*parts, _LEAF_NAMES[path[-1]]])


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    if path[-1] == "kernel":  # (kh, kw, I, O) -> (O, I, kh, kw)
        return (shape[3], shape[2], shape[0], shape[1])
    return tuple(shape)


def llamagen_layout(config: VQConfig) -> list[tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """(LlamaGen key, our param path, torch shape) for every parameter of VQModel(config)."""
    f = config.downsample_factor
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.PRNGKey(0), (f, f)))
    layout = []
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(abstract)[0]:
        path = tuple(k.key for k in key_path)
        layout.append((torch_key(path), path, _torch_shape(path, leaf.shape)))
    return layout


def select_state_dict(raw: Any, *, use_ema: bool = False) -> dict[str, np.ndarray]:
    """The tokenizer's state dict inside a loaded LlamaGen file: `raw["model"]` (or
    `raw["ema"]` with `use_ema`), or `raw` itself when it is a bare state dict."""
    if not isinstance(raw, Mapping):
        raise TorchCheckpointError(f"expected a mapping, got {type(raw).__name__}")
    entry = "ema" if use_ema else "model"
    if isinstance(raw.get(entry), Mapping):
        raw = raw[entry]
    elif use_ema or "model" in raw:
        raise TorchCheckpointError(
            f"checkpoint has no {entry!r} state dict (entries: {sorted(map(str, raw))})"
        )
    not_arrays = [k for k, v in raw.items() if not isinstance(v, np.ndarray)]
    if not_arrays:
        raise TorchCheckpointError(f"state dict entry {not_arrays[0]!r} is not a tensor")
    return dict(raw)


def llamagen_params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], config: VQConfig = LLAMAGEN_VQ16
) -> dict[str, Any]:
    """LlamaGen VQModel state dict -> our VQModel(config) params (float32). Every key and
    shape is checked first; the error names the missing, unexpected and misshapen keys."""
    layout = llamagen_layout(config)
    check_state_dict(state_dict, layout, ignored=IGNORED_KEYS, what="the LlamaGen VQ config")
    params: dict[str, Any] = {}
    for key, path, _ in layout:
        value = np.asarray(state_dict[key], np.float32)
        if path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = jnp.asarray(value)
    return params


def load_llamagen_params(
    path: str,
    config: VQConfig = LLAMAGEN_VQ16,
    *,
    use_ema: bool = False,
    opaque_unknown_globals: bool = False,
) -> dict[str, Any]:
    """A LlamaGen tokenizer file (e.g. `vq_ds16_c2i.pt`) -> our VQModel(config) params.

    A training checkpoint pickles its argparse `args`; objects of classes the restricted
    unpickler does not know are refused unless `opaque_unknown_globals=True` (they then
    load as inert placeholders and are never used)."""
    raw = load_checkpoint(path, opaque_unknown_globals=opaque_unknown_globals)
    return llamagen_params_from_state_dict(select_state_dict(raw, use_ema=use_ema), config)
