"""Warm starts of the fixed-point solve from step to step, three-state reuse (3SR) included.

Each step of the FP sampler starts its solver from h^0, built from this step's h_pre
(computed inside the model) and the previous step's fixed point h*_prev:
    cold   h^0 = h_pre
    reuse  h^0 = h*_prev
    3sr    h^0 = gamma * h*_prev + (1 - gamma) * h_pre, gamma per token (docs/method.md §2.5):
           gamma_i = visible                 z_t^i = z_prev^i != MASK  (unchanged visible)
                     masked_min + (masked_max - masked_min) v_t
                                             z_t^i = z_prev^i  = MASK  (still masked)
                     changed                 otherwise                 (newly revealed)
           v_t = fraction of visible tokens of the sequence. The published values
           (1, 0.75, 0.90, 0.2) are `ReuseCoefficients()`.
Every mode starts the first step cold (gamma = 0). The mix is written in the convex
form, so gamma = 0 gives h_pre and gamma = 1 gives h*_prev bit for bit.

Letters: B batch, L length, D hidden.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from cofre_jax.config.choices import WARM_STARTS


class ReuseCoefficients(NamedTuple):
    """3SR's gamma per token state (docs/method.md §2.5); traced, so sweeps reuse the compile."""

    visible: float = 1.0  # unchanged visible token
    masked_min: float = 0.75  # still masked, at visible fraction 0
    masked_max: float = 0.90  # still masked, at visible fraction 1
    changed: float = 0.2  # newly revealed (or otherwise changed) token


PUBLISHED_3SR = ReuseCoefficients()


def three_state_gamma(
    z_BxL: jax.Array, z_prev_BxL: jax.Array, coefficients: ReuseCoefficients, mask_id: int
) -> jax.Array:
    """gamma_BxL (float32) of docs/method.md §2.5 from this step's and the previous step's input."""
    c = ReuseCoefficients(*(jnp.asarray(x, jnp.float32) for x in coefficients))
    masked_BxL = z_BxL == mask_id
    same_BxL = z_BxL == z_prev_BxL
    visible_frac_B = jnp.mean(~masked_BxL, axis=1, dtype=jnp.float32)
    gamma_masked_B = c.masked_min + (c.masked_max - c.masked_min) * visible_frac_B
    return jnp.where(
        same_BxL & ~masked_BxL,
        c.visible,
        jnp.where(same_BxL & masked_BxL, gamma_masked_B[:, None], c.changed),
    )


def warm_start_gamma(
    warm_start: str,
    first: jax.Array,
    z_BxL: jax.Array,
    z_prev_BxL: jax.Array,
    coefficients: ReuseCoefficients,
    mask_id: int,
) -> jax.Array | None:
    """Per-token weight of h*_prev in the start (None: cold); 0 everywhere on the first step."""
    if warm_start == "cold":
        return None
    if warm_start == "reuse":
        gamma_BxL = jnp.ones(z_BxL.shape, jnp.float32)
    elif warm_start == "3sr":
        gamma_BxL = three_state_gamma(z_BxL, z_prev_BxL, coefficients, mask_id)
    else:
        raise ValueError(f"unknown warm_start {warm_start!r}; valid: {WARM_STARTS}")
    return jnp.where(first, 0.0, gamma_BxL)


def mix_start(gamma_BxL: jax.Array, h_prev_BxLxD: jax.Array, h_pre_BxLxD: jax.Array) -> jax.Array:
    """gamma h*_prev + (1 - gamma) h_pre; exact at gamma = 0 and 1 (convex form)."""
    gamma_BxLx1 = gamma_BxL[..., None]
    h_pre_BxLxD = h_pre_BxLxD.astype(jnp.float32)
    return gamma_BxLx1 * h_prev_BxLxD + (1.0 - gamma_BxLx1) * h_pre_BxLxD
