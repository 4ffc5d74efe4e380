"""MDLM's DiT denoiser (docs/method.md §2.1): embedding -> N DiT blocks -> adaLN final layer.

Returns raw logits; the SUBS parameterisation lives in `cofre_jax.diffusion`.

Letters: B batch, L length, D hidden, C cond dim, V vocabulary.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from cofre_jax.config.typed import ModelConfig
from cofre_jax.models.layers import (
    DiTBlock,
    EmbeddingLayer,
    FinalLayer,
    TimestepEmbedder,
    rotary_tables,
)


def conditioning(
    sigma_map: TimestepEmbedder, sigma_B: jax.Array, time_conditioning: bool
) -> jax.Array:
    """cond_BxC = silu(sigma_map(sigma)); without time conditioning sigma is 0 for every
    row, MDLM's constant condition (the adaLN layers then learn plain biases)."""
    if not time_conditioning:
        sigma_B = jnp.zeros_like(sigma_B)
    return nn.silu(sigma_map(sigma_B))


class DiT(nn.Module):
    config: ModelConfig

    @nn.compact
    def __call__(
        self,
        tokens_BxL: jax.Array,
        sigma_B: jax.Array,
        *,
        train: bool,
        return_hidden: bool = False,
    ):
        """logits_BxLxV (float32, before SUBS), plus the last block's output hidden_BxLxD
        (float32) when `return_hidden`."""
        cfg = self.config
        if sigma_B.ndim != 1:
            raise ValueError(f"sigma must have shape (B,), got {sigma_B.shape}")
        h_BxLxD = EmbeddingLayer(cfg, name="vocab_embed")(tokens_BxL)
        cond_BxC = conditioning(
            TimestepEmbedder(cfg, name="sigma_map"), sigma_B, cfg.time_conditioning
        )
        rotary = rotary_tables(tokens_BxL.shape[1], cfg.head_dim)
        for i in range(cfg.num_layers):
            h_BxLxD = DiTBlock(cfg, name=f"blocks_{i}")(h_BxLxD, cond_BxC, rotary, train=train)
        logits_BxLxV = FinalLayer(cfg, name="output_layer")(h_BxLxD, cond_BxC)
        if return_hidden:
            return logits_BxLxV, h_BxLxD
        return logits_BxLxV
