"""Masked diffusion math (docs/method.md §2.1): schedules, time sampling, masking, SUBS, NELBO.

Forward process: each token is independently replaced by MASK with probability
mask_prob(t) = 1 - alpha_t, alpha_t = exp(-sigma(t)). The continuous-time NELBO is

    E_{t ~ U[sampling_eps, 1]} [ w(t) * sum_{i masked in z_t} -log p_theta(x_i | z_t) ],
    w(t) = -alpha'_t / (1 - alpha_t) = sigma'(t) / expm1(sigma(t)),

which MDLM normalises by the number of tokens (masked or not).

Everything here is a pure function; schedules are tuples of pure functions.

Letters: B batch, L length, V vocabulary.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cofre_jax.config.choices import SCHEDULES
from cofre_jax.config.typed import DiffusionConfig

# Log-probability given to impossible outcomes (the MASK token, and every token but the
# observed one at visible positions). Finite like MDLM's -1e6 rather than -inf: exp of it
# is exactly 0 in float32, yet 0 * NEG_INF stays 0, so KL terms, entropies and gradients
# that multiply probabilities by log-probabilities never produce NaN.
NEG_INF = -1e6


class Schedule(NamedTuple):
    """Noise schedule; every function maps t (any shape, in [0, 1]) elementwise."""

    name: str
    eps: float
    total_noise: Callable[[jax.Array], jax.Array]  # sigma(t), alpha_t = exp(-sigma)
    rate_noise: Callable[[jax.Array], jax.Array]  # dsigma/dt
    mask_prob: Callable[[jax.Array], jax.Array]  # 1 - alpha_t
    loss_weight: Callable[[jax.Array], jax.Array]  # -alpha'_t / (1 - alpha_t) >= 0


# Cached: equal (name, eps) give the very same functions, so jitted samplers that take
# them as static arguments (hashed by identity) compile once per schedule.
@functools.lru_cache(maxsize=16)
def make_schedule(name: str, eps: float) -> Schedule:
    """All three schedules run from mask_prob(0) = 0 to mask_prob(1) = 1 - eps.

    loglinear: sigma = -log(1 - (1-eps) t), mask_prob = (1-eps) t, w(t) = 1/t (MDLM).
    linear:    sigma = -log(eps) t, linear in total noise (MDLM's `Linear`), mask_prob = 1 - eps^t.
    cosine:    alpha_t = eps + (1-eps) cos(pi t / 2) (MDLM's `CosineNoise`).
    """
    if name == "loglinear":

        def total_noise(t):
            return -jnp.log1p(-(1.0 - eps) * t)

        def rate_noise(t):
            return (1.0 - eps) / (1.0 - (1.0 - eps) * t)

    elif name == "linear":
        sigma_max = -math.log(eps)

        def total_noise(t):
            return sigma_max * t

        def rate_noise(t):
            return sigma_max * jnp.ones_like(t)

    elif name == "cosine":
        half_pi = 0.5 * math.pi

        def total_noise(t):
            return -jnp.log(eps + (1.0 - eps) * jnp.cos(half_pi * t))

        def rate_noise(t):
            alpha = eps + (1.0 - eps) * jnp.cos(half_pi * t)
            return half_pi * (1.0 - eps) * jnp.sin(half_pi * t) / alpha

    else:
        raise ValueError(f"unknown diffusion schedule {name!r}; valid schedules: {SCHEDULES}")

    def mask_prob(t):
        return -jnp.expm1(-total_noise(t))

    def loss_weight(t):
        # MDLM's dsigma / expm1(sigma); exactly 1/t for the log-linear schedule.
        return rate_noise(t) / jnp.expm1(total_noise(t))

    return Schedule(name, eps, total_noise, rate_noise, mask_prob, loss_weight)


def sample_times(
    key: jax.Array, batch_size: int, *, antithetic: bool, sampling_eps: float
) -> jax.Array:
    """t_B = (1 - sampling_eps) u + sampling_eps. Antithetic: u_i drawn in its own stratum
    [i/B, (i+1)/B) (MDLM's `_sample_t`), which lowers the variance of the batch loss."""
    u_B = jax.random.uniform(key, (batch_size,), jnp.float32)
    if antithetic:
        u_B = (u_B + jnp.arange(batch_size, dtype=jnp.float32)) / batch_size
    return (1.0 - sampling_eps) * u_B + sampling_eps


def mask_with_uniforms(
    tokens_BxL: jax.Array, u_BxL: jax.Array, t_B: jax.Array, schedule: Schedule, mask_id: int
) -> jax.Array:
    """Masks position i iff u_i < mask_prob(t). Sharing u across times gives nested
    (correlated) masks: an earlier time masks a subset of a later time's positions."""
    masked_BxL = u_BxL < schedule.mask_prob(t_B)[:, None]
    return jnp.where(masked_BxL, jnp.asarray(mask_id, tokens_BxL.dtype), tokens_BxL)


def mask_tokens(
    key: jax.Array, tokens_BxL: jax.Array, t_B: jax.Array, schedule: Schedule, mask_id: int
) -> jax.Array:
    """z_BxL ~ q(z_t | x): each token independently becomes MASK w.p. mask_prob(t)."""
    u_BxL = jax.random.uniform(key, tokens_BxL.shape, jnp.float32)
    return mask_with_uniforms(tokens_BxL, u_BxL, t_B, schedule, mask_id)


def subs_log_probs(logits_BxLxV: jax.Array, z_BxL: jax.Array, mask_id: int) -> jax.Array:
    """SUBS parameterisation, float32 log-probabilities.

    Masked positions: log_softmax with the MASK logit removed (MASK is never predicted).
    Visible positions: the observed token with probability 1 (carry-over). Impossible
    outcomes get NEG_INF (see its comment), so rows still sum to exactly 1.
    """
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    vocab_V = jnp.arange(logits_BxLxV.shape[-1])
    logits_BxLxV = jnp.where(vocab_V == mask_id, NEG_INF, logits_BxLxV)
    log_probs_BxLxV = jax.nn.log_softmax(logits_BxLxV, axis=-1)
    carry_BxLxV = jnp.where(vocab_V == z_BxL[..., None], 0.0, NEG_INF)
    visible_BxLx1 = (z_BxL != mask_id)[..., None]
    return jnp.where(visible_BxLx1, carry_BxLxV, log_probs_BxLxV)


def nelbo_per_token(
    log_probs_BxLxV: jax.Array,
    tokens_BxL: jax.Array,
    z_BxL: jax.Array,
    t_B: jax.Array,
    schedule: Schedule,
    mask_id: int,
) -> jax.Array:
    """loss_BxL = w(t) * -log p(x_i | z_t) at masked positions, 0 at visible ones."""
    log_p_BxL = jnp.take_along_axis(log_probs_BxLxV, tokens_BxL[..., None], axis=-1)[..., 0]
    weight_Bx1 = schedule.loss_weight(t_B)[:, None]
    return jnp.where(z_BxL == mask_id, -log_p_BxL * weight_Bx1, 0.0)


def _masked_nll(
    logits_BxLxV: jax.Array, tokens_BxL: jax.Array, z_BxL: jax.Array, mask_id: int
) -> jax.Array:
    """-log p_SUBS(x_i | z_t) at masked positions (0 elsewhere) without materialising the
    log-softmax: logsumexp over non-MASK logits minus the target logit.

    The MASK logit is pushed to about NEG_INF by adding NEG_INF, not replaced by a
    `where`: the sums are the same bits (exp of NEG_INF + logit - max is exactly 0 in
    float32 either way, for any finite logit far below 1e6) and so are the gradients
    (the MASK column's is exactly 0 either way), while XLA fuses an added vector into
    the head's output instead of materialising a masked copy of the logits and of their
    gradient (two fewer B x L x V buffers in the train step; benchmarks/versus_md4.py).
    Targets are data tokens, never MASK."""
    logits_BxLxV = logits_BxLxV.astype(jnp.float32)
    vocab_V = jnp.arange(logits_BxLxV.shape[-1])
    logits_BxLxV = logits_BxLxV + jnp.where(vocab_V == mask_id, NEG_INF, 0.0)
    target_BxL = jnp.take_along_axis(logits_BxLxV, tokens_BxL[..., None], axis=-1)[..., 0]
    nll_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1) - target_BxL
    return jnp.where(z_BxL == mask_id, nll_BxL, 0.0)


def draw_noisy_tokens(
    key: jax.Array,
    tokens_BxL: jax.Array,
    diffusion_cfg: DiffusionConfig,
    schedule: Schedule,
    mask_id: int,
) -> tuple[jax.Array, jax.Array]:
    """(t_B, z_BxL): MDLM's training times and the tokens masked at those times."""
    time_key, mask_key = jax.random.split(key)
    t_B = sample_times(
        time_key,
        tokens_BxL.shape[0],
        antithetic=diffusion_cfg.antithetic,
        sampling_eps=diffusion_cfg.sampling_eps,
    )
    return t_B, mask_tokens(mask_key, tokens_BxL, t_B, schedule, mask_id)


def masked_diffusion_loss(
    logits_BxLxV: jax.Array,
    tokens_BxL: jax.Array,
    z_BxL: jax.Array,
    t_B: jax.Array,
    schedule: Schedule,
    mask_id: int,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The NELBO estimate per token of denoiser logits at (z_t, t) and summable metrics:
    (nll_sum / token_count, {nll_sum, token_count, masked_fraction})."""
    batch, length = tokens_BxL.shape
    loss_BxL = schedule.loss_weight(t_B)[:, None] * _masked_nll(
        logits_BxLxV, tokens_BxL, z_BxL, mask_id
    )
    nll_sum = jnp.sum(loss_BxL)
    token_count = jnp.asarray(batch * length, jnp.float32)
    metrics = {
        "nll_sum": nll_sum,
        "token_count": token_count,
        "masked_fraction": jnp.mean((z_BxL == mask_id).astype(jnp.float32)),
    }
    return nll_sum / token_count, metrics


def diffusion_loss(
    apply_fn: Callable[..., Any],
    params: Any,
    tokens_BxL: jax.Array,
    key: jax.Array,
    diffusion_cfg: DiffusionConfig,
    mask_id: int,
    *,
    train: bool,
    rngs: dict | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """One-sample NELBO estimate per token (MDLM's loss) and summable metrics.

    `apply_fn(params, z_BxL, sigma_B, train=..., rngs=...)` is the denoiser call, whose
    output has `logits_BxLxV` (raw) and `stats` (a `cofre_jax.models.DenoiserOutput`).
    Returns (nll_sum / token_count, {nll_sum, token_count, masked_fraction, stats}).
    """
    schedule = make_schedule(diffusion_cfg.schedule, diffusion_cfg.eps)
    t_B, z_BxL = draw_noisy_tokens(key, tokens_BxL, diffusion_cfg, schedule, mask_id)
    out = apply_fn(params, z_BxL, schedule.total_noise(t_B), train=train, rngs=rngs)
    loss, metrics = masked_diffusion_loss(
        out.logits_BxLxV, tokens_BxL, z_BxL, t_B, schedule, mask_id
    )
    return loss, {**metrics, "stats": out.stats}


def nelbo_metrics(nll_sum, token_count) -> dict[str, jax.Array]:
    """Nats and bits per token and perplexity (= exp(nats per token)) of a summed NELBO."""
    nats = jnp.asarray(nll_sum, jnp.float32) / jnp.asarray(token_count, jnp.float32)
    return {
        "nats_per_token": nats,
        "bits_per_token": nats / math.log(2.0),
        "perplexity": jnp.exp(nats),
    }
