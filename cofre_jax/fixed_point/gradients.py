"""Gradient strategies through h* = f(params, h*, x), chosen by `GradientSpec.method`.

All return (h, SolverStats) and compose with jit, vmap and grad:
- implicit: custom VJP; the backward pass solves g = J_h^T g + dL/dh* with its own
  solver, then pulls g back to params and x (h* does not depend on h0).
- sjfb: N_ng ~ U{nograd_range} Picard steps under stop-gradient, then N_g ~ U{grad_range}
  differentiated steps (docs/method.md §2.3), both drawn inside jit from `key`.
- phantom: forward solve, then k damped differentiated steps from the stopped h*.
- jfb: forward solve, then one differentiated step.
- unrolled: backprop through a fixed number of Picard steps from h0 (the reference).

In every strategy but `unrolled` the start h0 gets no gradient: the no-grad phase
cuts it, also when SJFB draws N_ng = 0, so the estimator's structure does not jump
with the draw.

Letters: B batch.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from cofre_jax.fixed_point.residuals import residual_norm
from cofre_jax.fixed_point.solvers import SolverStats, solve
from cofre_jax.fixed_point.specs import GRADIENT_METHODS, GradientSpec, SolverSpec
from cofre_jax.fixed_point.state import (
    BlockFn,
    PyTree,
    batch_max_iter,
    check_block_shapes,
    flat_state,
)

_sg = jax.lax.stop_gradient


def _step_residual(h_new: PyTree, h: PyTree) -> jax.Array:
    state = flat_state(h)
    return residual_norm(_sg(state.flatten(h_new)), _sg(state.flatten(h)), "relative")


def _stats_after(stats: SolverStats, extra: jax.Array, residual_B: jax.Array) -> SolverStats:
    """Stats of a solve followed by `extra` unconditional steps."""
    return SolverStats(
        iterations_B=stats.iterations_B + extra,
        residual_B=residual_B,
        converged_B=stats.converged_B & jnp.isfinite(residual_B),
        evals=stats.evals + extra,
    )


# ----------------------------------------------------------------------------- implicit


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _implicit(f, solver, adjoint, params, h0, x, cap_B):
    return solve(f, params, h0, x, solver, max_iter=cap_B)


def _implicit_fwd(f, solver, adjoint, params, h0, x, cap_B):
    h_star, stats = solve(f, params, h0, x, solver, max_iter=cap_B)
    return (h_star, stats), (params, h_star, x)


def _adjoint_block(vjp_h, g, h_bar):
    (jt_g,) = vjp_h(g)
    return jax.tree.map(lambda a, b: (a + b).astype(b.dtype), jt_g, h_bar)


def _implicit_bwd(f, solver, adjoint, residuals, cotangents):
    params, h_star, x = residuals
    h_bar, _ = cotangents  # stats carry no gradient
    _, vjp_h = jax.vjp(lambda h: f(params, h, x), h_star)
    h_bar = jax.tree.map(lambda c, h: c.astype(h.dtype), h_bar, h_star)
    # vjp_h is a pytree (jax.tree_util.Partial), so it travels as the adjoint's params.
    g, _ = solve(_adjoint_block, vjp_h, h_bar, h_bar, adjoint)
    _, vjp_px = jax.vjp(lambda p, xx: f(p, h_star, xx), params, x)
    params_bar, x_bar = vjp_px(g)
    return params_bar, jax.tree.map(jnp.zeros_like, h_star), x_bar, None


_implicit.defvjp(_implicit_fwd, _implicit_bwd)


def implicit_fixed_point(
    f: BlockFn,
    params: PyTree,
    h0: PyTree,
    x: PyTree,
    solver: SolverSpec,
    adjoint: SolverSpec,
    *,
    max_iter: int | jax.Array | None = None,
) -> tuple[PyTree, SolverStats]:
    """Forward solve with `solver`; implicit-function-theorem VJP solved with `adjoint`."""
    solver.validate()
    adjoint.validate()
    state = flat_state(h0)
    check_block_shapes(f, params, h0, x)
    cap_B = batch_max_iter(solver.max_iter if max_iter is None else max_iter, state.batch)
    return _implicit(f, solver, adjoint, params, h0, x, cap_B)


# ----------------------------------------------------------------------------- unrolled


def _differentiated_steps(
    f, params, h, x, num_steps: int, count=None, damping: float = 1.0, remat: bool = False
):
    """`num_steps` differentiated steps; with a traced `count`, steps >= count are skipped.

    Skipping is a `lax.cond` inside a fixed-length scan: one compiled body whatever
    the draw, forward and backward both skip the unused steps (the cotangent passes
    through the identity branch exactly), and activations are stored for at most
    `num_steps` steps. Masking with `where` would spend the compute of every step;
    `lax.switch` over per-count unrolls would compile one copy of f per count.

    With `remat`, each step is a `jax.checkpoint` (nothing saved): the backward pass
    stores only every step's input h and recomputes that step's forward, so memory no
    longer grows with `num_steps` (one more forward of f per differentiated step). The
    values and gradients are the same computation either way.
    """

    def step_fn(params, h, x):
        fh = f(params, h, x)
        if damping != 1.0:
            fh = jax.tree.map(lambda a, b: ((1 - damping) * a + damping * b).astype(a.dtype), h, fh)
        return fh, _step_residual(fh, h)

    if remat:
        step_fn = jax.checkpoint(step_fn)

    def one_step(h):
        return step_fn(params, h, x)

    def body(carry, i):
        h, res_B = carry
        if count is None:
            return one_step(h), None
        return jax.lax.cond(i < count, one_step, lambda h: (h, res_B), h), None

    res0_B = jnp.full((flat_state(h).batch,), jnp.inf, jnp.float32)
    (h, res_B), _ = jax.lax.scan(body, (h, res0_B), jnp.arange(num_steps))
    return h, res_B


def _fixed_stats(count, residual_B) -> SolverStats:
    count = jnp.asarray(count, jnp.int32)
    return SolverStats(
        iterations_B=jnp.full(residual_B.shape, count),
        residual_B=residual_B,
        converged_B=jnp.isfinite(residual_B),
        evals=count,
    )


def unrolled_fixed_point(
    f: BlockFn, params: PyTree, h0: PyTree, x: PyTree, num_steps: int, *, remat: bool = False
) -> tuple[PyTree, SolverStats]:
    """Backprop through `num_steps` Picard steps from h0 (gradients reach h0 too)."""
    if num_steps < 1:
        raise ValueError(f"num_steps = {num_steps} is invalid: allowed >= 1")
    check_block_shapes(f, params, h0, x)
    h, res_B = _differentiated_steps(f, params, h0, x, num_steps, remat=remat)
    return h, _fixed_stats(num_steps, res_B)


# ----------------------------------------------------------------------------- SJFB


def draw_sjfb_counts(key: jax.Array, spec: GradientSpec) -> tuple[jax.Array, jax.Array]:
    """(N_ng, N_g) as int32 scalars, uniform on the inclusive configured ranges."""
    key_ng, key_g = jax.random.split(key)
    (ng_lo, ng_hi), (g_lo, g_hi) = spec.nograd_range, spec.grad_range
    n_ng = jax.random.randint(key_ng, (), ng_lo, ng_hi + 1, dtype=jnp.int32)
    n_g = jax.random.randint(key_g, (), g_lo, g_hi + 1, dtype=jnp.int32)
    return n_ng, n_g


def sjfb_fixed_point(
    f: BlockFn, params: PyTree, h0: PyTree, x: PyTree, key: jax.Array, spec: GradientSpec
) -> tuple[PyTree, SolverStats]:
    """Stochastic Jacobian-free backprop; `key` must be the same on every device."""
    spec.validate()
    check_block_shapes(f, params, h0, x)
    n_ng, n_g = draw_sjfb_counts(key, spec)
    nograd = SolverSpec(method="picard", tol=0.0, max_iter=max(spec.nograd_range[1], 1))
    # Inputs are stopped, so no tangent ever enters the dynamic-trip while_loop.
    h, _ = solve(f, _sg(params), _sg(h0), _sg(x), nograd, max_iter=n_ng)
    h, res_B = _differentiated_steps(
        f, params, _sg(h), x, spec.grad_range[1], count=n_g, remat=spec.remat
    )
    return h, _fixed_stats(n_ng + n_g, res_B)


# ----------------------------------------------------------------------------- phantom / JFB


def phantom_fixed_point(
    f: BlockFn,
    params: PyTree,
    h0: PyTree,
    x: PyTree,
    solver: SolverSpec,
    *,
    steps: int,
    damping: float,
    max_iter: int | jax.Array | None = None,
    remat: bool = False,
) -> tuple[PyTree, SolverStats]:
    """Forward solve under stop-gradient, then `steps` damped differentiated steps.

    JFB is the special case steps=1, damping=1.
    """
    if steps < 1 or not 0.0 < damping <= 1.0:
        raise ValueError(f"phantom steps={steps}, damping={damping}: need >= 1 and (0, 1]")
    h_star, stats = solve(f, _sg(params), _sg(h0), _sg(x), solver, max_iter=max_iter)
    h, res_B = _differentiated_steps(f, params, _sg(h_star), x, steps, damping=damping, remat=remat)
    return h, _stats_after(stats, jnp.int32(steps), res_B)


# ----------------------------------------------------------------------------- dispatch


def fixed_point(
    f: BlockFn,
    params: PyTree,
    h0: PyTree,
    x: PyTree,
    solver: SolverSpec,
    gradient: GradientSpec,
    *,
    key: jax.Array | None = None,
    max_iter: int | jax.Array | None = None,
) -> tuple[PyTree, SolverStats]:
    """h* of f(params, ., x) from h0, differentiable as `gradient.method` says.

    `key` is needed by 'sjfb' only; `max_iter` (traced allowed) caps the forward
    solve of 'implicit', 'phantom' and 'jfb'.
    """
    gradient.validate()
    method = gradient.method
    if method == "implicit":
        return implicit_fixed_point(f, params, h0, x, solver, gradient.adjoint, max_iter=max_iter)
    if method == "sjfb":
        if key is None:
            raise ValueError("gradient method 'sjfb' draws its iteration counts: pass key=")
        return sjfb_fixed_point(f, params, h0, x, key, gradient)
    if method == "phantom":
        return phantom_fixed_point(
            f,
            params,
            h0,
            x,
            solver,
            steps=gradient.phantom_steps,
            damping=gradient.phantom_damping,
            max_iter=max_iter,
            remat=gradient.remat,
        )
    if method == "jfb":
        return phantom_fixed_point(
            f, params, h0, x, solver, steps=1, damping=1.0, max_iter=max_iter, remat=gradient.remat
        )
    if method == "unrolled":
        return unrolled_fixed_point(f, params, h0, x, gradient.unrolled_steps, remat=gradient.remat)
    raise ValueError(f"gradient method {method!r} is not one of {GRADIENT_METHODS}")
