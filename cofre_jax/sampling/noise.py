"""Token draws for every sampler: `exponential_noise`, `sample_categorical` and the
nucleus filter `top_p_filter`.

Categorical noise with float64 resolution, without x64. Drawing with float32 uniforms
truncates the Gumbel noise (largest value about 16 with 23-bit uniforms), which makes
tokens more than e^-16 less likely than the top one unreachable and measurably lowers
sample diversity; MDLM therefore draws in float64. Enabling x64 is not an option here:
`jax.experimental.enable_x64` is gone in jax 0.10, and tracing the caller's denoiser
under a scoped `jax.enable_x64(True)` silently turns its `jnp.zeros`/`arange` defaults
into 64-bit types (doubled memory, emulated float64 on TPU). Instead each noise value is
built from 64 random bits (two uint32 draws) N in [0, 2^64): U = (N + 1/2) 2^-64 and
V = 1 - U are both formed in float32 with full *relative* precision (V from the bitwise
complement of N, so no cancellation), and the Exp(1) variate is E = -log U for U < 1/2,
-log1p(-V) otherwise. E agrees with the same formula evaluated in float64 to float32
rounding (about 1e-7 relative) over its whole range, [2^-65, 45]: the equivalent Gumbel
noise -log E reaches 45, beyond float64 uniform draws (about 36) and float32 ones (16).
Sampling is the exponential race argmax_v p_v / E_v, done in log space as
argmax_v log p_v - log E_v. Measured on one top token plus 4096 tokens each e^-16.5 times
less likely (131072 draws, CPU): this noise drew a tail token 35 times (36.6 expected),
`jax.random.categorical` with its float32 default 15 times; the noise costs about 1.7x
the float32 draw, small next to a network call.

Letters: S any leading (batch) shape, V vocabulary (MASK included).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from cofre_jax.diffusion import NEG_INF


def _unit_from_bits(hi: jax.Array, lo: jax.Array) -> jax.Array:
    """(N + 1/2) 2^-64 for N = hi 2^32 + lo, in float32 with full relative precision
    (the hi and lo terms are scaled separately, so tiny values keep 24 significant bits)."""
    hi_f = hi.astype(jnp.float32) * jnp.float32(2.0**-32)
    lo_f = (lo.astype(jnp.float32) + jnp.float32(0.5)) * jnp.float32(2.0**-64)
    return hi_f + lo_f


def exponential_from_bits(hi: jax.Array, lo: jax.Array) -> jax.Array:
    """Exp(1) variates from 64 random bits (two uint32 arrays of equal shape), float32.

    E = -log U with U = (N + 1/2) 2^-64 uniform in (0, 1). Where U < 1/2, -log U is
    accurate as is; where U >= 1/2 the small values of E are what matter (they decide
    rare-token wins), so E = -log1p(-V) with V = 1 - U formed from the complemented bits.
    """
    hi = hi.astype(jnp.uint32)
    lo = lo.astype(jnp.uint32)
    u = _unit_from_bits(hi, lo)
    v = _unit_from_bits(jnp.bitwise_not(hi), jnp.bitwise_not(lo))
    lower_half = hi < jnp.uint32(2**31)
    return jnp.where(lower_half, -jnp.log(u), -jnp.log1p(-v))


def exponential_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Exp(1) noise of the given shape with float64-grade tails (see the module docstring)."""
    bits_2xS = jax.random.bits(key, (2, *shape), jnp.uint32)
    return exponential_from_bits(bits_2xS[0], bits_2xS[1])


def sample_categorical(
    key: jax.Array, log_probs_SxV: jax.Array, *, from_probs: bool = False
) -> jax.Array:
    """Draws one index per row of the last axis: int32 of shape S.

    log_probs_SxV need not be normalised (any log-weights); with from_probs=True the
    input is probabilities instead. Exponential race argmax_v log p_v - log E_v with
    `exponential_noise`; zero-probability entries (log p = -inf or NEG_INF) never win
    while a row has any entry of positive probability.
    """
    log_probs_SxV = log_probs_SxV.astype(jnp.float32)
    if from_probs:
        log_probs_SxV = jnp.log(log_probs_SxV)
    noise_SxV = exponential_noise(key, log_probs_SxV.shape)
    score_SxV = log_probs_SxV - jnp.log(noise_SxV)
    # argmax(score) written as argmax(score == max(score)): the same first index of the
    # maximum, but XLA:CPU then computes the noise in vectorised elementwise code instead
    # of fusing it into argmax's (value, index) reduction, about 3x faster (measured at
    # 8 x 128 x 258: 3.3 ms instead of 9.6 ms).
    is_max_SxV = score_SxV == jnp.max(score_SxV, axis=-1, keepdims=True)
    return jnp.argmax(is_max_SxV, axis=-1).astype(jnp.int32)


def top_p_filter(log_probs_SxV: jax.Array, top_p: float) -> jax.Array:
    """Nucleus filter: keeps the smallest set of most likely tokens whose mass is >= top_p.

    Returns renormalised float32 log-probs with the dropped tokens at NEG_INF. Ties at the
    boundary are broken by token index (lower first), so the kept set is always minimal.
    top_p >= 1 returns the input unchanged (cast to float32).
    """
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    log_probs_SxV = log_probs_SxV.astype(jnp.float32)
    if top_p >= 1.0:
        return log_probs_SxV
    log_probs_SxV = jax.nn.log_softmax(log_probs_SxV, axis=-1)
    order_SxV = jnp.argsort(log_probs_SxV, axis=-1, stable=True, descending=True)
    sorted_probs_SxV = jnp.exp(jnp.take_along_axis(log_probs_SxV, order_SxV, axis=-1))
    # Mass strictly before each sorted token; shifting the inclusive cumsum (rather than
    # subtracting) avoids cancellation. A token is kept iff that mass is still < top_p,
    # so the top token is always kept and the kept prefix is the smallest with mass >= p.
    cumsum_SxV = jnp.cumsum(sorted_probs_SxV, axis=-1)
    mass_before_SxV = jnp.concatenate(
        [jnp.zeros_like(cumsum_SxV[..., :1]), cumsum_SxV[..., :-1]], axis=-1
    )
    keep_sorted_SxV = mass_before_SxV < top_p
    keep_SxV = jnp.put_along_axis(
        jnp.zeros_like(keep_sorted_SxV), order_SxV, keep_sorted_SxV, axis=-1, inplace=False
    )
    filtered_SxV = jnp.where(keep_SxV, log_probs_SxV, NEG_INF)
    return jax.nn.log_softmax(filtered_SxV, axis=-1)
