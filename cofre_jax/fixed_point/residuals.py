"""Per-example residuals that cannot report a runaway as converged.

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

Letters: B batch, N flattened per-example state size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# "Orders of magnitude": growth of ||f(h)|| over max(||h0||, ||f(h0)||) that, with a
# step that did not contract, marks a runaway. A contraction with Lipschitz constant L
# grows by at most about 2 / (1 - L), so only maps with L > 0.98 get near it, and they
# still converge once their step has halved.
RUNAWAY_GROWTH = 100.0


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


# One entry per cofre_jax.config.choices.TOL_KINDS (tests/test_registries.py).
_TOLERANCES = {
    "relative": lambda diff_B, fz_norm_B: diff_B / (fz_norm_B + 1e-12),
    "absolute": lambda diff_B, fz_norm_B: diff_B,
}


def _residual(diff_B: jax.Array, fz_norm_B: jax.Array, tol_kind: str) -> jax.Array:
    if tol_kind not in _TOLERANCES:
        raise ValueError(f"tol_kind {tol_kind!r} is not one of {tuple(_TOLERANCES)}")
    res_B = _TOLERANCES[tol_kind](diff_B, fz_norm_B).astype(jnp.float32)
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
