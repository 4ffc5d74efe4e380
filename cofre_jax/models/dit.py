"""MDLM's DiT denoiser (docs/method.md §2.1): embedding -> N DiT blocks -> adaLN final layer.

Returns a `DenoiserOutput` of raw logits and the last block's hidden states; the SUBS
parameterisation lives in `cofre_jax.diffusion`.

Letters: B batch, L length, D hidden, C cond dim, V vocabulary.
"""

from __future__ import annotations

from typing import Any, ClassVar

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
from cofre_jax.models.outputs import DenoiserOutput


def conditioning(
    sigma_map: TimestepEmbedder, sigma_B: jax.Array, time_conditioning: bool
) -> jax.Array:
    """cond_BxC = silu(sigma_map(sigma)); without time conditioning sigma is 0 for every
    row, MDLM's constant condition (the adaLN layers then learn plain biases)."""
    if not time_conditioning:
        sigma_B = jnp.zeros_like(sigma_B)
    return nn.silu(sigma_map(sigma_B))


def no_condition(condition: Any, sigma_B: jax.Array) -> None:
    """The text models' checks of the call's inputs: sigma of shape (B,), no labels."""
    if sigma_B.ndim != 1:
        raise ValueError(f"sigma must have shape (B,), got {sigma_B.shape}")
    if condition is not None:
        raise ValueError(
            "the text denoisers are unconditional: call them with condition=None, "
            f"got {type(condition).__name__}"
        )


class DiT(nn.Module):
    config: ModelConfig

    is_fixed_point: ClassVar[bool] = False

    @staticmethod
    def block_cost(config: ModelConfig) -> tuple[int, int]:
        """(block passes of a call outside the solver, per fixed-point iteration)."""
        return config.num_layers, 0

    @nn.compact
    def __call__(
        self, tokens_BxL: jax.Array, sigma_B: jax.Array, condition: Any = None, *, train: bool
    ) -> DenoiserOutput:
        """Logits (float32, before SUBS) and the last block's output (float32)."""
        cfg = self.config
        no_condition(condition, sigma_B)
        h_BxLxD = EmbeddingLayer(cfg, name="vocab_embed")(tokens_BxL)
        cond_BxC = conditioning(
            TimestepEmbedder(cfg, name="sigma_map"), sigma_B, cfg.time_conditioning
        )
        rotary = rotary_tables(tokens_BxL.shape[1], cfg.head_dim)
        for i in range(cfg.num_layers):
            h_BxLxD = DiTBlock(cfg, name=f"blocks_{i}")(h_BxLxD, cond_BxC, rotary, train=train)
        logits_BxLxV = FinalLayer(cfg, name="output_layer")(h_BxLxD, cond_BxC)
        return DenoiserOutput(logits_BxLxV, h_BxLxD)
