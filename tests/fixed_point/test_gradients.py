"""Gradient strategies against numerical and unrolled references, in float64.

Letters: B batch, D hidden.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads
from test_problems import linear_problem, tanh_problem, transformer_problem

from cofre_jax.fixed_point import (
    GradientSpec,
    SolverSpec,
    draw_sjfb_counts,
    fixed_point,
    implicit_fixed_point,
    unrolled_fixed_point,
)


@pytest.fixture(autouse=True, scope="module")
def x64():
    """float64 for this module only; restored so other modules keep float32."""
    previous = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", previous)


PROBLEMS = {"linear": linear_problem, "tanh": tanh_problem, "transformer": transformer_problem}
# Solves tight enough that finite differences (eps 1e-4 below) see a smooth map.
FORWARD = SolverSpec(method="anderson", tol=1e-13, max_iter=500)
ADJOINT = SolverSpec(method="anderson", tol=1e-13, max_iter=500)


def _loss_weights(h0):
    """A fixed random readout so every component of h* matters to the loss."""
    rng = np.random.default_rng(7)
    return jax.tree.map(lambda a: jnp.asarray(rng.normal(size=a.shape)), h0)


def _readout(h, weights):
    return sum(jnp.sum(a * w) for a, w in zip(jax.tree.leaves(h), jax.tree.leaves(weights)))


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_implicit_vjp_passes_check_grads(name):
    f, params, h0, x = PROBLEMS[name]()
    weights = _loss_weights(h0)

    @jax.jit
    def loss(p, xx):
        h, _ = implicit_fixed_point(f, p, h0, xx, FORWARD, ADJOINT)
        return _readout(h, weights)

    check_grads(loss, (params, x), order=1, modes=["rev"], eps=1e-4, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_implicit_equals_unrolled_to_convergence(name):
    f, params, h0, x = PROBLEMS[name]()
    weights = _loss_weights(h0)

    def implicit(p, xx):
        return _readout(implicit_fixed_point(f, p, h0, xx, FORWARD, ADJOINT)[0], weights)

    def unrolled(p, xx):
        return _readout(unrolled_fixed_point(f, p, h0, xx, 300)[0], weights)

    g_imp = jax.jit(jax.grad(implicit, argnums=(0, 1)))(params, x)
    g_unr = jax.jit(jax.grad(unrolled, argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(g_imp), jax.tree.leaves(g_unr)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


def _picard_reference(f, params, h0, x, n_nograd, n_grad, damping=1.0):
    """The truncated computation each cheap strategy claims to differentiate."""
    sg = jax.lax.stop_gradient
    h = sg(h0)
    for _ in range(n_nograd):
        h = f(sg(params), h, sg(x))
    h = sg(h)
    for _ in range(n_grad):
        h = (1 - damping) * h + damping * f(params, h, x)
    return h


def test_sjfb_equals_unrolled_gradient_of_its_own_draw():
    f, params, h0, x = tanh_problem()
    weights = _loss_weights(h0)
    spec = GradientSpec(method="sjfb")
    traces = []

    @jax.jit
    def grads(p, xx, key):
        traces.append(1)

        def loss(p, xx):
            h, stats = fixed_point(f, p, h0, xx, FORWARD, spec, key=key)
            return _readout(h, weights), stats

        return jax.grad(loss, argnums=(0, 1), has_aux=True)(p, xx)

    seen = set()
    for seed in range(12):
        key = jax.random.key(seed)
        (g_p, g_x), stats = grads(params, x, key)
        n_ng, n_g = (int(n) for n in draw_sjfb_counts(key, spec))
        seen.add((n_ng, n_g))
        assert 0 <= n_ng <= 4 and 3 <= n_g <= 6
        assert int(stats.evals) == n_ng + n_g

        def ref_loss(p, xx, n_ng=n_ng, n_g=n_g):
            return _readout(_picard_reference(f, p, h0, xx, n_ng, n_g), weights)

        r_p, r_x = jax.grad(ref_loss, argnums=(0, 1))(params, x)
        for a, b in zip(jax.tree.leaves((g_p, g_x)), jax.tree.leaves((r_p, r_x))):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert len({n_g for _, n_g in seen}) >= 3  # the draws really vary
    assert len(traces) == 1  # ... without recompiling


@pytest.mark.parametrize("method, steps, damping", [("phantom", 5, 0.5), ("jfb", 1, 1.0)])
def test_phantom_and_jfb_equal_unrolled_gradient_of_their_truncation(method, steps, damping):
    f, params, h0, x = tanh_problem()
    weights = _loss_weights(h0)
    solver = SolverSpec(method="picard", tol=0.0, max_iter=7)
    spec = GradientSpec(method=method, phantom_steps=steps, phantom_damping=damping)

    def loss(p, xx):
        return _readout(fixed_point(f, p, h0, xx, solver, spec)[0], weights)

    def ref_loss(p, xx):
        return _readout(_picard_reference(f, p, h0, xx, 7, steps, damping), weights)

    got = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    want = jax.jit(jax.grad(ref_loss, argnums=(0, 1)))(params, x)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_unrolled_reaches_h0_and_the_others_do_not():
    f, params, h0, x = tanh_problem()
    weights = _loss_weights(h0)

    def grad_h0(method):
        spec = GradientSpec(method=method, unrolled_steps=3)

        def loss(hh):
            h, _ = fixed_point(f, params, hh, x, FORWARD, spec, key=jax.random.key(0))
            return _readout(h, weights)

        return jax.jit(jax.grad(loss))(h0)

    assert float(jnp.max(jnp.abs(grad_h0("unrolled")))) > 1e-3
    for method in ("implicit", "sjfb", "phantom", "jfb"):
        assert float(jnp.max(jnp.abs(grad_h0(method)))) == 0.0, method


def test_implicit_composes_with_vmap_and_traced_cap():
    f, params, h0, x = linear_problem()
    weights = _loss_weights(h0)
    x_SxBxD = jnp.stack([x, 2.0 * x, -x])

    def loss(p, xx, cap):
        h, _ = implicit_fixed_point(f, p, h0, xx, FORWARD, ADJOINT, max_iter=cap)
        return _readout(h, weights)

    per_x = jax.jit(jax.vmap(jax.grad(loss), in_axes=(None, 0, None)))(params, x_SxBxD, 500)
    single_grad = jax.jit(jax.grad(loss))
    for s in range(3):
        single = single_grad(params, x_SxBxD[s], 500)
        for a, b in zip(jax.tree.leaves(per_x), jax.tree.leaves(single)):
            np.testing.assert_allclose(a[s], b, rtol=1e-10)


def test_dispatch_errors_are_clear():
    f, params, h0, x = linear_problem()
    with pytest.raises(ValueError, match="pass key="):
        fixed_point(f, params, h0, x, FORWARD, GradientSpec(method="sjfb"))
    with pytest.raises(ValueError, match="one of"):
        fixed_point(f, params, h0, x, FORWARD, GradientSpec(method="backprop"))
    with pytest.raises(ValueError, match="grad_range"):
        GradientSpec(grad_range=(4, 3)).validate()
    with pytest.raises(ValueError, match="window"):
        GradientSpec(adjoint=dataclasses.replace(ADJOINT, window=0)).validate()
