"""The budgeted sampler: allocation plans, 3SR warm starts, adaptive stopping, sharding.

Two denoisers: a tiny FP-MDLM (hidden 32, length 16) for the warm-start identities and
the sharded run, and `toy_fp_denoiser`, a fixed-point denoiser whose contraction rate
depends on t (fast early, slow late), so adaptive stopping and the iteration bank are
exercised with exact, predictable counts and compile in a moment.

Shape legend: B batch, L length, D hidden, V vocabulary (MASK included), T steps.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cofre_jax import (
    budget,
    checkpoint,
    diffusion,
    fixed_point,
    fp_sampling,
    generate,
    modes,
    sampling,
    sharding,
)
from cofre_jax.budget import BudgetError, StepCost, plan_budget
from cofre_jax.config.typed import ConfigError, MeshConfig, from_config_dict
from cofre_jax.fp_sampling import ReuseCoefficients
from cofre_jax.models import build_model
from configs import base

SCHEDULE = diffusion.make_schedule("loglinear", 1e-3)
PUBLISHED = fp_sampling.PUBLISHED_3SR


# ---------------------------------------------------------------------------------------
# Allocation plans (host arithmetic).
# ---------------------------------------------------------------------------------------


def test_plans_never_exceed_random_budgets_and_spend_all_they_can():
    rng = np.random.default_rng(0)
    plans = errors = 0
    for _ in range(3000):
        base_cost, per_iteration = int(rng.integers(0, 13)), int(rng.integers(0, 4))
        if base_cost + per_iteration == 0:
            continue
        cost = StepCost(base=base_cost, per_iteration=per_iteration)
        budget_b = int(rng.integers(1, 400))
        steps = None if rng.random() < 0.4 else int(rng.integers(1, 40))
        schedule = str(rng.choice(budget.ALLOCATION_SCHEDULES))
        min_iterations = int(rng.integers(0, 3))
        default = min_iterations + int(rng.integers(0, 10))
        try:
            plan = plan_budget(
                budget_b, cost, steps=steps, schedule=schedule, default_iterations=default,
                min_iterations=min_iterations,
            )  # fmt: skip
        except BudgetError as e:
            errors += 1
            floor = cost(min_iterations)
            if floor == 0:
                assert "at least one" in str(e)
                continue
            assert budget_b < (steps or 1) * floor, (budget_b, cost, steps, min_iterations)
            assert "below the minimum" in str(e)
            continue
        plans += 1
        n_T = np.asarray(plan.iterations_T)
        assert plan.block_passes == sum(cost(int(n)) for n in n_T) <= budget_b
        assert plan.steps == (steps or max(1, budget_b // cost(default)))
        if cost.per_iteration:
            assert (n_T >= min_iterations).all()
            # What is left cannot pay for one more iteration anywhere.
            assert budget_b - plan.block_passes < cost.per_iteration
        else:
            assert (n_T == 0).all()
    assert plans > 1000 and errors > 50


@pytest.mark.parametrize("steps", [1, 2, 7, 16])
def test_schedule_shapes(steps):
    cost = StepCost(2, 1)
    n = {s: np.asarray(plan_budget(steps * 12 + 5, cost, steps=steps, schedule=s).iterations_T)
         for s in budget.ALLOCATION_SCHEDULES}  # fmt: skip
    assert n["fixed"].max() - n["fixed"].min() <= 1
    for s in ("decreasing", "cosine", "front_loaded"):
        assert (np.diff(n[s]) <= 0).all(), (s, n[s])
    assert (np.diff(n["increasing"]) >= 0).all()
    if steps >= 7:
        assert n["decreasing"][0] > n["fixed"][0] > n["increasing"][0]
    assert len({int(v.sum()) for v in n.values()}) == 1  # same total, different spread


def test_published_accounting_and_mdlm_budget():
    fp = StepCost(base=2, per_iteration=1)  # FP-MDLM: 1 + N + 1
    assert plan_budget(96, fp, steps=8, schedule="fixed").iterations_T == (10,) * 8
    mdlm = StepCost(base=12, per_iteration=0)  # 12 blocks: budget 96 = 8 steps
    for b, steps in ((96, 8), (100, 8), (12, 1), (768, 64)):
        plan = plan_budget(b, mdlm)
        assert (plan.steps, plan.block_passes) == (steps, steps * 12)
    largest = budget.largest_remainder(10, np.array([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(largest, [4, 3, 3])  # ties go to the earlier step


def test_budget_below_one_step_is_a_clear_error():
    with pytest.raises(BudgetError, match=r"budget 2 block passes is below the minimum of 1"):
        plan_budget(2, StepCost(2, 1))
    with pytest.raises(BudgetError, match="below the minimum of 8 step"):
        plan_budget(90, StepCost(12, 0), steps=8)
    with pytest.raises(ValueError, match="unknown allocation schedule 'linear'"):
        plan_budget(96, StepCost(2, 1), schedule="linear")
    # Through the config, the error names the field.
    config = _fp_config(**{"sample.budget": 11, "sample.budget_steps": 4})
    with pytest.raises(ConfigError, match="'sample.budget'.*below the minimum of 4 step"):
        generate.sample_plan(config)


def test_sample_config_fields_are_validated():
    for field, value, allowed in (
        ("schedule", "linear", "one of"),
        ("warm_start", "hot", "one of"),
        ("reuse_changed", 1.5, r"\[0, 1\]"),
        ("budget", -1, ">= 0"),
        ("adaptive_tol", -0.1, ">= 0"),
    ):
        with pytest.raises(ConfigError, match=f"'sample.{field}' = .*allowed {allowed}"):
            _fp_config(**{f"sample.{field}": value})
    # budget 0: `steps` steps at eval_iterations (8 here), spread by the schedule.
    plan = generate.sample_plan(_fp_config(**{"sample.steps": 5, "sample.schedule": "fixed"}))
    assert plan.iterations_T == (8,) * 5 and plan.budget == 50


# ---------------------------------------------------------------------------------------
# 3SR coefficients.
# ---------------------------------------------------------------------------------------

M = 9  # MASK id of the handcrafted sequences


def test_three_state_gamma_matches_the_rule_on_handcrafted_transitions():
    z_prev_BxL = np.array([
        [M, M, M, M, M, M, M, M, M, M],  # nothing visible before
        [1, 2, M, M, M, M, M, M, M, M],
        [1, 2, 3, 4, 5, M, M, M, M, M],
        [1, 2, 3, 4, 5, 6, 7, 8, 0, 1],  # everything visible, unchanged
    ])  # fmt: skip
    z_BxL = np.array([
        [5, M, M, M, M, M, M, M, M, M],  # one revealed: v = 0.1
        [1, 2, 3, M, M, M, M, M, M, M],  # v = 0.3
        [1, 2, 3, 4, 5, 6, 7, M, M, M],  # v = 0.7
        [1, 2, 3, 4, 5, 6, 7, 8, 0, 1],  # v = 1
    ])  # fmt: skip
    for coeffs in (ReuseCoefficients(), ReuseCoefficients(0.9, 0.1, 0.5, 0.3)):
        vis, lo, hi, changed = coeffs
        masked = [lo + (hi - lo) * v for v in (0.1, 0.3, 0.7)]
        expected_BxL = np.array([
            [changed] + [masked[0]] * 9,
            [vis, vis, changed] + [masked[1]] * 7,
            [vis] * 5 + [changed] * 2 + [masked[2]] * 3,
            [vis] * 10,
        ])  # fmt: skip
        gamma_BxL = fp_sampling.three_state_gamma(jnp.asarray(z_BxL), jnp.asarray(z_prev_BxL),
                                                  coeffs, M)  # fmt: skip
        np.testing.assert_allclose(gamma_BxL, expected_BxL, rtol=1e-6)
    # Every mode starts cold: gamma is 0 on the first step whatever the tokens.
    for mode in ("reuse", "3sr"):
        gamma_BxL = fp_sampling.warm_start_gamma(mode, jnp.asarray(True), z_BxL, z_prev_BxL,
                                                 ReuseCoefficients(), M)  # fmt: skip
        assert not np.asarray(gamma_BxL).any()
    assert fp_sampling.warm_start_gamma("cold", False, z_BxL, z_prev_BxL, (), M) is None


# ---------------------------------------------------------------------------------------
# A toy fixed-point denoiser with t-dependent convergence (cheap to compile).
# ---------------------------------------------------------------------------------------

V, D = 6, 8
TOY_MASK = V - 1


def _toy_params():
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    return {"embed_VxD": jax.random.normal(k1, (V, D)), "head_DxV": jax.random.normal(k2, (D, V))}


def toy_fp_denoiser(params, z_BxL, t_B, h0_fn, num_iterations, *, tol):
    """h = c(t) h + h_pre, c = 0.01 for t > 0.4 (2 or 3 evaluations to tol 1e-3) and 0.9
    below (about 60): early steps finish early, late steps want more than planned."""
    h_pre_BxLxD = params["embed_VxD"][z_BxL]
    c_Bx1x1 = jnp.where(t_B > 0.4, 0.01, 0.9)[:, None, None]
    h0_BxLxD = h_pre_BxLxD if h0_fn is None else h0_fn(h_pre_BxLxD)
    spec = fixed_point.SolverSpec(method="picard", tol=tol, max_iter=1)
    h_BxLxD, stats = fixed_point.solve(
        lambda p, h, x: x[1] * h + x[0], None, h0_BxLxD, (h_pre_BxLxD, c_Bx1x1), spec,
        max_iter=num_iterations,
    )  # fmt: skip
    logits_BxLxV = jnp.einsum("bld,dv->blv", h_BxLxD, params["head_DxV"])
    log_probs = diffusion.subs_log_probs(logits_BxLxV, z_BxL, TOY_MASK)
    return fp_sampling.FPDenoiseOutput(log_probs, h_BxLxD, stats)


TOY_EXACT = functools.partial(toy_fp_denoiser, tol=0.0)
TOY_ADAPTIVE = functools.partial(toy_fp_denoiser, tol=1e-3)
# Every toy run has T = 4, batch 3, length 5: one compilation per (denoiser, mode, rule).
TOY_STEPS = 4


def _toy_sample(denoise_fn, plan, key=0, z_init_BxL=None, reveal_fn=sampling.ancestral_update,
                warm_start="3sr", coefficients=PUBLISHED, batch=3, length=5):  # fmt: skip
    return fp_sampling.fp_sample(
        denoise_fn, _toy_params(), jax.random.PRNGKey(key), plan, batch_size=batch,
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
        schedule = str(rng.choice(budget.ALLOCATION_SCHEDULES))
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

    params, iterations_T = _toy_params(), jnp.asarray(TOY_PLAN.iterations_T)
    step = jax.jit(lambda state, t, s: fp_sampling.make_fp_transition(
        TOY_ADAPTIVE, params, iterations_T, PUBLISHED, mask_id=TOY_MASK,
        mask_prob_fn=SCHEDULE.mask_prob, reveal_fn=sampling.ancestral_update,
        warm_start="3sr", top_p=1.0,
    )(state, t, s))  # fmt: skip
    state = fp_sampling.FPSampleState(
        z_init_BxL, z_init_BxL, jnp.zeros((3, 5, D)), jnp.int32(0), jnp.int32(0),
        jax.random.PRNGKey(9), jnp.zeros((TOY_STEPS, 3), jnp.int32),
        jnp.zeros((TOY_STEPS,), jnp.int32), jnp.zeros((TOY_STEPS, 3)),
    )  # fmt: skip
    times_T = np.asarray(sampling.ancestral_times(TOY_STEPS, 1e-5))
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
                      reveal_fn=sampling.confidence_update)  # fmt: skip
    tokens_BxL = np.asarray(out.tokens_BxL)
    np.testing.assert_array_equal(tokens_BxL[given_BxL], np.asarray(z_init_BxL)[given_BxL])
    assert not (tokens_BxL == TOY_MASK).any()
    _check_accounting(out, TOY_PLAN)


_confidence_step = jax.jit(
    lambda key, z, log_probs, t, s: sampling.confidence_update(
        key, z, log_probs, t, s, mask_prob_fn=SCHEDULE.mask_prob, mask_id=TOY_MASK
    )
)


def test_confidence_rule_follows_the_mask_schedule():
    """MaskGIT's rule keeps exactly floor(m(s) L) masks (the loop structure is shared)."""
    length = 12
    z_BxL = jnp.full((2, length), TOY_MASK, jnp.int32)
    log_probs_BxLxV = jax.nn.log_softmax(jax.random.normal(jax.random.PRNGKey(0), (2, length, V)))
    log_probs_BxLxV = log_probs_BxLxV.at[..., TOY_MASK].set(diffusion.NEG_INF)
    for t, s in ((1.0, 0.75), (0.75, 0.5), (0.5, 0.2), (0.2, 0.0)):
        new_BxL = _confidence_step(jax.random.PRNGKey(1), z_BxL, log_probs_BxLxV, t, s)
        expected = 0 if s == 0.0 else int(np.floor(float(SCHEDULE.mask_prob(s)) * length))
        np.testing.assert_array_equal((np.asarray(new_BxL) == TOY_MASK).sum(1), [expected] * 2)
        kept_BxL = np.asarray(z_BxL) != TOY_MASK
        np.testing.assert_array_equal(np.asarray(new_BxL)[kept_BxL], np.asarray(z_BxL)[kept_BxL])
        z_BxL = new_BxL


def test_fp_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="warm_start"):
        _toy_sample(TOY_EXACT, TOY_PLAN, warm_start="hot")
    with pytest.raises(ValueError, match="z_init_BxL"):
        _toy_sample(TOY_EXACT, TOY_PLAN, z_init_BxL=jnp.full((2, 5), TOY_MASK, jnp.int32))
    with pytest.raises(ValueError, match="MDLM sampler"):
        _toy_sample(TOY_EXACT, plan_budget(24, StepCost(12, 0)))
    with pytest.raises(ValueError, match="FP sampler"):
        sampling.ancestral_sample_with_budget(None, None, None, TOY_PLAN)


# ---------------------------------------------------------------------------------------
# The sampler on a tiny FP-MDLM (the model's h0_fn path, determinism, sharding).
# ---------------------------------------------------------------------------------------


def _fp_config(**overrides):
    cfg = base.get_config()
    cfg.model.kind = "fp_mdlm"
    cfg.model.hidden_size, cfg.model.num_heads, cfg.model.cond_dim = 32, 2, 16
    cfg.model.dropout, cfg.model.dtype = 0.0, "float32"
    cfg.data.source, cfg.data.tokenizer, cfg.data.seq_len = "embedded", "byte", 16
    for dotted, value in overrides.items():
        section, key = dotted.split(".")
        cfg[section][key] = value
    return from_config_dict(cfg)


def _perturbed_init(model, seq_len):
    """Zero-initialised adaLN and head make an untrained model nearly token-independent;
    perturbed weights make the sampler's choices depend on the states."""

    @jax.jit
    def init():  # one compilation instead of one per eagerly run op
        z = jnp.zeros((1, seq_len), jnp.int32)
        params = model.init(jax.random.PRNGKey(0), z, jnp.zeros((1,)), train=False)["params"]
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(jax.random.PRNGKey(3), len(leaves))
        return jax.tree.unflatten(
            treedef, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
        )

    return init()


@functools.cache
def _tiny_fp():
    """(config, params, denoise_fn) of a tiny FP-MDLM."""
    config = _fp_config()
    model = build_model(config.model, config.fixed_point)
    params = _perturbed_init(model, 16)
    return config, params, fp_sampling.make_fp_denoise_fn(model, SCHEDULE.total_noise)


TINY_PLAN = plan_budget(44, StepCost(2, 1), steps=6, schedule="decreasing")


def _tiny_sample(coefficients=PUBLISHED, key=1):
    config, params, denoise_fn = _tiny_fp()
    return fp_sampling.fp_sample(
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
        return fp_sampling.fp_sample(
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
        fp_sampling.fp_sample_fn, denoise_fn, cost=TINY_PLAN.cost, hidden_size=32,
        mask_id=config.model.mask_id, mask_prob_fn=SCHEDULE.mask_prob, warm_start="3sr",
    )  # fmt: skip
    param_shardings = sharding.tree_shardings(params, mesh)
    batch_sh, rep = sharding.batch_sharding(mesh), sharding.replicated(mesh)
    out_sh = fp_sampling.FPSampleOutput(batch_sh, rep, batch_sh, rep, rep, rep)
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


# ---------------------------------------------------------------------------------------
# --mode=sample: one budget interface for MDLM and FP-MDLM.
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    ["fp_mdlm", pytest.param("mdlm", marks=pytest.mark.slow)],  # MDLM: test_cli too
)
def test_sample_mode_spends_and_prints_the_budget(kind, tmp_path, monkeypatch, capsys):
    config = _fp_config(**{"model.kind": kind, "model.num_layers": 3, "sample.num_samples": 8,
                           "sample.budget": 30, "sample.adaptive_tol": 1e-2})  # fmt: skip

    def fake_restore(config, workdir, use_ema=True, mesh=None):  # run_sample's, no checkpoint
        model = build_model(config.model, config.fixed_point)
        return _perturbed_init(model, config.data.seq_len), 0

    monkeypatch.setattr(checkpoint, "restore_model_params", fake_restore)
    modes.run_sample(config, str(tmp_path))
    stdout = capsys.readouterr().out
    assert "budget: 30\n" in stdout
    used = int(stdout.split("block_passes_used: ")[1].split()[0])
    report = json.loads((tmp_path / "samples_step0.json").read_text())
    assert report["block_passes_used"] == used and report["budget"] == 30
    assert len(report["samples"]) == 8
    if kind == "mdlm":  # 3 blocks per call: 10 steps; calls skipped by the cache not spent
        assert report["steps"] == 10 and used == 3 * report["network_calls"] <= 30
    else:  # T = 30 // (2 + 8) = 3 steps of 1 + N + 1
        assert report["steps"] == 3 and used <= 30
        assert sum(report["planned_iterations_per_step"]) == 24
        assert used == 6 + sum(report["iterations_per_step"])
