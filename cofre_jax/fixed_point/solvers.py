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

Residuals cannot report a runaway as converged. Norms are taken after a max-abs
rescale, so ||f(h)|| does not overflow before the difference does (finite / inf = 0
was "converged"); a non-finite iterate or norm is an infinite residual; and an
iterate that ran away is an infinite residual too (`runaway`): it grew by more than
`RUNAWAY_GROWTH` over the example's first iterate while either its step stayed at
least half the first step (no contraction: Anderson extrapolating along a map with
no fixed point, where ||f(h) - h|| / ||f(h)|| shrinks only because ||f(h)|| grows)
or the float resolution of |h| in h's dtype reached half the first step (f(h) - h
may then round to 0 without h being a fixed point). A runaway iterate never meets
the tolerance, is never the "best" one, and counts as not converged with the
tolerance off.

Letters: B batch, N flattened per-example state size, M history window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.fixed_point.specs import SolverSpec

PyTree = Any
BlockFn = Callable[[PyTree, PyTree, PyTree], PyTree]


class SolverStats(NamedTuple):
    iterations_B: jax.Array  # int32: evaluations of f counted for each example
    residual_B: jax.Array  # float32: residual of the returned iterate (inf: non-finite, runaway)
    converged_B: jax.Array  # bool: reached the tolerance (tolerance off: residual finite)
    evals: jax.Array  # int32 scalar: batched calls of f, i.e. block evaluations spent


# "Orders of magnitude": growth of ||f(h)|| over max(||h0||, ||f(h0)||) that, with a
# step that did not contract, marks a runaway. A contraction with Lipschitz constant L
# grows by at most about 2 / (1 - L), so only maps with L > 0.98 get near it, and they
# still converge once their step has halved.
RUNAWAY_GROWTH = 100.0


class NonConvergenceError(RuntimeError):
    """Raised by the 'raise' policy when an example misses the tolerance."""


# ----------------------------------------------------------------------------- state


class FlatState(NamedTuple):
    """How to go between the pytree h and the flat per-example state z_BxN."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[Any, ...]
    batch: int
    acc_dtype: Any

    def flatten(self, h: PyTree) -> jax.Array:
        leaves = jax.tree.leaves(h)
        return jnp.concatenate(
            [leaf.reshape(self.batch, -1).astype(self.acc_dtype) for leaf in leaves], axis=1
        )

    def unflatten(self, z_BxN: jax.Array) -> PyTree:
        sizes = [int(np.prod(s[1:])) for s in self.shapes]
        parts = jnp.split(z_BxN, np.cumsum(sizes)[:-1], axis=1)
        leaves = [p.reshape(s).astype(d) for p, s, d in zip(parts, self.shapes, self.dtypes)]
        return jax.tree.unflatten(self.treedef, leaves)


def flat_state(h: PyTree) -> FlatState:
    """Checks that every leaf of h is floating with one shared leading batch axis."""
    leaves, treedef = jax.tree.flatten(h)
    if not leaves:
        raise ValueError("fixed-point state h0 has no array leaves")
    for leaf in leaves:
        if jnp.ndim(leaf) < 1:
            raise ValueError(
                "every leaf of h0 needs a leading batch axis; got a leaf of shape "
                f"{jnp.shape(leaf)}"
            )
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise ValueError(f"fixed-point state leaves must be floating; got {leaf.dtype}")
    batches = {leaf.shape[0] for leaf in leaves}
    if len(batches) != 1:
        raise ValueError(f"leaves of h0 disagree on the batch (leading) axis: sizes {batches}")
    acc_dtype = jnp.result_type(jnp.float32, *[leaf.dtype for leaf in leaves])
    return FlatState(
        treedef=treedef,
        shapes=tuple(tuple(leaf.shape) for leaf in leaves),
        dtypes=tuple(leaf.dtype for leaf in leaves),
        batch=batches.pop(),
        acc_dtype=acc_dtype,
    )


def check_block_shapes(f: BlockFn, params: PyTree, h0: PyTree, x: PyTree) -> None:
    """Fails at trace time if f(params, h0, x) does not have h0's structure and shapes."""
    out = jax.eval_shape(f, params, h0, x)
    in_struct = jax.tree.structure(h0)
    out_struct = jax.tree.structure(out)
    if in_struct != out_struct:
        raise ValueError(
            f"f(params, h, x) must return h's pytree structure: h0 is {in_struct}, "
            f"f returned {out_struct}"
        )
    for a, b in zip(jax.tree.leaves(h0), jax.tree.leaves(out)):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(
                f"f(params, h, x) changed a leaf's shape: h0 leaf {tuple(a.shape)}, "
                f"f output {tuple(b.shape)}"
            )


def _select(mask_B: jax.Array, new: PyTree, old: PyTree) -> PyTree:
    def pick(n, o):
        return jnp.where(mask_B.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def row_norm(v_BxN: jax.Array) -> jax.Array:
    """Per-example 2-norm after a max-abs rescale: inf only if the norm itself overflows
    (or v is non-finite), never because a square did."""
    scale_B = jnp.max(jnp.abs(v_BxN), axis=1)
    ok_B = jnp.isfinite(scale_B)
    safe_B = jnp.where(ok_B & (scale_B > 0), scale_B, 1.0)
    norm_B = safe_B * jnp.sqrt(jnp.sum(jnp.square(v_BxN / safe_B[:, None]), axis=1))
    return jnp.where(ok_B, norm_B, jnp.inf)


def _step_norms(fz_BxN: jax.Array, z_BxN: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(||f(z) - z||, ||f(z)||, ||z||), each inf where non-finite."""
    return row_norm(fz_BxN - z_BxN), row_norm(fz_BxN), row_norm(z_BxN)


def _residual(diff_B: jax.Array, fz_norm_B: jax.Array, tol_kind: str) -> jax.Array:
    if tol_kind == "relative":
        res_B = diff_B / (fz_norm_B + 1e-12)
    elif tol_kind == "absolute":
        res_B = diff_B
    else:
        raise ValueError(f"tol_kind {tol_kind!r} is not one of ('relative', 'absolute')")
    res_B = res_B.astype(jnp.float32)
    ok_B = jnp.isfinite(res_B) & jnp.isfinite(diff_B) & jnp.isfinite(fz_norm_B)
    return jnp.where(ok_B, res_B, jnp.inf)


def residual_norm(fz_BxN: jax.Array, z_BxN: jax.Array, tol_kind: str) -> jax.Array:
    """Per-example ||f(z) - z|| (relative: divided by ||f(z)||), float32; inf if z, f(z)
    or either norm is non-finite."""
    diff_B, fz_norm_B, _ = _step_norms(fz_BxN, z_BxN)
    return _residual(diff_B, fz_norm_B, tol_kind)


def runaway(
    diff_B: jax.Array,
    fz_norm_B: jax.Array,
    scale0_B: jax.Array,
    step0_B: jax.Array,
    eps: float,
) -> jax.Array:
    """True where an iterate ran away (module docstring): ||f(h)|| grew by more than
    RUNAWAY_GROWTH over scale0 = max(||h0||, ||f(h0)||) while its step ||f(h) - h|| stayed
    above half the first step step0, or h's float resolution (eps ||f(h)||) reached it."""
    grown_B = fz_norm_B > RUNAWAY_GROWTH * scale0_B
    no_contraction_B = diff_B > 0.5 * step0_B
    unresolved_B = eps * fz_norm_B >= 0.5 * step0_B
    return grown_B & (no_contraction_B | unresolved_B)


def batch_max_iter(max_iter, batch: int) -> jax.Array:
    """Static or traced iteration cap (scalar or per example) as an int32 (B,) array."""
    if isinstance(max_iter, int | np.integer):
        if max_iter < 1:
            raise ValueError(f"max_iter = {max_iter} is invalid: allowed >= 1")
        return jnp.full((batch,), max_iter, jnp.int32)
    max_iter = jnp.asarray(max_iter)
    if not jnp.issubdtype(max_iter.dtype, jnp.integer) or max_iter.ndim > 1:
        raise ValueError(
            f"max_iter must be an int or an integer array of shape () or (B,); got "
            f"{max_iter.dtype} of shape {max_iter.shape}"
        )
    return jnp.broadcast_to(max_iter.astype(jnp.int32), (batch,))


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
        # contractions: tests/test_fixed_point_solvers.py).
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
            z=_select(active_B, z_next_BxN, c["z"]),
            out=_select(take_B, fz_BxN, c["out"]),
            res=jnp.where(take_B, res_B, c["res"]),
            scale0=scale0_B,
            step0=step0_B,
            iters=iters_B,
            converged=c["converged"] | (active_B & hit_B),
            active=active_B & ~hit_B & (iters_B < cap_B),
            evals=c["evals"] + 1,
            method=_select(active_B, method_next, c["method"]),
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
            z=_select(active_B, z_next_BxN, c["z"]),
            last_in=_select(active_B, c["z"], c["last_in"]),
            out=_select(active_B, fz_BxN, c["out"]),
            first_out=_select(active_B & (c["iters"] == 0), fz_BxN, c["first_out"]),
            iters=iters_B,
            active=active_B & (iters_B < cap_B),
            evals=c["evals"] + 1,
            method=_select(active_B, method_next, c["method"]),
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
