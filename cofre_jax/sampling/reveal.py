"""Reveal rules: which MASK positions a step t -> s reveals, and to what.

A rule is a `RevealFn`, `(key, z_BxL, log_probs_BxLxV, t, s, *, mask_prob_fn, mask_id)
-> z_BxL`, given the step's (top-p filtered) log-probs p_theta(x_0 | z_t). Every sampler
takes one (`reveal_fn`), so the loop, the warm starts and the budget are shared:
    ancestral_update     MDLM's ancestral posterior: each MASK revealed independently
                         w.p. (m(t) - m(s)) / m(t) (docs/method.md §2.1)
    confidence_update    MaskGIT's confidence decoding: the floor(m(s) L) least
                         confident masks stay masked (the image model's rule)
A further rule (a Halton-sequence reveal order for images, say) is one more function
with this signature, added below the other two; nothing else changes.

Every rule copies visible tokens (no re-masking) and reveals every MASK at s <= 0, the
clean time the last step of `loop.ancestral_times` ends at.

Letters: B batch, L sequence length, V vocabulary (MASK included).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from cofre_jax.sampling.noise import exponential_noise, sample_categorical

# t (any shape) -> 1 - alpha_t elementwise, with mask_prob_fn(0) = 0.
MaskProbFn = Callable[[jax.Array], jax.Array]
# (key, z_BxL, log_probs_BxLxV, t, s, *, mask_prob_fn, mask_id) -> z_BxL
RevealFn = Callable[..., jax.Array]


def ancestral_update(
    key: jax.Array,
    z_BxL: jax.Array,
    log_probs_BxLxV: jax.Array,
    t: jax.Array,
    s: jax.Array,
    *,
    mask_prob_fn: MaskProbFn,
    mask_id: int,
) -> jax.Array:
    """z_s given z_t and p_theta(x_0 | z_t): reveal each MASK w.p. (m(t) - m(s)) / m(t).

    With m = mask_prob_fn = 1 - alpha this is (alpha_s - alpha_t) / (1 - alpha_t); for
    the log-linear schedule m(t) = (1 - eps) t it is MDLM's (t - s) / t. s <= 0 means the
    clean time: every MASK is revealed. Visible tokens are copied.
    """
    reveal_key, token_key = jax.random.split(key)
    t = jnp.asarray(t, jnp.float32)
    s = jnp.asarray(s, jnp.float32)
    mask_t = mask_prob_fn(t)
    reveal_prob = (mask_t - mask_prob_fn(s)) / jnp.maximum(mask_t, jnp.finfo(jnp.float32).tiny)
    reveal_prob = jnp.where(s <= 0.0, 1.0, jnp.clip(reveal_prob, 0.0, 1.0))
    x0_BxL = sample_categorical(token_key, log_probs_BxLxV)
    # u in [0, 1), so reveal_prob = 1 reveals every mask and 0 none.
    u_BxL = jax.random.uniform(reveal_key, z_BxL.shape, jnp.float32)
    reveal_BxL = (z_BxL == mask_id) & (u_BxL < reveal_prob)
    return jnp.where(reveal_BxL, x0_BxL, z_BxL)


def confidence_update(
    key: jax.Array,
    z_BxL: jax.Array,
    log_probs_BxLxV: jax.Array,
    t: jax.Array,
    s: jax.Array,
    *,
    mask_prob_fn: MaskProbFn,
    mask_id: int,
    temperature: float = 4.5,
) -> jax.Array:
    """MaskGIT's confidence decoding step t -> s (the image model's reveal rule).

    Draws x0 at every position, scores each MASK position by log p(x0) plus
    temperature * t * Gumbel noise (MaskGIT's annealed choice temperature), and keeps
    the floor(m(s) L) lowest-scoring ones masked (at most the masks there are), so the
    mask count follows the schedule deterministically; the others are revealed to
    their x0. s <= 0 reveals every MASK. Visible tokens are copied.
    """
    token_key, noise_key = jax.random.split(key)
    x0_BxL = sample_categorical(token_key, log_probs_BxLxV)
    score_BxL = jnp.take_along_axis(log_probs_BxLxV, x0_BxL[..., None], axis=-1)[..., 0]
    gumbel_BxL = -jnp.log(exponential_noise(noise_key, z_BxL.shape))
    score_BxL = (
        score_BxL.astype(jnp.float32) + temperature * jnp.asarray(t, jnp.float32) * gumbel_BxL
    )
    masked_BxL = z_BxL == mask_id
    # Visible positions score +inf, so the ascending rank of a MASK is among masks only.
    score_BxL = jnp.where(masked_BxL, score_BxL, jnp.inf)
    rank_BxL = jnp.argsort(jnp.argsort(score_BxL, axis=-1, stable=True), axis=-1, stable=True)
    length = z_BxL.shape[1]
    s = jnp.asarray(s, jnp.float32)
    keep = jnp.where(s <= 0.0, 0, jnp.floor(mask_prob_fn(s) * length)).astype(jnp.int32)
    keep_B = jnp.minimum(keep, jnp.sum(masked_BxL, axis=1))
    reveal_BxL = masked_BxL & (rank_BxL >= keep_B[:, None])
    return jnp.where(reveal_BxL, x0_BxL, z_BxL)
