"""Classifier-free guidance (CFG) for conditional denoisers: a hook for the image models.

`make_guided_denoise_fn` wraps a conditional `DenoiseFn` `(params, z_BxL, t_B, cond) ->
log_probs` into a guided one with the same signature, whose condition is a `Guided`
pair (the model's condition, the scale w). One guided call makes ONE denoiser call on a
batch of 2B rows, the conditional rows then the null-condition rows (the same z and t,
the condition replaced by `null_cond_fn(cond)`), and combines them per token as

    log p_w = log_softmax((1 + w) log p(x | cond) - w log p(x | null))

with the MASK column kept at NEG_INF. w = 0 returns the conditional log-probs exactly
(MASK column set to NEG_INF), w > 0 sharpens towards the condition. Log-probs below
NEG_INF (-inf included) are raised to NEG_INF first, so that -inf - (-inf) never makes
a NaN. w is traced (a scalar or one per row, shape (B,)), so sweeping it reuses the
compiled sampler; the guided function goes to the samplers like any `DenoiseFn`:

    guided = make_guided_denoise_fn(denoise_fn, lambda y: jnp.full_like(y, NULL), mask_id=M)
    ancestral_sample(guided, params, key, ..., cond=Guided(labels_B, jnp.float32(2.0)))

Letters: B batch, L length, V vocabulary (MASK included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cofre_jax.diffusion import NEG_INF
from cofre_jax.sampling.ancestral import DenoiseFn


class Guided(NamedTuple):
    """The condition of a guided denoiser."""

    cond: Any  # the conditional denoiser's condition: a pytree of arrays, batch first
    scale: jax.Array  # w, float scalar or shape (B,); 0: no guidance


def guide(cond_BxLxV: jax.Array, null_BxLxV: jax.Array, scale, mask_id: int) -> jax.Array:
    """log_softmax((1 + w) cond - w null) over the last axis, MASK at NEG_INF; exactly
    `cond` (MASK at NEG_INF) where w = 0. float32."""
    cond_BxLxV = cond_BxLxV.astype(jnp.float32)
    w = jnp.asarray(scale, jnp.float32)
    w_Bx1x1 = jnp.broadcast_to(w, cond_BxLxV.shape[:1]).reshape(-1, 1, 1)
    mixed_BxLxV = (1.0 + w_Bx1x1) * jnp.maximum(cond_BxLxV, NEG_INF) - w_Bx1x1 * jnp.maximum(
        null_BxLxV.astype(jnp.float32), NEG_INF
    )
    mixed_BxLxV = mixed_BxLxV.at[..., mask_id].set(NEG_INF)
    guided_BxLxV = jax.nn.log_softmax(mixed_BxLxV, axis=-1).at[..., mask_id].set(NEG_INF)
    return jnp.where(w_Bx1x1 == 0.0, cond_BxLxV.at[..., mask_id].set(NEG_INF), guided_BxLxV)


def make_guided_denoise_fn(
    denoise_fn: DenoiseFn, null_cond_fn: Callable[[Any], Any], *, mask_id: int
) -> DenoiseFn:
    """The guided `(params, z_BxL, t_B, Guided(cond, w)) -> log_probs` of a conditional
    denoiser; null_cond_fn(cond) is the null condition of the same structure and shapes
    (e.g. every label replaced by the "no label" id). Build it once and pass the same
    object to the samplers, which hash it by identity."""

    def guided_fn(params, z_BxL, t_B, guided: Guided):
        batch = z_BxL.shape[0]
        both_cond = jax.tree.map(
            lambda c, n: jnp.concatenate([c, n], axis=0), guided.cond, null_cond_fn(guided.cond)
        )
        z_2BxL = jnp.concatenate([z_BxL, z_BxL], axis=0)
        t_2B = jnp.concatenate([t_B, t_B], axis=0)
        log_probs_2BxLxV = denoise_fn(params, z_2BxL, t_2B, both_cond)
        return guide(
            log_probs_2BxLxV[:batch], log_probs_2BxLxV[batch:], guided.scale, mask_id=mask_id
        )

    return guided_fn
