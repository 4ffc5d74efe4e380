"""Runaway iterates are never reported as converged (float32 and bf16).

Two maps that used to be: f(h) = 2h, whose ||f(h)||^2 overflows float32 while the
difference's square does not (finite / inf = 0 was a residual of 0), and
f(h) = h + 1 + 0.1 sin h, which has no fixed point (f(h) - h >= 0.9) but along which
Anderson extrapolates until ||f(h) - h|| / ||f(h)|| is tiny, or until f(h) - h rounds
to 0. Every policy, the tolerance off, the FP-MDLM denoiser and adaptive stopping in
the sampler must see them as not converged.

Letters: B batch, N state size, L length, D hidden.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sampler_fixtures import SCHEDULE, TOY_MASK, D, toy_params
from tiny import fp_config, perturbed_init

from cofre_jax import diffusion
from cofre_jax.fixed_point import NonConvergenceError, SolverSpec, solve
from cofre_jax.fixed_point.residuals import residual_norm, row_norm
from cofre_jax.models import build_model
from cofre_jax.sampling import FPDenoiseOutput, StepCost, fp_sample, make_fp_denoise_fn, plan_budget


def doubling(params, h_BxN, x):
    return 2 * h_BxN


def no_fixed_point(params, h_BxN, x):
    return (h_BxN + 1 + 0.1 * jnp.sin(h_BxN.astype(jnp.float32))).astype(h_BxN.dtype)


# Anderson is not run on f(h) = 2h: it finds the repelling fixed point h = 0 (a
# linear map), which is a real convergence.
CASES = {
    "doubling-picard": (doubling, "picard"),
    "no-fixed-point-anderson": (no_fixed_point, "anderson"),
    "no-fixed-point-picard": (no_fixed_point, "picard"),
}


@functools.cache
def _solve(case: str, dtype: str, tol: float, tol_kind: str, policy: str):
    f, method = CASES[case]
    spec = SolverSpec(
        method=method, tol=tol, tol_kind=tol_kind, max_iter=200, on_nonconvergence=policy
    )
    h0_BxN = jnp.ones((1, 128), dtype)
    return jax.jit(lambda h0: solve(f, None, h0, None, spec))(h0_BxN)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("tol_kind", ["relative", "absolute"])
def test_runaway_is_not_converged_under_any_policy(case, dtype, tol_kind):
    for policy in ("best", "last"):
        h_BxN, stats = _solve(case, dtype, 1e-3, tol_kind, policy)
        assert not bool(stats.converged_B[0]), (policy, stats)
        # Adaptive stopping did not stop it: the whole cap was spent.
        assert int(stats.iterations_B[0]) == 200, (policy, stats)
        assert float(stats.residual_B[0]) > 1e-3, (policy, stats)
        if policy == "best":  # never a runaway iterate (|h0| = 1, |f(h0)| <= 2.1)
            assert float(jnp.max(jnp.abs(h_BxN.astype(jnp.float32)))) < 250.0, stats
    # Jitted, the error reaches the caller wrapped by the runtime; eager, as itself.
    with pytest.raises(Exception, match="did not converge for examples"):
        jax.block_until_ready(_solve(case, dtype, 1e-3, tol_kind, "raise"))
    f, method = CASES[case]
    spec = SolverSpec(method=method, tol=1e-3, tol_kind=tol_kind, on_nonconvergence="raise")
    with pytest.raises(NonConvergenceError):
        solve(f, None, jnp.ones((1, 128), dtype), None, spec, max_iter=200)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("case", ["doubling-picard", "no-fixed-point-anderson"])
def test_runaway_with_the_tolerance_off_is_not_converged(case, dtype):
    _, stats = _solve(case, dtype, 0.0, "relative", "last")
    assert int(stats.iterations_B[0]) == 200
    assert not bool(stats.converged_B[0]) and float(stats.residual_B[0]) == np.inf


def test_norms_do_not_overflow_before_the_difference():
    z_BxN = jnp.full((2, 128), 2.3e18, jnp.float32).at[1].set(jnp.nan)
    np.testing.assert_allclose(row_norm(2 * z_BxN)[0], 2 * 2.3e18 * np.sqrt(128), rtol=1e-6)
    assert float(row_norm(2 * z_BxN)[1]) == np.inf
    res_B = residual_norm(2 * z_BxN, z_BxN, "relative")
    np.testing.assert_allclose(res_B[0], 0.5, rtol=1e-6)
    assert float(res_B[1]) == np.inf
    assert float(row_norm(jnp.zeros((1, 4)))[0]) == 0.0


def test_slow_contraction_far_from_its_start_still_converges():
    """The guard delays, never forbids: f(h) = 0.99 h + 1 from 0 ends 100x above its first
    iterate, and both methods reach the tolerance."""
    for method in ("picard", "anderson"):
        spec = SolverSpec(method=method, tol=1e-5, max_iter=3000)
        h_BxN, stats = solve(lambda p, h, x: 0.99 * h + 1.0, None, jnp.zeros((1, 8)), None, spec)
        assert bool(stats.converged_B[0]), (method, stats)
        np.testing.assert_allclose(h_BxN, 100.0, rtol=1e-3)


# ------------------------------------------------------------------- in the sampler


def runaway_denoiser(params, z_BxL, t_B, cond, h0_fn, num_iterations, *, dtype):
    """Each step solves h = h + 1 + 0.1 sin h (no fixed point) with Anderson from the
    token embeddings, at tolerance 1e-3: a sampler with adaptive stopping."""
    h_pre_BxLxD = params["embed_VxD"][z_BxL].astype(dtype)
    h0_BxLxD = h_pre_BxLxD if h0_fn is None else h0_fn(h_pre_BxLxD).astype(dtype)
    spec = SolverSpec(method="anderson", tol=1e-3, max_iter=1)
    h_BxLxD, stats = solve(
        no_fixed_point, None, h0_BxLxD, None, spec, max_iter=num_iterations
    )  # fmt: skip
    logits_BxLxV = jnp.einsum("bld,dv->blv", h_BxLxD.astype(jnp.float32), params["head_DxV"])
    log_probs = diffusion.subs_log_probs(logits_BxLxV, z_BxL, TOY_MASK)
    return FPDenoiseOutput(log_probs, h_BxLxD, stats)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_adaptive_stopping_runs_the_plan_on_a_runaway_solve(dtype):
    """Cold starts: the guard measures growth within one solve. A warm start from the
    previous step's h* of a runaway map (up to 100x its own start, the "best" iterate)
    can begin so large that ||f(h) - h|| / ||f(h)|| is below the tolerance at once; no
    single solve can tell that start from a fixed point of a large solution."""
    plan = plan_budget(80, StepCost(2, 1), steps=4, schedule="fixed")  # 18 per step
    out = fp_sample(
        functools.partial(runaway_denoiser, dtype=jnp.dtype(dtype)), toy_params(),
        jax.random.PRNGKey(0), plan, batch_size=3, seq_len=5, hidden_size=D,
        mask_id=TOY_MASK, mask_prob_fn=SCHEDULE.mask_prob, warm_start="cold",
    )  # fmt: skip
    np.testing.assert_array_equal(out.evals_T, plan.iterations_T)  # no step stopped early
    np.testing.assert_array_equal(out.iterations_TxB, np.asarray(out.iterations_TxB).max())
    assert float(jnp.min(out.residual_TxB)) > 1e-3


# ------------------------------------------------------------------- inside FP-MDLM


@functools.cache
def _runaway_fp_mdlm(dtype: str):
    """A tiny FP-MDLM whose injection layer (fc1, fc2 of the cell) is scaled by 10: the
    solve's states grow about 1.5x per Picard step, to 1e18 within 100 steps."""
    config = fp_config(**{"model.dtype": dtype})
    model = build_model(config.model, config.fixed_point)
    params = dict(perturbed_init(model, 16))
    cell = dict(params["fp_cell"])
    for name in ("fc1", "fc2"):
        cell[name] = jax.tree.map(lambda w: 10 * w, cell[name])
    params["fp_cell"] = cell
    return config, model, params


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fp_mdlm_runaway_is_not_converged_and_adaptive_stopping_runs_the_plan(dtype):
    config, model, params = _runaway_fp_mdlm(dtype)
    z_BxL = jax.random.randint(jax.random.PRNGKey(0), (4, 16), 0, config.model.mask_id)
    t_B = jnp.full((4,), 0.5)
    for policy in ("best", "last"):
        fp = dataclasses.replace(model.fixed_point, on_nonconvergence=policy)
        denoise_fn = make_fp_denoise_fn(model.clone(fixed_point=fp), SCHEDULE.total_noise, tol=1e-3)
        out = jax.jit(denoise_fn, static_argnums=(4,))(params, z_BxL, t_B, None, None, 40)
        stats = out.stats
        assert not bool(jnp.any(stats.converged_B)), (policy, stats)
        np.testing.assert_array_equal(stats.iterations_B, 40)
        assert float(jnp.min(stats.residual_B)) > 1e-3, (policy, stats)
        if policy == "best":
            assert float(jnp.max(jnp.abs(out.h_star_BxLxD.astype(jnp.float32)))) < 1e4

    plan = plan_budget(40, StepCost(2, 1), steps=4, schedule="fixed")
    denoise_fn = make_fp_denoise_fn(model, SCHEDULE.total_noise, tol=1e-3)
    out = fp_sample(
        denoise_fn, params, jax.random.PRNGKey(1), plan, batch_size=4, seq_len=16,
        hidden_size=32, mask_id=config.model.mask_id, mask_prob_fn=SCHEDULE.mask_prob,
    )  # fmt: skip
    np.testing.assert_array_equal(out.evals_T, plan.iterations_T)  # no step stopped early
    assert int(out.block_passes) == plan.block_passes
    assert float(jnp.min(out.residual_TxB)) > 1e-3
