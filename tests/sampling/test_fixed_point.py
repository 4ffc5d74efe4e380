"""The budgeted FP sampler: 3SR extremes, the iteration bank under adaptive stopping,
reveal rules in its loop, and a tiny FP-MDLM (determinism, sharding).

`toy_fp_denoiser` (tests/sampler_fixtures.py) is a fixed-point denoiser whose contraction
rate depends on t (fast early, slow late), so adaptive stopping and the iteration bank are
exercised with exact, predictable counts and compile in a moment.

Shape legend: B batch, L length, D hidden, V vocabulary (MASK included), T steps.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_fixtures import (
    SCHEDULE,
    TOY_ADAPTIVE,
    TOY_EXACT,
    TOY_MASK,
    D,
    toy_params,
)
from tiny import fp_config, perturbed_init

from cofre_jax import sharding
from cofre_jax.config.typed import MeshConfig
from cofre_jax.models import build_model
from cofre_jax.sampling import (
    ALLOCATION_SCHEDULES,
    PUBLISHED_3SR,
    ReuseCoefficients,
    StepCost,
    ancestral_times,
    ancestral_update,
    confidence_update,
    fixed_point,
    make_fp_denoise_fn,
    plan_budget,
)

PUBLISHED = PUBLISHED_3SR

# Every toy run has T = 4, batch 3, length 5: one compilation per (denoiser, mode, rule).
TOY_STEPS = 4


def _toy_sample(denoise_fn, plan, key=0, z_init_BxL=None, reveal_fn=ancestral_update,
                warm_start="3sr", coefficients=PUBLISHED, batch=3, length=5):  # fmt: skip
    return fixed_point.fp_sample(
        denoise_fn, toy_params(), jax.random.PRNGKey(key), plan, batch_size=batch,
        seq_len=length, hidden_size=D, mask_id=TOY_MASK, mask_prob_fn=SCHEDULE.mask_prob,
        reveal_fn=reveal_fn, warm_start=warm_start, coefficients=coefficients,
        z_init_BxL=z_init_BxL,
    )  # fmt: skip


def _assert_same(a, b):
    for name, x, y in zip(a._fields, a, b):
        np.testing.assert_array_equal(x, y, err_msg=name)


TOY_PLAN = plan_budget(24, StepCost(2, 1), steps=TOY_STEPS, schedule="decreasing")


def test_3sr_extremes_equal_cold_start_and_full_reuse_exactly():
    cold, reuse = (
        _toy_sample(TOY_EXACT, TOY_PLAN, warm_start="cold"),
        _toy_sample(TOY_EXACT, TOY_PLAN, warm_start="reuse"),
    )
    zeros, ones = ReuseCoefficients(0.0, 0.0, 0.0, 0.0), ReuseCoefficients(1.0, 1.0, 1.0, 1.0)
    _assert_same(_toy_sample(TOY_EXACT, TOY_PLAN, coefficients=zeros), cold)
    _assert_same(_toy_sample(TOY_EXACT, TOY_PLAN, coefficients=ones), reuse)
    published = _toy_sample(TOY_EXACT, TOY_PLAN)
    # Not vacuous: the starts differ after the first step ...
    for a, b in ((cold, reuse), (cold, published), (reuse, published)):
        assert not np.array_equal(a.residual_TxB[1:], b.residual_TxB[1:])
    # ... and the first step starts cold in every mode (same start, same solve).
    for out in (reuse, published):
        np.testing.assert_array_equal(out.residual_TxB[0], cold.residual_TxB[0])
    for out in (cold, reuse, published):  # the tolerance is off: exactly the plan
        assert int(out.block_passes) == TOY_PLAN.block_passes == 24
        np.testing.assert_array_equal(out.evals_T, TOY_PLAN.iterations_T)
        np.testing.assert_array_equal(out.block_passes_B, [24] * 3)


def _check_accounting(out, plan):
    evals_T, n_T = np.asarray(out.evals_T), np.asarray(plan.iterations_T)
    bank = 0
    for i in range(plan.steps):  # every step stays within its plan plus the bank
        assert 0 <= evals_T[i] <= n_T[i] + bank
        bank += n_T[i] - evals_T[i]
    iterations_TxB = np.asarray(out.iterations_TxB)
    np.testing.assert_array_equal(iterations_TxB.max(axis=1), evals_T)
    spent = plan.steps * plan.cost.base + plan.cost.per_iteration * evals_T.sum()
    assert int(out.block_passes) == spent <= plan.budget
    assert (np.asarray(out.block_passes_B) <= spent).all()
    return evals_T


def test_budget_never_exceeded_by_the_sampler_for_random_budgets_and_schedules():
    rng = np.random.default_rng(1)
    cost = StepCost(base=2, per_iteration=1)
    banked = 0
    for trial in range(8):  # budgets and schedules vary freely within one compilation
        b = int(rng.integers(TOY_STEPS * cost(1), 80))
        schedule = str(rng.choice(ALLOCATION_SCHEDULES))
        plan = plan_budget(b, cost, steps=TOY_STEPS, schedule=schedule)
        for denoise_fn in (TOY_EXACT, TOY_ADAPTIVE):
            out = _toy_sample(denoise_fn, plan, key=trial)
            evals_T = _check_accounting(out, plan)
            if denoise_fn is TOY_EXACT:
                np.testing.assert_array_equal(evals_T, plan.iterations_T)
            banked += int((evals_T > np.asarray(plan.iterations_T)).any())
    assert banked > 0  # some late step did use iterations banked by early ones


def test_adaptive_stopping_hands_unspent_iterations_to_later_steps():
    # Steps at t = 1, 0.75, 0.5 contract fast; the last one, at t = 0.25, slowly.
    plan = plan_budget(24, StepCost(2, 1), steps=TOY_STEPS, schedule="fixed")
    assert plan.iterations_T == (4, 4, 4, 4)
    out = _toy_sample(TOY_ADAPTIVE, plan)
    evals_T = _check_accounting(out, plan)
    assert (evals_T[:3] < 4).all()  # converged early ...
    assert np.asarray(out.residual_TxB)[:3].max() <= 1e-3
    assert evals_T[3] == 4 + (12 - evals_T[:3].sum())  # ... and the last step got the rest
    assert int(out.block_passes) == 24


def _partly_visible(key):
    k1, k2 = jax.random.split(key)
    given_BxL = jax.random.bernoulli(k1, 0.4, (3, 5))
    return jnp.where(given_BxL, jax.random.randint(k2, (3, 5), 0, TOY_MASK), TOY_MASK)


def test_visible_tokens_never_change():
    """Step by step through the jitted transition: visible tokens (given or revealed)
    never change and none is left; the one-loop sampler gives the same result."""
    z_init_BxL = _partly_visible(jax.random.PRNGKey(4))
    out = _toy_sample(TOY_ADAPTIVE, TOY_PLAN, key=9, z_init_BxL=z_init_BxL)

    params, iterations_T = toy_params(), jnp.asarray(TOY_PLAN.iterations_T)
    step = jax.jit(lambda state, t, s: fixed_point.make_fp_transition(
        TOY_ADAPTIVE, params, iterations_T, PUBLISHED, mask_id=TOY_MASK,
        mask_prob_fn=SCHEDULE.mask_prob, reveal_fn=ancestral_update,
        warm_start="3sr", top_p=1.0,
    )(state, t, s))  # fmt: skip
    state = fixed_point.FPSampleState(
        z_init_BxL, z_init_BxL, jnp.zeros((3, 5, D)), jnp.int32(0), jnp.int32(0),
        jax.random.PRNGKey(9), jnp.zeros((TOY_STEPS, 3), jnp.int32),
        jnp.zeros((TOY_STEPS,), jnp.int32), jnp.zeros((TOY_STEPS, 3)),
    )  # fmt: skip
    times_T = np.asarray(ancestral_times(TOY_STEPS, 1e-5))
    for i in range(TOY_STEPS):
        new = step(state, times_T[i], times_T[i + 1])
        old_BxL, new_BxL = np.asarray(state.z_BxL), np.asarray(new.z_BxL)
        visible_BxL = old_BxL != TOY_MASK
        np.testing.assert_array_equal(new_BxL[visible_BxL], old_BxL[visible_BxL])
        state = new
    assert not (np.asarray(state.z_BxL) == TOY_MASK).any()
    np.testing.assert_array_equal(out.tokens_BxL, state.z_BxL)
    np.testing.assert_array_equal(out.evals_T, state.evals_T)


def test_the_same_sampler_decodes_by_confidence():
    """MaskGIT's rule in the FP sampler's loop: given tokens kept, every mask resolved."""
    z_init_BxL = _partly_visible(jax.random.PRNGKey(4))
    given_BxL = np.asarray(z_init_BxL) != TOY_MASK
    out = _toy_sample(TOY_ADAPTIVE, TOY_PLAN, z_init_BxL=z_init_BxL,
                      reveal_fn=confidence_update)  # fmt: skip
    tokens_BxL = np.asarray(out.tokens_BxL)
    np.testing.assert_array_equal(tokens_BxL[given_BxL], np.asarray(z_init_BxL)[given_BxL])
    assert not (tokens_BxL == TOY_MASK).any()
    _check_accounting(out, TOY_PLAN)


def test_fp_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warm_start"):
        _toy_sample(TOY_EXACT, TOY_PLAN, warm_start="hot")
    with pytest.raises(ValueError, match="z_init_BxL"):
        _toy_sample(TOY_EXACT, TOY_PLAN, z_init_BxL=jnp.full((2, 5), TOY_MASK, jnp.int32))
    with pytest.raises(ValueError, match="MDLM sampler"):
        _toy_sample(TOY_EXACT, plan_budget(24, StepCost(12, 0)))


# ---------------------------------------------------------------------------------------
# The sampler on a tiny FP-MDLM (the model's h0_fn path, determinism, sharding).
# ---------------------------------------------------------------------------------------


@functools.cache
def _tiny_fp():
    """(config, params, denoise_fn) of a tiny FP-MDLM."""
    config = fp_config()
    model = build_model(config.model, config.fixed_point)
    params = perturbed_init(model, 16)
    return config, params, make_fp_denoise_fn(model, SCHEDULE.total_noise)


TINY_PLAN = plan_budget(44, StepCost(2, 1), steps=6, schedule="decreasing")


def _tiny_sample(coefficients=PUBLISHED, key=1):
    config, params, denoise_fn = _tiny_fp()
    return fixed_point.fp_sample(
        denoise_fn, params, jax.random.PRNGKey(key), TINY_PLAN, batch_size=4, seq_len=16,
        hidden_size=32, mask_id=config.model.mask_id, mask_prob_fn=SCHEDULE.mask_prob,
        warm_start="3sr", coefficients=coefficients,
    )  # fmt: skip


def test_fp_mdlm_sampler_is_deterministic_and_uses_the_warm_start():
    a, b, c = _tiny_sample(key=5), _tiny_sample(key=5), _tiny_sample(key=6)
    _assert_same(a, b)
    assert not np.array_equal(a.tokens_BxL, c.tokens_BxL)
    tokens_BxL = np.asarray(a.tokens_BxL)
    assert ((tokens_BxL >= 0) & (tokens_BxL < _tiny_fp()[0].model.mask_id)).all()
    assert int(a.block_passes) == 44 and a.evals_T.tolist() == list(TINY_PLAN.iterations_T)
    # The model builds its start from h0_fn: 3SR with all gammas 0 (a cold start) solves
    # the same first step but differs later.
    cold = _tiny_sample(ReuseCoefficients(0.0, 0.0, 0.0, 0.0), key=5)
    np.testing.assert_array_equal(cold.residual_TxB[0], a.residual_TxB[0])
    assert not np.array_equal(cold.residual_TxB[1:], a.residual_TxB[1:])


@pytest.mark.slow  # two more FP-MDLM sampler compilations; the toy test covers the rule
def test_3sr_extremes_on_the_fp_mdlm():
    config, params, denoise_fn = _tiny_fp()

    def run(warm_start, coefficients=PUBLISHED):
        return fixed_point.fp_sample(
            denoise_fn, params, jax.random.PRNGKey(5), TINY_PLAN, batch_size=4, seq_len=16,
            hidden_size=32, mask_id=config.model.mask_id, mask_prob_fn=SCHEDULE.mask_prob,
            warm_start=warm_start, coefficients=coefficients,
        )  # fmt: skip

    _assert_same(run("3sr", ReuseCoefficients(0.0, 0.0, 0.0, 0.0)), run("cold"))
    _assert_same(run("3sr", ReuseCoefficients(1.0, 1.0, 1.0, 1.0)), run("reuse"))


def test_sampler_runs_under_a_sharded_jit_on_8_devices():
    """Batch over (data, fsdp), parameters by the partition rules (tensor axis too)."""
    assert jax.device_count() == 8
    config, params, denoise_fn = _tiny_fp()
    mesh = sharding.make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    fn = functools.partial(
        fixed_point.fp_sample_fn, denoise_fn, cost=TINY_PLAN.cost, hidden_size=32,
        mask_id=config.model.mask_id, mask_prob_fn=SCHEDULE.mask_prob, warm_start="3sr",
    )  # fmt: skip
    param_shardings = sharding.tree_shardings(params, mesh)
    batch_sh, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    out_sh = fixed_point.FPSampleOutput(batch_sh, rep, batch_sh, rep, rep, rep)
    sharded = jax.jit(fn, in_shardings=(param_shardings, rep, rep, batch_sh), out_shardings=out_sh)
    z_BxL = jnp.full((4, 16), config.model.mask_id, jnp.int32)
    args = (params, jax.random.PRNGKey(5), jnp.asarray(TINY_PLAN.iterations_T), z_BxL)
    placed = jax.device_put(args, (param_shardings, rep, rep, batch_sh))
    assert {len(x.sharding.device_set) for x in jax.tree.leaves(placed[0])} == {8}
    out = sharded(*placed)
    assert len(out.tokens_BxL.sharding.device_set) == 8
    # Tensor-parallel matmuls sum in another order: states agree to rounding, and the
    # sampled tokens and every count exactly.
    single = _tiny_sample(key=5)
    for name in ("tokens_BxL", "block_passes", "block_passes_B", "iterations_TxB", "evals_T"):
        np.testing.assert_array_equal(getattr(out, name), getattr(single, name), err_msg=name)
    np.testing.assert_allclose(out.residual_TxB, single.residual_TxB, rtol=1e-2)
