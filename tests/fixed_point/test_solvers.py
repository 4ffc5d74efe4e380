"""Forward solvers: convergence, per-example stopping, budgets, failures, bad input.

Letters: B batch, D hidden.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_problems import (
    InjectedBlock,
    linear_problem,
    tanh_problem,
    transformer_problem,
)

from cofre_jax.fixed_point import NonConvergenceError, SolverSpec, solve


@pytest.fixture(autouse=True, scope="module")
def x64():
    """float64 for this module only; restored so other modules keep float32."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


TIGHT = dict(tol=1e-10, max_iter=400)
PROBLEMS = {"linear": linear_problem, "tanh": tanh_problem, "transformer": transformer_problem}


def _solve_jit(f, spec):
    return jax.jit(lambda p, h0, x: solve(f, p, h0, x, spec))


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_anderson_beats_picard_to_tolerance(name):
    f, params, h0, x = PROBLEMS[name]()
    results = {}
    for method in ("picard", "anderson"):
        h, stats = _solve_jit(f, SolverSpec(method=method, **TIGHT))(params, h0, x)
        assert bool(jnp.all(stats.converged_B)), (method, stats)
        assert int(stats.evals) == int(jnp.max(stats.iterations_B))
        results[method] = (h, stats)
    picard_iters = results["picard"][1].iterations_B
    for method in ("anderson",):
        h, stats = results[method]
        assert np.all(stats.iterations_B < picard_iters), (method, stats, picard_iters)
        for a, b in zip(jax.tree.leaves(h), jax.tree.leaves(results["picard"][0])):
            np.testing.assert_allclose(a, b, atol=1e-8)


def test_linear_solution_matches_direct_solve():
    f, params, h0, x = linear_problem()
    h, _ = _solve_jit(f, SolverSpec(method="anderson", **TIGHT))(params, h0, x)
    rhs_BxD = x @ params["U"] + params["b"]
    exact_BxD = np.linalg.solve((np.eye(6) - params["W"]).T, np.asarray(rhs_BxD).T).T
    np.testing.assert_allclose(h, exact_BxD, rtol=1e-8)


def _easy_hard():
    """f(h) = rate * h W + c with W's eigenvalues spread in [-1, 1]: example 0 contracts
    by 0.1 per step, example 1 by 0.95, in the same batch through the same f."""
    q, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(16, 16)))
    w = jnp.asarray((q * np.linspace(-1.0, 1.0, 16)) @ q.T)

    def f(p, h_BxD, x):
        return x["rate_B"][:, None] * (h_BxD @ p["W"]) + p["c"]

    params = {"W": w, "c": jnp.ones((16,))}
    return f, params, jnp.zeros((2, 16)), {"rate_B": jnp.array([0.1, 0.95])}


@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_per_example_stopping_easy_and_hard(method):
    f, params, h0, x = _easy_hard()
    spec = SolverSpec(method=method, tol=1e-10, max_iter=1000, window=3)
    run = _solve_jit(f, spec)
    h, stats = run(params, h0, x)
    assert bool(jnp.all(stats.converged_B))
    assert int(stats.iterations_B[0]) < int(stats.iterations_B[1])
    assert int(stats.evals) == int(stats.iterations_B[1])
    # The easy example, solved alone, needs the same count and lands on the same
    # state: it stopped changing when it converged, and its history was its own.
    x_easy = {"rate_B": x["rate_B"][:1]}
    h_easy, stats_easy = run(params, h0[:1], x_easy)
    assert int(stats_easy.iterations_B[0]) == int(stats.iterations_B[0])
    np.testing.assert_allclose(h[0], h_easy[0], rtol=1e-13)
    for b in range(2):
        a_DxD = np.eye(16) - float(x["rate_B"][b]) * np.asarray(params["W"]).T
        np.testing.assert_allclose(h[b], np.linalg.solve(a_DxD, np.ones(16)), rtol=1e-7)


def _spread_problem(rate: float, nonlinear: bool):
    """f(h) = [tanh](rate * h W + c), W's eigenvalues spread in [-1, 1]: contracts by
    about `rate` per step (easy at 0.05, slow at 0.9)."""
    f_lin, params, h0, _ = _easy_hard()

    def f(p, h_BxD, x):
        out_BxD = f_lin(p, h_BxD, x)
        return jnp.tanh(out_BxD) if nonlinear else out_BxD

    return f, params, h0, {"rate_B": jnp.full((2,), rate)}


@pytest.mark.parametrize("nonlinear", [False, True])
@pytest.mark.parametrize("rate", [0.05, 0.1, 0.3])
def test_anderson_no_slower_than_picard_on_easy_blocks(rate, nonlinear):
    """The ridge is relative to each slot's own squared residual: on a fast contraction
    the oldest (largest) residual in the window no longer over-regularises the recent
    ones. With the ridge scaled by the window's mean squared residual Anderson needed
    more evaluations than Picard here (rate 0.05 tanh: 11 vs 7 to 1e-10)."""
    f, params, h0, x = _spread_problem(rate, nonlinear)
    evals = {}
    for method in ("picard", "anderson"):
        spec = SolverSpec(method=method, tol=1e-10, max_iter=400, window=5, ridge=1e-4)
        _, stats = _solve_jit(f, spec)(params, h0, x)
        assert bool(jnp.all(stats.converged_B)), (method, stats)
        evals[method] = int(stats.evals)
    # The default ridge costs nothing over no ridge at all on these well-posed windows.
    _, no_ridge = _solve_jit(f, SolverSpec(method="anderson", tol=1e-10, max_iter=400,
                                           window=5, ridge=0.0))(params, h0, x)  # fmt: skip
    assert evals["anderson"] <= evals["picard"], evals
    assert evals["anderson"] <= int(no_ridge.evals) + 1, (evals, int(no_ridge.evals))


@pytest.mark.parametrize("nonlinear", [False, True])
def test_anderson_keeps_its_advantage_on_slow_contractions(nonlinear):
    """Rate 0.9: Picard needs 38 (tanh) / 198 (linear) evaluations to 1e-10, Anderson
    under half of that."""
    f, params, h0, x = _spread_problem(0.9, nonlinear)
    evals = {}
    for method in ("picard", "anderson"):
        spec = SolverSpec(method=method, tol=1e-10, max_iter=400, window=5)
        _, stats = _solve_jit(f, spec)(params, h0, x)
        assert bool(jnp.all(stats.converged_B)), (method, stats)
        evals[method] = int(stats.evals)
    assert 2 * evals["anderson"] < evals["picard"], evals


def test_fixed_budget_with_traced_count_no_recompile():
    """Tolerance off + traced max_iter = the budgeted sampler's call."""
    f, params, h0, x = tanh_problem()
    spec = SolverSpec(method="picard", tol=0.0, max_iter=1)
    traces = []

    @jax.jit
    def run(n):
        traces.append(1)
        return solve(f, params, h0, x, spec, max_iter=n)

    for n in (1, 3, 7):
        h, stats = run(jnp.int32(n))
        ref = h0
        for _ in range(n):
            ref = f(params, ref, x)
        np.testing.assert_allclose(h, ref, rtol=1e-14)
        assert int(stats.evals) == n and np.all(stats.iterations_B == n)
        assert bool(jnp.all(stats.converged_B))
    assert len(traces) == 1


def test_budget_inside_lax_loop_with_warm_start_and_per_example_caps():
    f, params, h0, x = tanh_problem()
    spec = SolverSpec(method="anderson", tol=0.0, max_iter=1)

    @jax.jit
    def sampler(budgets_S):
        def step(h, n):
            h, stats = solve(f, params, h, x, spec, max_iter=n)
            return h, stats.evals

        return jax.lax.scan(step, h0, budgets_S)

    h, evals_S = sampler(jnp.array([4, 2, 0, 3], jnp.int32))
    np.testing.assert_array_equal(evals_S, [4, 2, 0, 3])
    caps_B = jnp.array([0, 2, 5], jnp.int32)
    h, stats = jax.jit(lambda c: solve(f, params, h0, x, spec, max_iter=c))(caps_B)
    np.testing.assert_array_equal(stats.iterations_B, caps_B)
    np.testing.assert_array_equal(h[0], h0[0])  # zero budget: the warm start itself
    assert int(stats.evals) == 5


def test_divergence_is_flagged_and_best_iterate_returned():
    def f(p, h_BxD, x):
        return p * h_BxD + x  # |p| > 1: Picard runs away

    params, h0, x = jnp.float64(2.0), jnp.zeros((2, 3)), jnp.ones((2, 3))
    spec = SolverSpec(method="picard", tol=1e-6, tol_kind="absolute", max_iter=40)
    h, stats = solve(f, params, h0, x, spec)
    assert not bool(jnp.any(stats.converged_B))
    # Residual ||f(h) - h|| grows from its value at h0, so h0's image f(h0) = x is kept.
    np.testing.assert_allclose(h, x)
    assert np.all(np.isfinite(stats.residual_B))
    last = dataclasses.replace(spec, on_nonconvergence="last")
    h_last, stats_last = solve(f, params, h0, x, last)
    assert float(jnp.min(h_last)) > 1e11 and not bool(jnp.any(stats_last.converged_B))


@pytest.mark.parametrize("method", ["picard", "anderson"])
def test_overflow_never_yields_silent_nan(method):
    def f(p, h_BxD, x):
        return p * h_BxD * h_BxD + x  # blows up to inf, then inf - inf = NaN

    h, stats = solve(
        f,
        jnp.float64(1e30),
        jnp.ones((2, 3)),
        jnp.ones((2, 3)),
        SolverSpec(method=method, max_iter=30),
    )
    assert not bool(jnp.any(stats.converged_B))
    assert np.all(np.isfinite(h)) and np.all(stats.residual_B > 0)


def test_raise_policy_eager_and_jitted():
    f, params, h0, x = tanh_problem()
    spec = SolverSpec(method="picard", tol=1e-12, max_iter=2, on_nonconvergence="raise")
    with pytest.raises(NonConvergenceError, match="did not converge for examples"):
        solve(f, params, h0, x, spec)
    with pytest.raises(Exception, match="did not converge for examples"):
        jax.block_until_ready(_solve_jit(f, spec)(params, h0, x))
    ok = dataclasses.replace(spec, max_iter=400)
    jax.block_until_ready(_solve_jit(f, ok)(params, h0, x))  # converges: no error


def test_pytree_state_and_vmap():
    """h may be any pytree; vmap over an outer axis equals a loop over it."""

    def f(p, h, x):
        return {"a": 0.5 * h["b"][:, :2] + x, "b": jnp.tanh(p * h["b"]) + h["a"].sum(1)[:, None]}

    h0 = {"a": jnp.zeros((3, 2)), "b": jnp.zeros((3, 4))}
    x_SxBx2 = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 2)))
    spec = SolverSpec(method="anderson", tol=1e-11, max_iter=200)
    batched = jax.jit(jax.vmap(lambda xx: solve(f, 0.3, h0, xx, spec)))(x_SxBx2)
    for s in range(2):
        single = solve(f, 0.3, h0, x_SxBx2[s], spec)
        for a, b in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            np.testing.assert_allclose(a[s], b, rtol=1e-9, atol=1e-12)


def test_bf16_state_with_fp32_accumulation():
    """bf16 compute and state, fp32 params; compared with the all-fp32 solve."""
    f32, params, h0, x = transformer_problem(dtype=jnp.float32)
    f_bf16 = InjectedBlock(8, 2, 0.3, dtype=jnp.bfloat16, param_dtype=jnp.float32).apply
    spec = SolverSpec(method="anderson", tol=1e-2, max_iter=60)
    h, stats = _solve_jit(f_bf16, spec)(params, h0.astype(jnp.bfloat16), x)
    assert h.dtype == jnp.bfloat16 and stats.residual_B.dtype == jnp.float32
    assert bool(jnp.all(stats.converged_B))
    ref, _ = _solve_jit(f32, dataclasses.replace(spec, tol=1e-6))(params, h0, x)
    rel = jnp.linalg.norm(h.astype(jnp.float32) - ref) / jnp.linalg.norm(ref)
    # Residual 1e-2 with contraction ~0.5 bounds the error by ~2e-2, plus bf16 rounding.
    assert float(rel) < 4e-2, float(rel)


@pytest.mark.parametrize(
    "spec, match",
    [
        (SolverSpec(window=0), "window"),
        (SolverSpec(tol=-1.0), "tol"),
        (SolverSpec(max_iter=0), "max_iter"),
        (SolverSpec(method="newton"), "one of"),
        (SolverSpec(on_nonconvergence="ignore"), "on_nonconvergence"),
    ],
)
def test_invalid_specs_fail_at_trace_time(spec, match):
    f, params, h0, x = linear_problem()
    with pytest.raises(ValueError, match=match):
        jax.jit(lambda p: solve(f, p, h0, x, spec))(params)


def test_invalid_inputs_fail_clearly():
    f, params, h0, x = linear_problem()
    spec = SolverSpec()
    with pytest.raises(ValueError, match="max_iter"):
        solve(f, params, h0, x, spec, max_iter=0)
    with pytest.raises(ValueError, match="changed a leaf's shape"):
        solve(lambda p, h, xx: f(p, h, xx)[:, :3], params, h0, x, spec)
    with pytest.raises(ValueError, match="pytree structure"):
        solve(lambda p, h, xx: (h, h), params, h0, x, spec)
    with pytest.raises(ValueError, match="batch"):
        solve(lambda p, h, xx: h, params, {"a": h0, "b": h0[:2]}, x, spec)
    with pytest.raises(ValueError, match="floating"):
        solve(lambda p, h, xx: h, params, jnp.zeros((3, 2), jnp.int32), x, spec)


@pytest.mark.parametrize("method", ["picard", "anderson"])
@pytest.mark.parametrize(
    "cap", [5, np.array([5, 0, 3, 7], np.int32)], ids=["uniform", "per_example"]
)
def test_tolerance_off_loop_matches_the_general_loop(method, cap):
    """tol = 0 runs a lean loop (no norms per iteration; `_fixed_count_loop`). A tolerance
    no iterate can meet runs the general loop for the same caps: same state and stats."""
    f, params, h0, x = transformer_problem(batch=4, dtype=jnp.float32)
    lean = SolverSpec(method=method, tol=0.0, max_iter=7)
    general = dataclasses.replace(lean, tol=1e-30, on_nonconvergence="last")
    run = jax.jit(lambda spec, n: solve(f, params, h0, x, spec, max_iter=n), static_argnums=0)
    h_lean, s_lean = run(lean, jnp.asarray(cap))
    h_general, s_general = run(general, jnp.asarray(cap))
    np.testing.assert_array_equal(h_lean, h_general)
    np.testing.assert_array_equal(s_lean.iterations_B, s_general.iterations_B)
    np.testing.assert_array_equal(s_lean.residual_B, s_general.residual_B)
    assert int(s_lean.evals) == int(s_general.evals) == int(np.max(cap))
    np.testing.assert_array_equal(s_lean.converged_B, np.isfinite(s_general.residual_B))
