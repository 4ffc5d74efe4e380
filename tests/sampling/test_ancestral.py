"""Invariants of MDLM's ancestral sampler, its budget form and the condition it threads.

Shape legend: B batch, L length, V vocabulary (MASK included).
Toy denoisers take their log-probs from `params`, so one function object (one compiled
sampler per size) serves many tests.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cofre_jax.sampling import StepCost, ancestral, loop, plan_budget

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


def factorised_denoiser(params, z_BxL, t_B, cond):
    """t- and z-independent: fixed log-probs per position."""
    logits_BxLxV = jnp.broadcast_to(params["logits_LxV"], (*z_BxL.shape, V))
    return _subs(logits_BxLxV, z_BxL)


# Appended to while `contextual_denoiser` is traced (a Python side effect), never when the
# compiled sampler runs: counts compilations.
CONTEXTUAL_TRACES = []


def contextual_denoiser(params, z_BxL, t_B, cond):
    """t-independent but z-dependent: favours repeating the visible left neighbour."""
    CONTEXTUAL_TRACES.append(1)
    left_BxL = jnp.pad(z_BxL[:, :-1], ((0, 0), (1, 0)), constant_values=MASK)
    bonus_BxLxV = 3.0 * jax.nn.one_hot(left_BxL, V) * (left_BxL != MASK)[..., None]
    return _subs(params["logits_LxV"][None] + bonus_BxLxV, z_BxL)


def leaky_denoiser(params, z_BxL, t_B, cond):
    """A bad model that puts almost all mass on MASK: the sampler must still never draw it."""
    logits_BxLxV = jnp.broadcast_to(params["logits_LxV"], (*z_BxL.shape, V))
    return jax.nn.log_softmax(logits_BxLxV.at[..., MASK].set(20.0), axis=-1)


def _params(seed=0, length=L):
    return {"logits_LxV": jax.random.normal(jax.random.PRNGKey(seed), (length, V))}


def _sample(denoise_fn, key, params=None, **kw):
    kw = {"batch_size": 4, "seq_len": L, "steps": 16, **kw}
    return ancestral.ancestral_sample(
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
        lambda p, state, t, s: ancestral.make_ancestral_transition(
            contextual_denoiser, p, mask_id=MASK, mask_prob_fn=_loglinear
        )(state, t, s)
    )
    state = ancestral.init_state(contextual_denoiser, params, z_init_BxL, key)
    times_T = np.asarray(loop.ancestral_times(steps, final_eps))
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

    def counted_denoiser(params, z_BxL, t_B, cond):
        # Runs on the host each time the network really executes (not when cond skips it).
        jax.debug.callback(lambda: executed.append(1))
        return contextual_denoiser(params, z_BxL, t_B, cond)

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


def test_budget_form_spends_calls_times_layers_and_refuses_an_fp_plan():
    plan = plan_budget(40, StepCost(base=3, per_iteration=0))  # 13 steps of 3 blocks
    out = ancestral.ancestral_sample_with_budget(
        contextual_denoiser, _params(), jax.random.PRNGKey(3), plan, batch_size=2, seq_len=L,
        mask_id=MASK, mask_prob_fn=_loglinear,
    )  # fmt: skip
    assert plan.steps == 13 and int(out.network_calls) <= 13
    assert int(out.block_passes) == 3 * int(out.network_calls)
    with pytest.raises(ValueError, match="FP sampler"):
        ancestral.ancestral_sample_with_budget(None, None, None, plan_budget(24, StepCost(2, 1)))


# Appended to while `conditional_denoiser` is traced: counts compilations.
CONDITIONAL_TRACES = []


def conditional_denoiser(params, z_BxL, t_B, cond):
    """Every row favours its own token cond["token_B"] (a class label, say)."""
    CONDITIONAL_TRACES.append(1)
    bonus_BxLxV = 6.0 * jax.nn.one_hot(cond["token_B"], V)[:, None, :]
    return _subs(params["logits_LxV"][None] + bonus_BxLxV, z_BxL)


def test_condition_is_traced_through_the_jitted_sampler():
    """A new condition batch changes the samples and reuses the compiled sampler."""

    def run(tokens):
        cond = {"token_B": jnp.asarray(tokens, jnp.int32)}
        return _sample(conditional_denoiser, jax.random.PRNGKey(4), batch_size=4, cond=cond)

    a = np.asarray(run([0, 1, 2, 3]).tokens_BxL)
    traces = len(CONDITIONAL_TRACES)
    b = np.asarray(run([3, 3, 0, 0]).tokens_BxL)
    assert len(CONDITIONAL_TRACES) == traces  # no recompilation for new labels
    assert (a == np.arange(4)[:, None]).mean() > 0.5
    assert (b == np.array([3, 3, 0, 0])[:, None]).mean() > 0.5
