"""Forward solvers for h = f(params, h, x), stopping per example, in `lax.while_loop`.

`f` is any pure function (a linen block's `apply`, say) whose output has the pytree
structure and shapes of `h`; `params` and `x` are arbitrary pytrees passed through
untouched. Every leaf of `h` carries the batch on its leading axis, and f must treat
examples independently: an example whose residual reaches the tolerance stops
changing and stops being counted while the others go on.

Solvers work on one flat per-example state `z_BxN` in the accumulation dtype
(float32, or float64 when h is float64), so bf16 hidden states get fp32 Anderson
Gram matrices and damping; f always sees h in its own dtypes.

The returned state is f(h) for the selected iterate h (the last one when the
tolerance is off or the example converged, otherwise per `on_nonconvergence`), so it
is always a block output, and `residual_B` is exactly ||f(h) - h|| for that h.

The residual and runaway rules are cofre_jax/fixed_point/residuals.py; the flat state
and the checks of f's shapes are cofre_jax/fixed_point/state.py.

Letters: B batch, N flattened per-example state size, M history window.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.fixed_point.residuals import _residual, _step_norms, runaway
from cofre_jax.fixed_point.specs import SolverSpec
from cofre_jax.fixed_point.state import (
    BlockFn,
    PyTree,
    batch_max_iter,
    check_block_shapes,
    flat_state,
    select,
)


class SolverStats(NamedTuple):
    iterations_B: jax.Array  # int32: evaluations of f counted for each example
    residual_B: jax.Array  # float32: residual of the returned iterate (inf: non-finite, runaway)
    converged_B: jax.Array  # bool: reached the tolerance (tolerance off: residual finite)
    evals: jax.Array  # int32 scalar: batched calls of f, i.e. block evaluations spent


class NonConvergenceError(RuntimeError):
    """Raised by the 'raise' policy when an example misses the tolerance."""


# ----------------------------------------------------------------------------- methods
# Each method is (init(z0_BxN) -> state, step(state, z, fz, count_B) -> (z_next, state)),
# where count_B is how many evaluations the example had before this one.


def _picard(spec: SolverSpec):
    def init(z_BxN):
        return ()

    def step(state, z_BxN, fz_BxN, count_B):
        del count_B
        if spec.damping == 1.0:
            return fz_BxN, state
        return (1.0 - spec.damping) * z_BxN + spec.damping * fz_BxN, state

    return init, step


def _anderson(spec: SolverSpec):
    m = spec.window

    def init(z_BxN):
        hist_BxMxN = jnp.zeros((z_BxN.shape[0], m, z_BxN.shape[1]), z_BxN.dtype)
        return hist_BxMxN, hist_BxMxN

    def step(state, z_BxN, fz_BxN, count_B):
        x_BxMxN, f_BxMxN = state
        slot_BxM = jax.nn.one_hot(count_B % m, m, dtype=jnp.bool_)[..., None]
        x_BxMxN = jnp.where(slot_BxM, z_BxN[:, None], x_BxMxN)
        f_BxMxN = jnp.where(slot_BxM, fz_BxN[:, None], f_BxMxN)
        g_BxMxN = f_BxMxN - x_BxMxN
        valid_BxM = jnp.arange(m)[None] < jnp.minimum(count_B + 1, m)[:, None]
        gram_BxMxM = jnp.einsum("bmn,bkn->bmk", g_BxMxN, g_BxMxN)
        diag_BxM = jnp.diagonal(gram_BxMxM, axis1=1, axis2=2)
        # Ridge relative to each slot's own squared residual (the Gram's diagonal): unit-free,
        # and the oldest, largest residual in the window no longer over-regularises the
        # recent, small ones (a window-mean scale made Anderson slower than Picard on fast
        # contractions: tests/fixed_point/test_solvers.py).
        lam_BxM = spec.ridge * diag_BxM + jnp.finfo(z_BxN.dtype).tiny
        eye_MxM = jnp.eye(m, dtype=z_BxN.dtype)
        both_BxMxM = valid_BxM[:, :, None] & valid_BxM[:, None, :]
        # Empty slots become identity rows with a zero border, which pins their weight to 0.
        ridged_BxMxM = gram_BxMxM + lam_BxM[:, :, None] * eye_MxM
        inner_BxMxM = jnp.where(both_BxMxM, ridged_BxMxM, eye_MxM)
        border_BxM = valid_BxM.astype(z_BxN.dtype)
        top_Bx1xM1 = jnp.concatenate([jnp.zeros_like(border_BxM[:, :1]), border_BxM], 1)[:, None]
        lower_BxMxM1 = jnp.concatenate([border_BxM[:, :, None], inner_BxMxM], 2)
        system_BxM1xM1 = jnp.concatenate([top_Bx1xM1, lower_BxMxM1], 1)
        rhs_BxM1 = jnp.zeros_like(top_Bx1xM1[:, 0]).at[:, 0].set(1.0)
        alpha_BxM = jnp.linalg.solve(system_BxM1xM1, rhs_BxM1[..., None])[:, 1:, 0]
        mixed_BxN = jnp.einsum("bm,bmn->bn", alpha_BxM, f_BxMxN)
        if spec.beta != 1.0:
            mixed_BxN = spec.beta * mixed_BxN + (1.0 - spec.beta) * jnp.einsum(
                "bm,bmn->bn", alpha_BxM, x_BxMxN
            )
        # A singular window (e.g. repeated iterates) falls back to a plain step, never NaN.
        ok_B = jnp.all(jnp.isfinite(mixed_BxN), axis=1)
        return jnp.where(ok_B[:, None], mixed_BxN, fz_BxN), (x_BxMxN, f_BxMxN)

    return init, step


# Limited-memory Broyden was benchmarked and dropped: it never needed fewer
# evaluations than Anderson (benchmarks/results/solvers.md).
_METHODS = {"picard": _picard, "anderson": _anderson}


# ----------------------------------------------------------------------------- driver


def solve(
    f: BlockFn,
    params: PyTree,
    h0: PyTree,
    x: PyTree,
    spec: SolverSpec,
    *,
    max_iter: int | jax.Array | None = None,
) -> tuple[PyTree, SolverStats]:
    """Solves h = f(params, h, x) from h0; returns (h_star, SolverStats).

    `max_iter` overrides `spec.max_iter` and may be a traced integer, scalar or per
    example (B,), e.g. a sampler's per-step budget inside a `lax` loop. A traced cap
    of 0 returns h0 unchanged with residual inf and iterations 0. Not differentiable
    in reverse mode (a dynamic-trip loop): wrap it with a gradient strategy from
    `cofre_jax.fixed_point.gradients`.
    """
    spec.validate()
    if spec.method not in _METHODS:
        raise ValueError(f"solver method {spec.method!r} is not one of {tuple(_METHODS)}")
    state = flat_state(h0)
    check_block_shapes(f, params, h0, x)
    cap_B = batch_max_iter(spec.max_iter if max_iter is None else max_iter, state.batch)
    init, step = _METHODS[spec.method](spec)
    tol_on = spec.tol > 0.0
    keep_best = tol_on and spec.on_nonconvergence == "best"

    z0_BxN = state.flatten(h0)
    batch = state.batch
    # The coarsest resolution among h's leaves: f sees h rounded to it.
    eps = max(float(jnp.finfo(d).eps) for d in state.dtypes)
    carry = dict(
        z=z0_BxN,
        out=z0_BxN,
        res=jnp.full((batch,), jnp.inf, jnp.float32),
        # Per-example reference of the first evaluation, for the runaway guard.
        scale0=jnp.zeros((batch,), state.acc_dtype),
        step0=jnp.zeros((batch,), state.acc_dtype),
        iters=jnp.zeros((batch,), jnp.int32),
        converged=jnp.zeros((batch,), jnp.bool_),
        active=cap_B > 0,
        evals=jnp.zeros((), jnp.int32),
        method=init(z0_BxN),
    )

    def cond(c):
        return jnp.any(c["active"])

    def body(c):
        active_B = c["active"]
        fz_BxN = state.flatten(f(params, state.unflatten(c["z"]), x))
        diff_B, fz_norm_B, z_norm_B = _step_norms(fz_BxN, c["z"])
        first_B = c["iters"] == 0
        scale0_B = jnp.where(first_B, jnp.maximum(z_norm_B, fz_norm_B), c["scale0"])
        step0_B = jnp.where(first_B, diff_B, c["step0"])
        ran_away_B = runaway(diff_B, fz_norm_B, scale0_B, step0_B, eps)
        res_B = jnp.where(ran_away_B, jnp.inf, _residual(diff_B, fz_norm_B, spec.tol_kind))
        take_B = active_B & (res_B < c["res"]) if keep_best else active_B
        hit_B = res_B <= spec.tol if tol_on else jnp.zeros_like(active_B)
        z_next_BxN, method_next = step(c["method"], c["z"], fz_BxN, c["iters"])
        iters_B = c["iters"] + active_B.astype(jnp.int32)
        return dict(
            z=select(active_B, z_next_BxN, c["z"]),
            out=select(take_B, fz_BxN, c["out"]),
            res=jnp.where(take_B, res_B, c["res"]),
            scale0=scale0_B,
            step0=step0_B,
            iters=iters_B,
            converged=c["converged"] | (active_B & hit_B),
            active=active_B & ~hit_B & (iters_B < cap_B),
            evals=c["evals"] + 1,
            method=select(active_B, method_next, c["method"]),
        )

    if tol_on:
        c = jax.lax.while_loop(cond, body, carry)
    else:
        cap = spec.max_iter if max_iter is None else max_iter
        uniform = jnp.ndim(cap) == 0  # one cap for the batch: every example runs it
        c = _fixed_count_loop(f, params, x, state, step, carry, cap_B, eps, spec.tol_kind, uniform)
    converged_B = c["converged"] if tol_on else jnp.isfinite(c["res"])
    stats = SolverStats(
        iterations_B=c["iters"], residual_B=c["res"], converged_B=converged_B, evals=c["evals"]
    )
    if spec.on_nonconvergence == "raise":
        raise_if_not_converged(stats)
    return state.unflatten(c["out"]), stats


def _fixed_count_loop(f, params, x, state, step, carry, cap_B, eps, tol_kind, uniform):
    """The tolerance-off loop: every example runs exactly its cap (the budgeted sampler,
    SJFB's no-grad phase), so no residual decides anything inside the loop. The body
    is f, the method's step and selects only; the norms of the first evaluation (the
    runaway guard's reference) and of the last (the returned residual) are taken once,
    after the loop, from the carried f(h0) and the last input. Same iterates, same
    returned state and stats as the general loop; per iteration it saves the six
    row reductions, which on a CPU cost more wall time than their FLOPs (each is a
    parallel task, and a contended machine makes every hand-off wait). With one
    (`uniform`) cap every example is active until the loop ends, so the per-example
    selects are dropped too."""
    z0_BxN = carry["z"]
    max_cap = jnp.max(cap_B)
    carry = dict(
        z=z0_BxN,
        last_in=z0_BxN,
        out=z0_BxN,
        first_out=z0_BxN,
        iters=carry["iters"],
        active=carry["active"],
        evals=carry["evals"],
        method=carry["method"],
    )

    def body(c):
        active_B = c["active"]
        fz_BxN = state.flatten(f(params, state.unflatten(c["z"]), x))
        z_next_BxN, method_next = step(c["method"], c["z"], fz_BxN, c["iters"])
        iters_B = c["iters"] + active_B.astype(jnp.int32)
        if uniform:
            return dict(
                z=z_next_BxN,
                last_in=c["z"],
                out=fz_BxN,
                first_out=jnp.where(c["evals"] == 0, fz_BxN, c["first_out"]),
                iters=iters_B,
                active=iters_B < cap_B,
                evals=c["evals"] + 1,
                method=method_next,
            )
        return dict(
            z=select(active_B, z_next_BxN, c["z"]),
            last_in=select(active_B, c["z"], c["last_in"]),
            out=select(active_B, fz_BxN, c["out"]),
            first_out=select(active_B & (c["iters"] == 0), fz_BxN, c["first_out"]),
            iters=iters_B,
            active=active_B & (iters_B < cap_B),
            evals=c["evals"] + 1,
            method=select(active_B, method_next, c["method"]),
        )

    # Without a tolerance an example is active until its cap: any(active) <=> evals < max cap.
    c = jax.lax.while_loop(lambda c: c["evals"] < max_cap, body, carry)
    diff0_B, fz0_norm_B, z0_norm_B = _step_norms(c["first_out"], z0_BxN)
    diff_B, fz_norm_B, _ = _step_norms(c["out"], c["last_in"])
    ran_away_B = runaway(diff_B, fz_norm_B, jnp.maximum(z0_norm_B, fz0_norm_B), diff0_B, eps)
    res_B = jnp.where(ran_away_B, jnp.inf, _residual(diff_B, fz_norm_B, tol_kind))
    return dict(
        out=c["out"],
        res=jnp.where(c["iters"] > 0, res_B, jnp.inf),
        iters=c["iters"],
        converged=jnp.zeros_like(c["active"]),
        evals=c["evals"],
    )


def _raise_on_host(converged_B, residual_B, iterations_B) -> None:
    converged_B = np.asarray(converged_B)
    if not converged_B.all():
        bad = np.flatnonzero(~converged_B)
        residuals = np.asarray(residual_B)[bad].tolist()
        iterations = np.asarray(iterations_B)[bad].tolist()
        raise NonConvergenceError(
            f"fixed-point solve did not converge for examples {bad.tolist()}: residuals "
            f"{residuals} after {iterations} iterations"
        )


def raise_if_not_converged(stats: SolverStats) -> None:
    """Raises NonConvergenceError now (concrete stats) or when the jitted program runs."""
    args = (stats.converged_B, stats.residual_B, stats.iterations_B)
    try:
        concrete = [np.asarray(a) for a in args]
    except jax.errors.TracerArrayConversionError:
        jax.debug.callback(_raise_on_host, *args)
        return
    _raise_on_host(*concrete)
