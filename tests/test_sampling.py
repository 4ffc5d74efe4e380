"""Invariants of the ancestral sampler and its noise/filter helpers.

Shape legend: B batch, L length, V vocabulary (MASK included), N draws.
Toy denoisers take their log-probs from `params`, so one function object (one compiled
sampler per size) serves many tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cofre_jax import sampling
from cofre_jax.diffusion import NEG_INF

V = 6
MASK = V - 1
L = 5


def _loglinear(t):
    return (1.0 - 1e-3) * t


def _forbid_mask(logits_SxV):
    return jnp.where(jnp.arange(logits_SxV.shape[-1]) == MASK, -jnp.inf, logits_SxV)


def _subs(logits_BxLxV, z_BxL):
    """SUBS: MASK never predicted; a visible token is carried over with probability 1."""
    logits_BxLxV = _forbid_mask(logits_BxLxV)
    visible_BxLx1 = (z_BxL != MASK)[..., None]
    carry_BxLxV = jnp.where(jax.nn.one_hot(z_BxL, logits_BxLxV.shape[-1]) > 0, 0.0, -jnp.inf)
    return jnp.where(visible_BxLx1, carry_BxLxV, jax.nn.log_softmax(logits_BxLxV, axis=-1))


def factorised_denoiser(params, z_BxL, t_B):
    """t- and z-independent: fixed log-probs per position."""
    logits_BxLxV = jnp.broadcast_to(params["logits_LxV"], (*z_BxL.shape, V))
    return _subs(logits_BxLxV, z_BxL)


# Appended to while `contextual_denoiser` is traced (a Python side effect), never when the
# compiled sampler runs: counts compilations.
CONTEXTUAL_TRACES = []


def contextual_denoiser(params, z_BxL, t_B):
    """t-independent but z-dependent: favours repeating the visible left neighbour."""
    CONTEXTUAL_TRACES.append(1)
    left_BxL = jnp.pad(z_BxL[:, :-1], ((0, 0), (1, 0)), constant_values=MASK)
    bonus_BxLxV = 3.0 * jax.nn.one_hot(left_BxL, V) * (left_BxL != MASK)[..., None]
    return _subs(params["logits_LxV"][None] + bonus_BxLxV, z_BxL)


def leaky_denoiser(params, z_BxL, t_B):
    """A bad model that puts almost all mass on MASK: the sampler must still never draw it."""
    logits_BxLxV = jnp.broadcast_to(params["logits_LxV"], (*z_BxL.shape, V))
    return jax.nn.log_softmax(logits_BxLxV.at[..., MASK].set(20.0), axis=-1)


def _params(seed=0, length=L):
    return {"logits_LxV": jax.random.normal(jax.random.PRNGKey(seed), (length, V))}


def _sample(denoise_fn, key, params=None, **kw):
    kw = {"batch_size": 4, "seq_len": L, "steps": 16, **kw}
    return sampling.ancestral_sample(
        denoise_fn,
        _params() if params is None else params,
        key,
        mask_id=MASK,
        mask_prob_fn=_loglinear,
        **kw,
    )


def _partly_visible(key, batch, length):
    k1, k2 = jax.random.split(key)
    tokens_BxL = jax.random.randint(k1, (batch, length), 0, MASK)
    visible_BxL = jax.random.bernoulli(k2, 0.4, (batch, length))
    return jnp.where(visible_BxL, tokens_BxL, MASK), visible_BxL


# ---------------------------------------------------------------------------------------
# Sampler invariants.
# ---------------------------------------------------------------------------------------


def test_visible_tokens_kept_and_revealed_tokens_never_change():
    """Runs the transition by hand from a partly visible start: no token, once visible,
    changes; masks only decrease; none is left. The jitted sampler (one `lax` loop) gives
    exactly the same tokens and call count for the same key."""
    steps, final_eps = 16, 1e-5
    params = _params()
    key = jax.random.PRNGKey(2)
    z_init_BxL, given_BxL = _partly_visible(jax.random.PRNGKey(1), 4, L)
    assert bool(given_BxL.any()) and bool((~given_BxL).any())

    step_fn = jax.jit(
        lambda p, state, t, s: sampling.make_ancestral_transition(
            contextual_denoiser, p, mask_id=MASK, mask_prob_fn=_loglinear
        )(state, t, s)
    )
    state = sampling.init_state(contextual_denoiser, params, z_init_BxL, key)
    times_T = np.asarray(sampling.ancestral_times(steps, final_eps))
    assert times_T[-1] == 0.0  # the last step resolves every mask
    for i in range(steps):
        new = step_fn(params, state, times_T[i], times_T[i + 1])
        old_BxL, new_BxL = np.asarray(state.z_BxL), np.asarray(new.z_BxL)
        visible_BxL = old_BxL != MASK
        np.testing.assert_array_equal(new_BxL[visible_BxL], old_BxL[visible_BxL])
        assert (new_BxL == MASK).sum() <= (old_BxL == MASK).sum()
        state = new

    out = _sample(contextual_denoiser, key, steps=steps, final_eps=final_eps, z_init_BxL=z_init_BxL)
    tokens_BxL = np.asarray(out.tokens_BxL)
    assert tokens_BxL.dtype == np.int32
    assert ((tokens_BxL >= 0) & (tokens_BxL < MASK)).all()
    np.testing.assert_array_equal(tokens_BxL[given_BxL], np.asarray(z_init_BxL)[given_BxL])
    np.testing.assert_array_equal(tokens_BxL, state.z_BxL)
    assert int(out.network_calls) == int(state.network_calls)


def test_mask_never_sampled_even_if_model_leaks_mass_to_it():
    out = _sample(leaky_denoiser, jax.random.PRNGKey(0), batch_size=8, steps=4)
    assert not (np.asarray(out.tokens_BxL) == MASK).any()


_jitted_update = jax.jit(
    lambda key, z, log_probs, t, s: sampling.ancestral_update(
        key, z, log_probs, t, s, mask_prob_fn=_loglinear, mask_id=MASK
    )
)


@pytest.mark.parametrize("t, s, expected", [(1.0, 0.5, 0.5), (0.8, 0.6, 0.25), (0.1, 0.0, 1.0)])
def test_reveal_fraction_matches_schedule(t, s, expected):
    """A mask is revealed w.p. (t - s) / t under the log-linear schedule; s = 0 reveals all."""
    batch, length = 64, 32
    z_BxL = jnp.full((batch, length), MASK, jnp.int32)
    log_probs_BxLxV = jnp.zeros((batch, length, V)).at[..., MASK].set(NEG_INF)
    new_BxL = _jitted_update(jax.random.PRNGKey(5), z_BxL, log_probs_BxLxV, t, s)
    n = batch * length
    revealed = int((np.asarray(new_BxL) != MASK).sum())
    assert abs(revealed - n * expected) <= 5 * np.sqrt(n * expected * (1 - expected))


def test_deterministic_under_seed_varies_across_seeds_and_compiles_once():
    all_masked_BxL = jnp.full((4, L), MASK, jnp.int32)

    def run(key, params=None):
        return _sample(contextual_denoiser, key, params=params, z_init_BxL=all_masked_BxL)

    a = run(jax.random.PRNGKey(7))
    traces = len(CONTEXTUAL_TRACES)
    assert traces > 0
    b = run(jax.random.PRNGKey(7))
    c = run(jax.random.PRNGKey(8))
    run(jax.random.PRNGKey(9), params=_params(seed=9))
    assert len(CONTEXTUAL_TRACES) == traces  # new keys and params reuse the compiled sampler
    np.testing.assert_array_equal(a.tokens_BxL, b.tokens_BxL)
    assert int(a.network_calls) == int(b.network_calls)
    assert not np.array_equal(a.tokens_BxL, c.tokens_BxL)


def test_logit_reuse_skips_the_network_and_is_exact_for_time_free_models():
    executed = []

    def counted_denoiser(params, z_BxL, t_B):
        # Runs on the host each time the network really executes (not when cond skips it).
        jax.debug.callback(lambda: executed.append(1))
        return contextual_denoiser(params, z_BxL, t_B)

    batch, steps = 2, 200
    key = jax.random.PRNGKey(11)
    reuse = _sample(counted_denoiser, key, batch_size=batch, steps=steps, reuse_logits=True)
    calls_reuse = int(reuse.network_calls)
    assert len(executed) == calls_reuse
    # At most one call per step that revealed something, plus the first.
    assert 1 <= calls_reuse <= min(steps, batch * L + 1) < steps

    executed.clear()
    fresh = _sample(counted_denoiser, key, batch_size=batch, steps=steps, reuse_logits=False)
    assert int(fresh.network_calls) == steps == len(executed)
    np.testing.assert_array_equal(reuse.tokens_BxL, fresh.tokens_BxL)


def test_marginals_of_a_factorised_model_match_its_probabilities():
    """Each position of a t-independent factorised model is an independent draw from p."""
    batch, length = 4000, 3
    params = _params(seed=3, length=length)
    out = _sample(
        factorised_denoiser,
        jax.random.PRNGKey(12),
        params=params,
        batch_size=batch,
        seq_len=length,
        steps=6,
    )
    probs_LxV = np.asarray(jax.nn.softmax(_forbid_mask(params["logits_LxV"]), axis=-1))
    tokens_BxL = np.asarray(out.tokens_BxL)
    for pos in range(length):
        freq_V = np.bincount(tokens_BxL[:, pos], minlength=V) / batch
        sigma_V = np.sqrt(probs_LxV[pos] * (1 - probs_LxV[pos]) / batch)
        # 4.5 sigma over 18 comparisons: a false alarm is far below 1e-4.
        np.testing.assert_array_less(np.abs(freq_V - probs_LxV[pos]), 4.5 * sigma_V + 1e-9)


def test_top_p_sampler_stays_inside_the_nucleus():
    batch, length = 512, 2
    logits_LxV = jnp.log(
        jnp.array([[0.05, 0.5, 0.3, 0.1, 0.05, 0.0], [0.6, 0.1, 0.1, 0.1, 0.1, 0]])
    )
    out = _sample(
        factorised_denoiser,
        jax.random.PRNGKey(13),
        params={"logits_LxV": logits_LxV},
        batch_size=batch,
        seq_len=length,
        steps=3,
        top_p=0.65,
    )
    tokens_BxL = np.asarray(out.tokens_BxL)
    assert set(np.unique(tokens_BxL[:, 0])) == {1, 2}
    assert set(np.unique(tokens_BxL[:, 1])) == {0, 1}  # 0.6 + first of the ties at 0.1


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="steps"):
        _sample(factorised_denoiser, jax.random.PRNGKey(0), steps=0)
    with pytest.raises(ValueError, match="z_init_BxL"):
        _sample(
            factorised_denoiser,
            jax.random.PRNGKey(0),
            z_init_BxL=jnp.full((3, L), MASK, jnp.int32),
        )
    with pytest.raises(ValueError, match="top_p"):
        _sample(factorised_denoiser, jax.random.PRNGKey(0), top_p=1.5)


# ---------------------------------------------------------------------------------------
# Nucleus filter.
# ---------------------------------------------------------------------------------------


# Dropped tokens sit at NEG_INF (or -inf); kept ones are log-probs of a renormalised set.
_DROPPED = NEG_INF / 2


def test_top_p_filter_examples():
    log_probs_V = jnp.log(jnp.array([0.1, 0.5, 0.15, 0.25]))

    def kept(p):
        return set(np.flatnonzero(np.asarray(sampling.top_p_filter(log_probs_V, p)) > _DROPPED))

    assert kept(0.4) == {1}
    assert kept(0.7) == {1, 3}
    assert kept(0.8) == {1, 3, 2}
    assert kept(1.0) == {0, 1, 2, 3}
    filtered_V = np.exp(sampling.top_p_filter(log_probs_V, 0.7))
    np.testing.assert_allclose(filtered_V, [0, 0.5 / 0.75, 0, 0.25 / 0.75], rtol=1e-5)


def test_top_p_filter_keeps_the_smallest_set_with_enough_mass():
    rng = np.random.default_rng(0)
    probs_NxV = rng.dirichlet(np.full(12, 0.5), size=64)
    for top_p in (0.3, 0.6, 0.9, 0.99):
        keep_NxV = np.asarray(sampling.top_p_filter(jnp.log(probs_NxV), top_p)) > _DROPPED
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
        sampling.exponential_from_bits(jnp.asarray(hi, jnp.uint32), jnp.asarray(lo, jnp.uint32))
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
    e_N = np.asarray(sampling.exponential_noise(jax.random.PRNGKey(0), (1 << 18,)), np.float64)
    assert (e_N > 0).all() and np.isfinite(e_N).all()
    np.testing.assert_allclose(e_N.mean(), 1.0, atol=0.01)  # 5 sigma = 5 / sqrt(2^18)
    gumbel_N = -np.log(e_N)
    np.testing.assert_allclose(gumbel_N.mean(), np.euler_gamma, atol=0.015)
    np.testing.assert_allclose(gumbel_N.var(), np.pi**2 / 6, atol=0.05)


def test_sample_categorical_frequencies():
    probs_V = np.array([0.5, 0.3, 0.15, 0.05, 0.0])
    n = 40000
    log_probs_NxV = jnp.broadcast_to(jnp.log(jnp.asarray(probs_V, jnp.float32)), (n, 5))
    draws_N = np.asarray(sampling.sample_categorical(jax.random.PRNGKey(2), log_probs_NxV))
    assert draws_N.dtype == np.int32
    freq_V = np.bincount(draws_N, minlength=5) / n
    sigma_V = np.sqrt(probs_V * (1 - probs_V) / n)
    np.testing.assert_array_less(np.abs(freq_V - probs_V), 4.5 * sigma_V + 1e-9)
