"""Class-conditional MaskGIT and FP-MaskGIT over a grid of VQ codes (docs/method.md §2.7).

The Halton-MaskGIT style network: learned positions and register tokens, pre-norm
RMSNorm blocks with QK-norm, adaLN-zero driven by the class embedding (the null class
num_classes serves classifier-free guidance), a SwiGLU MLP without biases, and a head
tied to the token embedding. FP-MaskGIT runs the shared P -> G -> Fix(F) -> H stack
(`fixed_point_stack`) with these blocks: 4 pre, 1 weight-tied, 4 post, as published.

Both are called like every denoiser, model(tokens_BxL, sigma_B, labels_B, *, train, ...)
-> DenoiserOutput; MaskGIT is not time-conditioned, so sigma only fixes the batch.
Register tokens are prepended inside the model: the returned hidden states and h* are
the L token positions, and a warm start (h0 / h0_fn, 3SR) applies to those positions
while the registers restart from this call's h_pre.

Letters: B batch, L tokens, R registers, S = R + L, D hidden, H heads, K head dim,
M SwiGLU width, V vocabulary (codes plus MASK), C = D class-condition width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from cofre_jax.config.image import ImageModelConfig
from cofre_jax.config.typed import FixedPointConfig
from cofre_jax.models.fixed_point_stack import fixed_point_stack
from cofre_jax.models.layers import adaln_modulations, dense, modulate
from cofre_jax.models.outputs import DenoiserOutput

RMS_NORM_EPS = 1e-6


def rms_norm(config: ImageModelConfig, name: str, *, scale: bool = True) -> nn.RMSNorm:
    return nn.RMSNorm(
        epsilon=RMS_NORM_EPS,
        use_scale=scale,
        dtype=jnp.float32,
        param_dtype=jnp.dtype(config.param_dtype),
        name=name,
    )


def qk_norm(config: ImageModelConfig, name: str, x_BxSxHxK: jax.Array) -> jax.Array:
    """RMSNorm of queries or keys: "joint" over all heads' dims without a learned scale
    (Halton-MaskGIT normalises the D-wide projection before splitting heads), "per_head"
    over each head's K dims with a learned scale."""
    if config.qk_norm == "per_head":
        return rms_norm(config, name)(x_BxSxHxK)
    B, S, H, K = x_BxSxHxK.shape
    x_BxSxD = rms_norm(config, name, scale=False)(x_BxSxHxK.reshape(B, S, H * K))
    return x_BxSxD.reshape(B, S, H, K)


class MaskGITBlock(nn.Module):
    """adaLN-zero pre-norm block: RMSNorm attention with QK-norm, then a SwiGLU MLP.

    Same call as the text block, (h, cond, rotary, *, train); positions are learned, so
    `rotary` is unused. The residual stream is float32.
    """

    config: ImageModelConfig

    @nn.compact
    def __call__(self, h_BxSxD, cond_BxC, rotary, *, train: bool) -> jax.Array:
        del rotary
        cfg = self.config
        D, H, K = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        B, S, _ = h_BxSxD.shape
        compute_dtype = jnp.dtype(cfg.dtype)
        dropout = nn.Dropout(cfg.dropout, deterministic=not train)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = adaln_modulations(
            cfg, cond_BxC, 6
        )

        h_BxSxD = h_BxSxD.astype(jnp.float32)
        x_BxSxD = modulate(rms_norm(cfg, "norm1")(h_BxSxD), shift_msa, scale_msa)
        qkv_BxSx3xHxK = dense(cfg, 3 * D, D, name="attn_qkv", use_bias=False)(x_BxSxD)
        qkv_BxSx3xHxK = qkv_BxSx3xHxK.reshape(B, S, 3, H, K)
        q_BxSxHxK = qk_norm(cfg, "q_norm", qkv_BxSx3xHxK[:, :, 0])
        k_BxSxHxK = qk_norm(cfg, "k_norm", qkv_BxSx3xHxK[:, :, 1])
        attn_BxSxHxK = jax.nn.dot_product_attention(
            q_BxSxHxK.astype(compute_dtype),
            k_BxSxHxK.astype(compute_dtype),
            qkv_BxSx3xHxK[:, :, 2].astype(compute_dtype),
            is_causal=False,
        )
        attn_BxSxD = dense(cfg, D, D, name="attn_out", use_bias=False)(
            attn_BxSxHxK.reshape(B, S, D)
        )
        h_BxSxD = h_BxSxD + gate_msa[:, None, :] * dropout(attn_BxSxD).astype(jnp.float32)

        x_BxSxD = modulate(rms_norm(cfg, "norm2")(h_BxSxD), shift_mlp, scale_mlp)
        M = cfg.mlp_width
        gate_BxSxM = dense(cfg, M, D, name="mlp_gate", use_bias=False)(x_BxSxD)
        up_BxSxM = dense(cfg, M, D, name="mlp_up", use_bias=False)(x_BxSxD)
        x_BxSxD = dense(cfg, D, M, name="mlp_down", use_bias=False)(nn.silu(gate_BxSxM) * up_BxSxM)
        return h_BxSxD + gate_mlp[:, None, :] * dropout(x_BxSxD).astype(jnp.float32)


class _Inputs(nn.Module):
    """Token embedding (V x D, also the tied head), learned positions over the R + L
    sequence, the register tokens, and the class condition silu(embed(label))."""

    config: ImageModelConfig

    @nn.compact
    def __call__(self, tokens_BxL, labels_B):
        cfg = self.config
        B, L = tokens_BxL.shape
        R, D = cfg.register_tokens, cfg.hidden_size
        init = nn.initializers.normal(0.02)
        param_dtype = jnp.dtype(cfg.param_dtype)
        embedding_VxD = self.param("token_embed", init, (cfg.vocab_size, D), param_dtype)
        positions_SxD = self.param("positions", init, (R + L, D), param_dtype)
        registers_RxD = self.param("registers", init, (R, D), param_dtype)
        classes_NxD = self.param("class_embed", init, (cfg.num_classes + 1, D), param_dtype)
        h_BxLxD = jnp.take(embedding_VxD, tokens_BxL, axis=0).astype(jnp.float32)
        registers_BxRxD = jnp.broadcast_to(registers_RxD.astype(jnp.float32), (B, R, D))
        h_BxSxD = jnp.concatenate([registers_BxRxD, h_BxLxD], axis=1) + positions_SxD
        cond_BxC = nn.silu(jnp.take(classes_NxD, labels_B, axis=0).astype(jnp.float32))
        return h_BxSxD, cond_BxC, embedding_VxD


class _Head(nn.Module):
    """adaLN-modulated RMSNorm, then logits against the tied token embedding plus a bias."""

    config: ImageModelConfig

    @nn.compact
    def __call__(self, h_BxLxD, cond_BxC, embedding_VxD):
        cfg = self.config
        shift_BxD, scale_BxD = adaln_modulations(cfg, cond_BxC, 2)
        x_BxLxD = modulate(rms_norm(cfg, "norm_final", scale=False)(h_BxLxD), shift_BxD, scale_BxD)
        bias_V = self.param("bias", nn.initializers.zeros_init(), (cfg.vocab_size,))
        dtype = jnp.dtype(cfg.dtype)
        logits_BxLxV = jnp.dot(x_BxLxD.astype(dtype), embedding_VxD.astype(dtype).T)
        return logits_BxLxV.astype(jnp.float32) + bias_V


def labels_or_null(config: ImageModelConfig, labels_B: Any, batch: int) -> jax.Array:
    """The class labels of a call; None (unconditional) is the null class."""
    if labels_B is None:
        return jnp.full((batch,), config.null_class, jnp.int32)
    labels_B = jnp.asarray(labels_B)
    if labels_B.shape != (batch,) or not jnp.issubdtype(labels_B.dtype, jnp.integer):
        raise ValueError(
            f"labels must be integers of shape ({batch},), got {labels_B.dtype} {labels_B.shape}"
        )
    return labels_B.astype(jnp.int32)


class MaskGIT(nn.Module):
    config: ImageModelConfig

    is_fixed_point: ClassVar[bool] = False

    @staticmethod
    def block_cost(config: ImageModelConfig) -> tuple[int, int]:
        return config.num_layers, 0

    @nn.compact
    def __call__(self, tokens_BxL, sigma_B, labels_B=None, *, train: bool) -> DenoiserOutput:
        cfg, R = self.config, self.config.register_tokens
        labels_B = labels_or_null(cfg, labels_B, tokens_BxL.shape[0])
        h_BxSxD, cond_BxC, embedding_VxD = _Inputs(cfg, name="inputs")(tokens_BxL, labels_B)
        for i in range(cfg.num_layers):
            h_BxSxD = MaskGITBlock(cfg, name=f"blocks_{i}")(h_BxSxD, cond_BxC, None, train=train)
        h_BxLxD = h_BxSxD[:, R:]
        logits_BxLxV = _Head(cfg, name="head")(h_BxLxD, cond_BxC, embedding_VxD)
        return DenoiserOutput(logits_BxLxV, h_BxLxD)


class FPMaskGIT(nn.Module):
    config: ImageModelConfig
    fixed_point: FixedPointConfig

    is_fixed_point: ClassVar[bool] = True

    @staticmethod
    def block_cost(config: ImageModelConfig) -> tuple[int, int]:
        return config.k_pre + config.k_post, config.k_fp

    @nn.compact
    def __call__(
        self,
        tokens_BxL,
        sigma_B,
        labels_B=None,
        *,
        train: bool,
        h0_BxLxD: jax.Array | None = None,
        h0_fn: Callable[[jax.Array], jax.Array] | None = None,
        num_iterations: int | jax.Array | None = None,
    ) -> DenoiserOutput:
        cfg, R = self.config, self.config.register_tokens
        labels_B = labels_or_null(cfg, labels_B, tokens_BxL.shape[0])
        h_BxSxD, cond_BxC, embedding_VxD = _Inputs(cfg, name="inputs")(tokens_BxL, labels_B)
        start_fn = None
        if h0_BxLxD is not None or h0_fn is not None:

            def start_fn(h_pre_BxSxD):  # the registers restart from h_pre
                tokens_h0 = h0_fn(h_pre_BxSxD[:, R:]) if h0_fn is not None else h0_BxLxD
                return jnp.concatenate([h_pre_BxSxD[:, :R], tokens_h0], axis=1)

        h_BxSxD, h_star_BxSxD, stats = fixed_point_stack(
            self,
            cfg,
            self.fixed_point,
            h_BxSxD,
            cond_BxC,
            (None, None),
            train=train,
            h0_fn=start_fn,
            num_iterations=num_iterations,
            block=MaskGITBlock,
        )
        h_BxLxD = h_BxSxD[:, R:]
        logits_BxLxV = _Head(cfg, name="head")(h_BxLxD, cond_BxC, embedding_VxD)
        return DenoiserOutput(logits_BxLxV, h_BxLxD, h_star_BxSxD[:, R:], stats)
