"""Categorical noise with float64 resolution, sample_categorical and the nucleus filter.

Shape legend: V vocabulary, N draws or rows.
"""

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.diffusion import NEG_INF
from cofre_jax.sampling import noise

# ---------------------------------------------------------------------------------------
# Nucleus filter.
# ---------------------------------------------------------------------------------------


# Dropped tokens sit at NEG_INF (or -inf); kept ones are log-probs of a renormalised set.
_DROPPED = NEG_INF / 2


def test_top_p_filter_examples():
    log_probs_V = jnp.log(jnp.array([0.1, 0.5, 0.15, 0.25]))

    def kept(p):
        return set(np.flatnonzero(np.asarray(noise.top_p_filter(log_probs_V, p)) > _DROPPED))

    assert kept(0.4) == {1}
    assert kept(0.7) == {1, 3}
    assert kept(0.8) == {1, 3, 2}
    assert kept(1.0) == {0, 1, 2, 3}
    filtered_V = np.exp(noise.top_p_filter(log_probs_V, 0.7))
    np.testing.assert_allclose(filtered_V, [0, 0.5 / 0.75, 0, 0.25 / 0.75], rtol=1e-5)


def test_top_p_filter_keeps_the_smallest_set_with_enough_mass():
    rng = np.random.default_rng(0)
    probs_NxV = rng.dirichlet(np.full(12, 0.5), size=64)
    for top_p in (0.3, 0.6, 0.9, 0.99):
        keep_NxV = np.asarray(noise.top_p_filter(jnp.log(probs_NxV), top_p)) > _DROPPED
        for probs_V, keep_V in zip(probs_NxV, keep_NxV):
            kept_V = probs_V[keep_V]
            # Top-k by probability, mass >= p, and dropping its least likely member falls short.
            assert kept_V.min() >= probs_V[~keep_V].max(initial=0.0)
            assert kept_V.sum() >= top_p - 1e-6
            assert kept_V.sum() - kept_V.min() < top_p + 1e-6


# ---------------------------------------------------------------------------------------
# Categorical noise.
# ---------------------------------------------------------------------------------------


def _reference_exponential(hi_N, lo_N):
    """float64 reference: -log U for the 64-bit uniform U = (hi 2^32 + lo + 1/2) / 2^64.

    Near 1 it uses V = 1 - U, exact from the complemented words, so no digits are lost.
    """
    hi_N, lo_N = hi_N.astype(np.float64), lo_N.astype(np.float64)
    u_N = (hi_N * 2.0**32 + lo_N + 0.5) / 2.0**64
    v_N = ((2.0**32 - 1 - hi_N) * 2.0**32 + (2.0**32 - 1 - lo_N) + 0.5) / 2.0**64
    # np.where evaluates both branches; the discarded one may divide by zero.
    with np.errstate(divide="ignore"):
        return np.where(hi_N < 2.0**31, -np.log(u_N), -np.log1p(-v_N))


def _exponential(hi, lo):
    return np.asarray(
        noise.exponential_from_bits(jnp.asarray(hi, jnp.uint32), jnp.asarray(lo, jnp.uint32))
    )


def test_exponential_from_bits_matches_a_float64_reference():
    rng = np.random.default_rng(1)
    hi_N = rng.integers(0, 2**32, size=20000, dtype=np.uint32)
    lo_N = rng.integers(0, 2**32, size=20000, dtype=np.uint32)
    # Both ends of (0, 1), the middle, and tiny values on either side.
    hi_N[:6] = [0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0, 0xFFFFFFFF]
    lo_N[:6] = [0, 0xFFFFFFFF, 0xFFFFFFFF, 0, 12345, 0xFFFF0000]
    got_N = _exponential(hi_N, lo_N)
    want_N = _reference_exponential(hi_N, lo_N)
    # Relative accuracy everywhere, including E ~ 2^-65: this is what decides rare tokens.
    np.testing.assert_allclose(got_N, want_N, rtol=2e-6)
    np.testing.assert_allclose(-np.log(got_N), -np.log(want_N), rtol=2e-6, atol=2e-6)


def test_noise_tails_reach_beyond_float32_and_float64_uniforms():
    """As Gumbel noise -log E: top beyond what float32 (~16.6) or 53-bit float64 (~36.7)
    uniforms can produce, and the bottom below float64's."""
    e_top, e_bottom = _exponential([0xFFFFFFFF, 0], [0xFFFFFFFF, 0])
    gumbel_top, gumbel_bottom = -np.log(np.float64(e_top)), -np.log(np.float64(e_bottom))
    assert np.isfinite([gumbel_top, gumbel_bottom]).all()
    u32_max = np.nextafter(np.float32(1), np.float32(0)).astype(np.float64)
    float32_top = -np.log(-np.log(u32_max))
    float64_top = -np.log(-np.log1p(-(2.0**-53)))
    float64_bottom = -np.log(-np.log(2.0**-53))
    assert float32_top < 17 and float64_top < 37
    assert gumbel_top > 45.0 > float64_top
    assert gumbel_bottom < -3.8 < float64_bottom


def test_exponential_noise_moments():
    e_N = np.asarray(noise.exponential_noise(jax.random.PRNGKey(0), (1 << 18,)), np.float64)
    assert (e_N > 0).all() and np.isfinite(e_N).all()
    np.testing.assert_allclose(e_N.mean(), 1.0, atol=0.01)  # 5 sigma = 5 / sqrt(2^18)
    gumbel_N = -np.log(e_N)
    np.testing.assert_allclose(gumbel_N.mean(), np.euler_gamma, atol=0.015)
    np.testing.assert_allclose(gumbel_N.var(), np.pi**2 / 6, atol=0.05)


def test_sample_categorical_frequencies():
    probs_V = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    n = 40000
    log_probs_NxV = jnp.broadcast_to(jnp.log(jnp.asarray(probs_V, jnp.float32)), (n, 5))
    draws_N = np.asarray(noise.sample_categorical(jax.random.PRNGKey(2), log_probs_NxV))
    assert draws_N.dtype == np.int32
    freq_V = np.bincount(draws_N, minlength=5) / n
    sigma_V = np.sqrt(probs_V * (1 - probs_V) / n)
    np.testing.assert_array_less(np.abs(freq_V - probs_V), 4.5 * sigma_V + 1e-9)
