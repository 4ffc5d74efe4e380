"""The config's trained or imported image tokenizer: uint8 images <-> int32 code grids.

`load_tokenizer(config)` reads data.tokenizer_path by data.tokenizer.kind:

    vq        the workdir of --mode=train_tokenizer: its latest checkpoint, with the
              network rebuilt from the settings it was trained with
              (cofre_jax/vq/settings.py)
    llamagen  a LlamaGen tokenizer file (.pt/.pth/.bin/.safetensors) of the layout
              data.tokenizer gives (cofre_jax/vq/llamagen.py)

and checks it against the model: its grid must be data.grid_size square, its codebook
model.codebook_size codes, its images data.channels channels (one error line each).
`cached_split_codes` encodes a split once into config.data.cache_dir, keyed by the
tokenizer's fingerprint (its parameters and settings).

Letters: B batch, H W C image height, width, channels, h w code grid.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax import checkpoint
from cofre_jax.config.checks import ConfigError
from cofre_jax.data.errors import DataError, DataNotFoundError
from cofre_jax.data.images import ImageSplit, cached_codes, fingerprint
from cofre_jax.io import TorchCheckpointError, load_checkpoint
from cofre_jax.vq import model
from cofre_jax.vq.llamagen import llamagen_params_from_state_dict, select_state_dict
from cofre_jax.vq.model import VQConfig, init_params
from cofre_jax.vq.settings import read_settings, vq_config, vq_from_settings, vq_settings

LLAMAGEN_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
CODEBOOK_KEY = "quantize.embedding.weight"  # LlamaGen's K x D codebook


@functools.partial(jax.jit, static_argnums=1)
def _encode(params: Any, vq: VQConfig, images_BxHxWxC: jax.Array) -> jax.Array:
    return model.encode(params, vq, model.images_to_model(images_BxHxWxC))


@functools.partial(jax.jit, static_argnums=1)
def _decode(params: Any, vq: VQConfig, codes_Bxhxw: jax.Array) -> jax.Array:
    return model.images_from_model(model.decode(params, vq, codes_Bxhxw))


@dataclasses.dataclass(frozen=True, eq=False)
class ImageTokenizer:
    """A VQ network with its parameters; encode and decode compile once per batch shape
    (the parameters are arguments, not constants baked into the program)."""

    vq: VQConfig
    params: Any
    image_size: tuple[int, int]  # H, W
    fingerprint: str  # of the parameters and settings: keys the cached codes
    source: str  # where it was read from, for messages

    @property
    def grid(self) -> tuple[int, int]:
        f = self.vq.downsample_factor
        return (self.image_size[0] // f, self.image_size[1] // f)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (*self.image_size, self.vq.in_channels)

    def encode(self, images_BxHxWxC) -> jax.Array:
        """uint8 images B x H x W x C -> int32 codes B x h x w."""
        images = jnp.asarray(images_BxHxWxC)
        if images.dtype != jnp.uint8 or images.shape[1:] != self.image_shape:
            raise DataError(
                f"tokenizer encode: images must be uint8 B x {_shape(self.image_shape)}, got "
                f"{images.dtype} of shape {_shape(images.shape)}"
            )
        return _encode(self.params, self.vq, images)

    def decode(self, codes_Bxhxw) -> jax.Array:
        """int32 codes B x h x w in [0, codebook_size) -> uint8 images B x H x W x C."""
        codes = jnp.asarray(codes_Bxhxw)
        if not jnp.issubdtype(codes.dtype, jnp.integer) or codes.shape[1:] != self.grid:
            raise DataError(
                f"tokenizer decode: codes must be integers B x {_shape(self.grid)}, got "
                f"{codes.dtype} of shape {_shape(codes.shape)}"
            )
        low, high = (int(jnp.min(codes)), int(jnp.max(codes))) if codes.size else (0, 0)
        if low < 0 or high >= self.vq.codebook_size:  # jnp.take would clamp them silently
            raise DataError(
                f"tokenizer decode: codes span [{low}, {high}], outside the codebook's "
                f"[0, {self.vq.codebook_size})"
            )
        return _decode(self.params, self.vq, codes.astype(jnp.int32))


def _shape(shape) -> str:
    return " x ".join(str(d) for d in shape)


def _train_tokenizer_hint(path: str) -> str:
    return f"run --mode=train_tokenizer --workdir={path} with this config first"


def _load_vq(config: Any, path: str) -> tuple[VQConfig, Any]:
    if not os.path.isdir(path):
        raise DataNotFoundError(
            f"config field 'data.tokenizer_path' = {path!r} is not a folder: "
            f"{_train_tokenizer_hint(path)}"
        )
    settings = read_settings(path)
    directory = os.path.join(path, "checkpoints")
    has_step = os.path.isdir(directory) and any(n.isdigit() for n in os.listdir(directory))
    if settings is None or not has_step:
        raise DataNotFoundError(
            f"no tokenizer checkpoint in {path} (data.tokenizer_path): "
            f"{_train_tokenizer_hint(path)}"
        )
    vq = vq_from_settings(settings["vq"], os.path.join(path, "tokenizer_settings.json"))
    # A convolutional network: the parameters' shapes do not depend on the image size.
    f = vq.downsample_factor
    abstract = jax.eval_shape(lambda: init_params(vq, jax.random.PRNGKey(0), (f, f)))
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    abstract = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), abstract
    )
    params, step = checkpoint.restore_params(path, abstract, use_ema=False)
    if step != settings["train"]["steps"]:
        print(
            f"[cofre_jax] note: the tokenizer in {path} is at step {step} of "
            f"{settings['train']['steps']} (its training has not finished)",
            flush=True,
        )
    return vq, params


def _load_llamagen(config: Any, path: str) -> tuple[VQConfig, Any]:
    if not path.endswith(LLAMAGEN_SUFFIXES):
        raise ConfigError(
            f"config field 'data.tokenizer_path' = {path!r} is invalid for kind 'llamagen': "
            f"allowed a {'/'.join(LLAMAGEN_SUFFIXES)} file"
        )
    if not os.path.isfile(path):
        raise DataNotFoundError(
            f"config field 'data.tokenizer_path' = {path!r}: no such LlamaGen tokenizer file"
        )
    state_dict = select_state_dict(load_checkpoint(path))
    if CODEBOOK_KEY not in state_dict:
        raise TorchCheckpointError(f"{path} has no {CODEBOOK_KEY!r}: not a LlamaGen VQ model")
    codes = state_dict[CODEBOOK_KEY].shape[0]
    if codes != config.model.codebook_size:
        raise ConfigError(
            f"the tokenizer in {path} has {codes} codes but config field "
            f"'model.codebook_size' = {config.model.codebook_size}; set it to {codes}"
        )
    vq = vq_config(config)
    return vq, llamagen_params_from_state_dict(state_dict, vq)


def _check_fits(config: Any, vq: VQConfig, path: str) -> None:
    """The tokenizer on disk against the model and the images of the config."""
    data = config.data
    if vq.in_channels != data.channels:
        raise ConfigError(
            f"the tokenizer in {path} reads {vq.in_channels}-channel images but config field "
            f"'data.channels' = {data.channels}"
        )
    if vq.codebook_size != config.model.codebook_size:
        raise ConfigError(
            f"the tokenizer in {path} has {vq.codebook_size} codes but config field "
            f"'model.codebook_size' = {config.model.codebook_size}"
        )
    f, size = vq.downsample_factor, data.image_size
    if size % f or size // f != data.grid_size:
        raise ConfigError(
            f"the tokenizer in {path} downsamples by {f} (channel_mult "
            f"{tuple(vq.channel_mult)}), so data.image_size = {size} gives a "
            f"{size / f:g} x {size / f:g} grid, not config field 'data.grid_size' = "
            f"{data.grid_size}"
        )


def load_tokenizer(config: Any) -> ImageTokenizer:
    """The tokenizer at data.tokenizer_path, checked against the config."""
    path, kind = config.data.tokenizer_path, config.data.tokenizer.kind
    if not path:
        hint = (
            "the --workdir of --mode=train_tokenizer (run that first)"
            if kind == "vq"
            else "a LlamaGen tokenizer file"
        )
        raise ConfigError(f"config field 'data.tokenizer_path' is empty: set it to {hint}")
    path = os.path.expanduser(path)
    loader = _load_vq if kind == "vq" else _load_llamagen
    vq, params = loader(config, path)
    _check_fits(config, vq, path)
    params = jax.device_put(params)
    return ImageTokenizer(
        vq=vq,
        params=params,
        image_size=(config.data.image_size, config.data.image_size),
        fingerprint=fingerprint(params, {"kind": kind, "vq": vq_settings(vq)}),
        source=path,
    )


def cached_split_codes(config: Any, tokenizer: ImageTokenizer, split: ImageSplit) -> np.ndarray:
    """int32 codes N x h x w of `split` by `tokenizer`, cached in config.data.cache_dir."""
    split.check_shape((*tokenizer.image_size, tokenizer.vq.in_channels))
    return cached_codes(
        split,
        tokenizer.encode,
        encoder_fingerprint=tokenizer.fingerprint,
        cache_dir=config.data.cache_dir,
    )
