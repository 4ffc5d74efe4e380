"""Reveal rules: which MASK positions a step t -> s reveals, and to what.

A rule is a `RevealFn`, `(key, z_BxL, log_probs_BxLxV, t, s, *, mask_prob_fn, mask_id)
-> z_BxL`, given the step's (top-p filtered) log-probs p_theta(x_0 | z_t). Every sampler
takes one (`reveal_fn`), so the loop, the warm starts and the budget are shared:
    ancestral_update     MDLM's ancestral posterior: each MASK revealed independently
                         w.p. (m(t) - m(s)) / m(t) (docs/method.md §2.1)
    confidence_update    MaskGIT's confidence decoding: the floor(m(s) L) least
                         confident masks stay masked (the image model's rule)
The image model's rules (`sampling.halton`: the Halton order, MaskGIT's annealed
confidence with the arccos counts) are callables with this signature too; they are
step-indexed and get the step from the time grid with `step_of_time`.

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
    noise_scale: jax.Array | float | None = None,
    keep: jax.Array | int | None = None,
    token_temperature: jax.Array | float | None = None,
) -> jax.Array:
    """MaskGIT's confidence decoding step t -> s (the image model's reveal rule).

    Draws x0 at every position, scores each MASK position by log p(x0) plus
    noise_scale * Gumbel noise, and keeps the `keep` lowest-scoring ones masked (at
    most the masks there are); the others are revealed to their x0. s <= 0 reveals
    every MASK. Visible tokens are copied. The defaults are the time-driven rule:
        noise_scale None: temperature * t (MaskGIT's annealed choice temperature)
        keep None:        floor(m(s) L), so the mask count follows the schedule
        token_temperature None: x0 drawn from log_probs as given; else from
                          log_probs / token_temperature (the score stays the model's
                          untempered log p(x0))
    `halton.AnnealedConfidence` sets the three per step.
    """
    token_key, noise_key = jax.random.split(key)
    draw_BxLxV = log_probs_BxLxV
    if token_temperature is not None:
        draw_BxLxV = log_probs_BxLxV.astype(jnp.float32) / jnp.asarray(
            token_temperature, jnp.float32
        )
    x0_BxL = sample_categorical(token_key, draw_BxLxV)
    score_BxL = jnp.take_along_axis(log_probs_BxLxV, x0_BxL[..., None], axis=-1)[..., 0]
    gumbel_BxL = -jnp.log(exponential_noise(noise_key, z_BxL.shape))
    if noise_scale is None:
        noise_scale = temperature * jnp.asarray(t, jnp.float32)
    score_BxL = score_BxL.astype(jnp.float32) + jnp.asarray(noise_scale, jnp.float32) * gumbel_BxL
    masked_BxL = z_BxL == mask_id
    # Visible positions score +inf, so the ascending rank of a MASK is among masks only.
    score_BxL = jnp.where(masked_BxL, score_BxL, jnp.inf)
    rank_BxL = jnp.argsort(jnp.argsort(score_BxL, axis=-1, stable=True), axis=-1, stable=True)
    length = z_BxL.shape[1]
    s = jnp.asarray(s, jnp.float32)
    if keep is None:
        keep = jnp.floor(mask_prob_fn(s) * length)
    keep = jnp.where(s <= 0.0, 0, keep).astype(jnp.int32)
    keep_B = jnp.minimum(keep, jnp.sum(masked_BxL, axis=1))
    reveal_BxL = masked_BxL & (rank_BxL >= keep_B[:, None])
    return jnp.where(reveal_BxL, x0_BxL, z_BxL)


def step_of_time(s: jax.Array, steps: int) -> jax.Array:
    """The number of steps done once the sampler reaches time s, int32 in [0, steps].

    The samplers run `loop.ancestral_times(steps, final_eps)`: s_i = 1 - i (1 - eps) / T
    for i < T and s_T = 0, so round((1 - s) T) = i exactly while T eps < 1/2 (eps = 1e-5:
    any T below 50000); s <= 0 is T. A step t -> s is step i = step_of_time(s) - 1
    (0-based), its step fraction (i + 1) / T (MaskGIT's `ratio`).
    """
    s = jnp.asarray(s, jnp.float32)
    done = jnp.clip(jnp.round((1.0 - s) * steps), 0, steps).astype(jnp.int32)
    return jnp.where(s <= 0.0, steps, done)


def linear_in_step(start: float, end: float, step: jax.Array, steps: int) -> jax.Array:
    """start + (end - start) i / (T - 1) at the 0-based step i (start when T = 1): a
    value constant (start = end) or annealed linearly over the steps, float32."""
    frac = jnp.asarray(step, jnp.float32) / max(steps - 1, 1)
    return jnp.float32(start) + (jnp.float32(end) - jnp.float32(start)) * frac


def check_reveal_steps(reveal_fn: RevealFn, steps: int) -> None:
    """A step-indexed rule (one with a `steps` attribute) must be built for the
    sampler's number of steps; time-driven rules (no attribute) fit any."""
    want = getattr(reveal_fn, "steps", None)
    if want is not None and want != steps:
        raise ValueError(
            f"reveal rule {reveal_fn!r} is built for {want} steps but the sampler runs {steps}"
        )
