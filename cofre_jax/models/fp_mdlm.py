"""FP-MDLM (docs/method.md §2.2): MDLM's embedding and time condition, explicit pre blocks,
one weight-tied block iterated to a fixed point, explicit post blocks and MDLM's head.

    h_pre = P(z_t, t);  u = G(h_pre);  h* = Fix(F(.; u, t));  logits = H(h*, t)

The P -> G -> Fix(F) -> H part is `fixed_point_stack`, shared with any other
fixed-point model; this module adds only what is MDLM's.

Letters: B batch, L length, D hidden, C cond dim, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax

from cofre_jax.config.typed import FixedPointConfig, ModelConfig
from cofre_jax.models.dit import conditioning, no_condition
from cofre_jax.models.fixed_point_stack import fixed_point_stack
from cofre_jax.models.layers import EmbeddingLayer, FinalLayer, TimestepEmbedder, rotary_tables
from cofre_jax.models.outputs import DenoiserOutput


class FPMDLM(nn.Module):
    config: ModelConfig
    fixed_point: FixedPointConfig

    is_fixed_point: ClassVar[bool] = True

    @staticmethod
    def block_cost(config: ModelConfig) -> tuple[int, int]:
        """(block passes of a call outside the solver, per fixed-point iteration)."""
        return config.k_pre + config.k_post, config.k_fp

    @nn.compact
    def __call__(
        self,
        tokens_BxL: jax.Array,
        sigma_B: jax.Array,
        condition: Any = None,
        *,
        train: bool,
        h0_BxLxD: jax.Array | None = None,
        h0_fn: Callable[[jax.Array], jax.Array] | None = None,
        num_iterations: int | jax.Array | None = None,
    ) -> DenoiserOutput:
        """One denoiser call. `condition` must be None (text has no labels); the solver
        arguments are those of `fixed_point_stack`."""
        cfg = self.config
        no_condition(condition, sigma_B)
        h_BxLxD = EmbeddingLayer(cfg, name="vocab_embed")(tokens_BxL)
        cond_BxC = conditioning(
            TimestepEmbedder(cfg, name="sigma_map"), sigma_B, cfg.time_conditioning
        )
        rotary = rotary_tables(tokens_BxL.shape[1], cfg.head_dim)
        h_BxLxD, h_star_BxLxD, stats = fixed_point_stack(
            self,
            cfg,
            self.fixed_point,
            h_BxLxD,
            cond_BxC,
            rotary,
            train=train,
            h0_BxLxD=h0_BxLxD,
            h0_fn=h0_fn,
            num_iterations=num_iterations,
        )
        logits_BxLxV = FinalLayer(cfg, name="output_layer")(h_BxLxD, cond_BxC)
        return DenoiserOutput(logits_BxLxV, h_BxLxD, h_star_BxLxD, stats)
