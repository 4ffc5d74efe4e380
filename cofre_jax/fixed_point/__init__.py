"""Model-agnostic fixed-point solvers and gradient strategies (pure functions).

Solve h = f(params, h, x) for batched pytrees h, with params an explicit pytree:

    h_star, stats = solve(f, params, h0, x, SolverSpec(method="anderson"))
    h_star, stats = fixed_point(f, params, h0, x, solver_spec, gradient_spec, key=key)
"""

from cofre_jax.fixed_point.diagnostics import jacobian_frobenius_sq, spectral_radius
from cofre_jax.fixed_point.gradients import (
    draw_sjfb_counts,
    fixed_point,
    implicit_fixed_point,
    phantom_fixed_point,
    sjfb_fixed_point,
    unrolled_fixed_point,
)
from cofre_jax.fixed_point.solvers import (
    NonConvergenceError,
    SolverStats,
    raise_if_not_converged,
    solve,
)
from cofre_jax.fixed_point.specs import (
    GRADIENT_METHODS,
    NONCONVERGENCE_POLICIES,
    SOLVER_METHODS,
    TOL_KINDS,
    GradientSpec,
    SolverSpec,
    specs_from_config,
)

__all__ = [
    "GRADIENT_METHODS",
    "NONCONVERGENCE_POLICIES",
    "SOLVER_METHODS",
    "TOL_KINDS",
    "GradientSpec",
    "NonConvergenceError",
    "SolverSpec",
    "SolverStats",
    "draw_sjfb_counts",
    "fixed_point",
    "implicit_fixed_point",
    "jacobian_frobenius_sq",
    "phantom_fixed_point",
    "raise_if_not_converged",
    "sjfb_fixed_point",
    "solve",
    "spectral_radius",
    "specs_from_config",
    "unrolled_fixed_point",
]
