"""A VQ image tokenizer: the taming-transformers / LlamaGen convolutional autoencoder
with a nearest-code quantiser (docs/method.md §2.7 tokenises images into a code grid).

Layout (LlamaGen's `tokenizer/tokenizer_image/vq_model.py`, whose names the Flax modules
mirror so `cofre_jax/vq/llamagen.py` maps a state dict one to one):

- encoder: conv_in -> per level `conv_blocks_i` (num_res_blocks ResnetBlocks, attention
  after each at the last level, a stride-2 downsample except at the last level) -> mid
  (ResnetBlock, attention, ResnetBlock) -> GroupNorm, swish, conv_out to z_channels;
- quant_conv (1x1) to code_dim, the codebook `quantize` (nearest code; codes and inputs
  l2-normalised when `l2_normalised_codes`, as LlamaGen), post_quant_conv back to
  z_channels;
- decoder: conv_in -> mid -> levels from the lowest resolution up (num_res_blocks + 1
  ResnetBlocks, attention at the lowest level, nearest-upsample + conv) -> GroupNorm,
  swish, conv_out to the image channels.

`attention=False` drops every attention block (LlamaGen always has them). Dropout is
left out (LlamaGen's is 0). Images are NHWC floats in [-1, 1]; `images_to_model` scales
uint8. The training loss here is MSE reconstruction plus the VQ losses: the perceptual
(LPIPS) and GAN losses of taming/LlamaGen are out of scope.

Letters: B batch, H W image height and width, C image channels, h w code grid, F feature
channels, Z z_channels, D code dim, K codebook size, N flattened positions (B*h*w).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp

from cofre_jax.models.layers import torch_linear_init
from cofre_jax.vq.quantize import VectorQuantizer, codebook_usage

GROUP_NORM_EPS = 1e-6  # LlamaGen's Normalize


@dataclasses.dataclass(frozen=True)
class VQConfig:
    in_channels: int = 1
    base_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)  # len - 1 downsamplings: 28x28 -> 7x7
    num_res_blocks: int = 1
    z_channels: int = 32
    codebook_size: int = 512
    code_dim: int = 8
    l2_normalised_codes: bool = True
    commitment_beta: float = 0.25
    dtype: str = "float32"  # compute dtype of the convolutions; norms and codes are float32
    norm_groups: int = 8  # LlamaGen: 32
    attention: bool = False  # LlamaGen: True

    def __post_init__(self):
        widths = [self.base_channels * m for m in self.channel_mult]
        bad = [w for w in widths if w % self.norm_groups]
        if bad or not self.channel_mult:
            raise ValueError(
                f"norm_groups={self.norm_groups} must divide every level's width "
                f"base_channels * channel_mult = {widths}"
            )

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


@flax.struct.dataclass
class VQOutput:
    images_BxHxWxC: jax.Array  # reconstruction
    codes_Bxhxw: jax.Array
    codebook_loss: jax.Array  # mean (sg(z) - e)^2: moves the codes
    commitment_loss: jax.Array  # mean (z - sg(e))^2: moves the encoder, scaled by beta


def images_to_model(images_uint8: jax.Array) -> jax.Array:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return images_uint8.astype(jnp.float32) / 127.5 - 1.0


def images_from_model(images: jax.Array) -> jax.Array:
    """float [-1, 1] -> uint8 [0, 255], clipped."""
    return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


# ---------------------------------------------------------------------------- layers


def conv(cfg: VQConfig, features: int, fan_in_channels: int, kernel: int = 3, **kw) -> nn.Conv:
    """A torch-initialised conv; 3x3 convs pad 1 on every side like torch's padding=1."""
    init = torch_linear_init(fan_in_channels * kernel * kernel)
    pad = kernel // 2
    kw.setdefault("padding", ((pad, pad), (pad, pad)))
    return nn.Conv(
        features,
        (kernel, kernel),
        dtype=jnp.dtype(cfg.dtype),
        param_dtype=jnp.float32,
        kernel_init=init,
        bias_init=init,
        **kw,
    )


def group_norm(cfg: VQConfig, name: str) -> nn.GroupNorm:
    return nn.GroupNorm(cfg.norm_groups, epsilon=GROUP_NORM_EPS, dtype=jnp.float32, name=name)


def swish(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(x)


class ResnetBlock(nn.Module):
    config: VQConfig
    features: int

    @nn.compact
    def __call__(self, x_BxHxWxF: jax.Array) -> jax.Array:
        cfg, F_in = self.config, x_BxHxWxF.shape[-1]
        h = conv(cfg, self.features, F_in, name="conv1")(swish(group_norm(cfg, "norm1")(x_BxHxWxF)))
        h = conv(cfg, self.features, self.features, name="conv2")(
            swish(group_norm(cfg, "norm2")(h))
        )
        if F_in != self.features:
            x_BxHxWxF = conv(cfg, self.features, F_in, 1, name="nin_shortcut")(x_BxHxWxF)
        return x_BxHxWxF.astype(jnp.float32) + h.astype(jnp.float32)


class AttnBlock(nn.Module):
    """Single-head self-attention over the h*w positions, 1x1-conv projections."""

    config: VQConfig

    @nn.compact
    def __call__(self, x_BxHxWxF: jax.Array) -> jax.Array:
        cfg = self.config
        B, H, W, F = x_BxHxWxF.shape
        h = group_norm(cfg, "norm")(x_BxHxWxF)
        q, k, v = (conv(cfg, F, F, 1, name=n)(h).reshape(B, H * W, F) for n in "qkv")
        scores_BxNxN = jnp.einsum("bif,bjf->bij", q, k).astype(jnp.float32) * F**-0.5
        weights_BxNxN = jax.nn.softmax(scores_BxNxN, axis=-1).astype(v.dtype)
        h = jnp.einsum("bij,bjf->bif", weights_BxNxN, v).reshape(B, H, W, F)
        return x_BxHxWxF.astype(jnp.float32) + conv(cfg, F, F, 1, name="proj_out")(h)


class Level(nn.Module):
    """One resolution of the encoder (`resample="down"`) or decoder (`"up"`)."""

    config: VQConfig
    features: int
    num_blocks: int
    attention: bool
    resample: str | None

    @nn.compact
    def __call__(self, x_BxHxWxF: jax.Array) -> jax.Array:
        cfg, h = self.config, x_BxHxWxF
        for i in range(self.num_blocks):
            h = ResnetBlock(cfg, self.features, name=f"res_{i}")(h)
            if self.attention:
                h = AttnBlock(cfg, name=f"attn_{i}")(h)
        if self.resample == "down":  # taming's asymmetric padding: right and bottom only
            h = Resample(cfg, stride=2, padding=((0, 1), (0, 1)), name="downsample")(h)
        elif self.resample == "up":
            h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)  # nearest, factor 2
            h = Resample(cfg, stride=1, padding=((1, 1), (1, 1)), name="upsample")(h)
        elif self.resample is not None:
            raise ValueError(f"resample must be 'down', 'up' or None, got {self.resample!r}")
        return h


class Resample(nn.Module):
    """A `conv` submodule, so the torch key is `downsample.conv.weight`."""

    config: VQConfig
    stride: int
    padding: Any

    @nn.compact
    def __call__(self, x_BxHxWxF: jax.Array) -> jax.Array:
        F = x_BxHxWxF.shape[-1]
        c = conv(self.config, F, F, strides=self.stride, padding=self.padding, name="conv")
        return c(x_BxHxWxF).astype(jnp.float32)


def mid_block(cfg: VQConfig, h: jax.Array) -> jax.Array:
    """ResnetBlock, attention, ResnetBlock, named mid_0..2 (called inside a compact)."""
    F = h.shape[-1]
    h = ResnetBlock(cfg, F, name="mid_0")(h)
    if cfg.attention:
        h = AttnBlock(cfg, name="mid_1")(h)
    return ResnetBlock(cfg, F, name="mid_2")(h)


class Encoder(nn.Module):
    config: VQConfig

    @nn.compact
    def __call__(self, images_BxHxWxC: jax.Array) -> jax.Array:
        cfg, n = self.config, len(self.config.channel_mult)
        h = conv(cfg, cfg.base_channels, cfg.in_channels, name="conv_in")(images_BxHxWxC)
        for i, mult in enumerate(cfg.channel_mult):
            last = i == n - 1
            h = Level(
                cfg,
                cfg.base_channels * mult,
                cfg.num_res_blocks,
                attention=cfg.attention and last,
                resample=None if last else "down",
                name=f"conv_blocks_{i}",
            )(h)
        h = swish(group_norm(cfg, "norm_out")(mid_block(cfg, h)))
        return conv(cfg, cfg.z_channels, h.shape[-1], name="conv_out")(h).astype(jnp.float32)


class Decoder(nn.Module):
    config: VQConfig

    @nn.compact
    def __call__(self, z_BxhxwxZ: jax.Array) -> jax.Array:
        cfg, n = self.config, len(self.config.channel_mult)
        F = cfg.base_channels * cfg.channel_mult[-1]
        h = mid_block(cfg, conv(cfg, F, cfg.z_channels, name="conv_in")(z_BxhxwxZ))
        for j, i in enumerate(reversed(range(n))):  # conv_blocks_0 is the lowest resolution
            h = Level(
                cfg,
                cfg.base_channels * cfg.channel_mult[i],
                cfg.num_res_blocks + 1,
                attention=cfg.attention and i == n - 1,
                resample="up" if i else None,
                name=f"conv_blocks_{j}",
            )(h)
        h = swish(group_norm(cfg, "norm_out")(h))
        return conv(cfg, cfg.in_channels, h.shape[-1], name="conv_out")(h).astype(jnp.float32)


# ---------------------------------------------------------------------------- model


class VQModel(nn.Module):
    config: VQConfig

    def setup(self):
        cfg = self.config
        self.encoder = Encoder(cfg)
        self.quant_conv = conv(cfg, cfg.code_dim, cfg.z_channels, 1)
        self.quantize = VectorQuantizer(cfg.codebook_size, cfg.code_dim, cfg.l2_normalised_codes)
        self.post_quant_conv = conv(cfg, cfg.z_channels, cfg.code_dim, 1)
        self.decoder = Decoder(cfg)

    def encode_latents(self, images_BxHxWxC: jax.Array) -> jax.Array:
        return self.quant_conv(self.encoder(images_BxHxWxC)).astype(jnp.float32)

    def decode_latents(self, zq_BxhxwxD: jax.Array) -> jax.Array:
        return self.decoder(self.post_quant_conv(zq_BxhxwxD))

    def encode(self, images_BxHxWxC: jax.Array) -> jax.Array:
        return self.quantize(self.encode_latents(images_BxHxWxC))[1]

    def decode(self, codes_Bxhxw: jax.Array) -> jax.Array:
        return self.decode_latents(self.quantize.lookup(codes_Bxhxw))

    def __call__(self, images_BxHxWxC: jax.Array) -> VQOutput:
        zq, codes, codebook_loss, commitment_loss = self.quantize(
            self.encode_latents(images_BxHxWxC)
        )
        return VQOutput(self.decode_latents(zq), codes, codebook_loss, commitment_loss)


def init_params(config: VQConfig, key: jax.Array, image_size: tuple[int, int]) -> Any:
    images = jnp.zeros((1, *image_size, config.in_channels), jnp.float32)
    return VQModel(config).init(key, images)["params"]


def encode(params: Any, config: VQConfig, images_BxHxWxC: jax.Array) -> jax.Array:
    """Images in [-1, 1] -> codes_Bxhxw (int32), h = H / downsample_factor."""
    return VQModel(config).apply({"params": params}, images_BxHxWxC, method=VQModel.encode)


def decode(params: Any, config: VQConfig, codes_Bxhxw: jax.Array) -> jax.Array:
    """codes_Bxhxw -> images_BxHxWxC (unclipped; about [-1, 1])."""
    return VQModel(config).apply({"params": params}, codes_Bxhxw, method=VQModel.decode)


def vq_loss(
    params: Any, config: VQConfig, images_BxHxWxC: jax.Array
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """MSE reconstruction + codebook loss + beta * commitment loss (LlamaGen's VQ terms;
    no perceptual or GAN loss). Returns (loss, metrics)."""
    out = VQModel(config).apply({"params": params}, images_BxHxWxC)
    recon_mse = jnp.mean((out.images_BxHxWxC - images_BxHxWxC.astype(jnp.float32)) ** 2)
    loss = recon_mse + out.codebook_loss + config.commitment_beta * out.commitment_loss
    metrics = {
        "loss": loss,
        "recon_mse": recon_mse,
        "codebook_loss": out.codebook_loss,
        "commitment_loss": out.commitment_loss,
        **codebook_usage(out.codes_Bxhxw, config.codebook_size),
    }
    return loss, metrics
