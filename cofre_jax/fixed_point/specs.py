"""Frozen settings of the fixed-point solvers and gradient strategies.

Config code builds these from the ConfigDict; `validate()` raises one `ValueError`
naming the field and its allowed range. The solver functions call `validate()`
themselves, so a bad setting fails at trace time even when built by hand.
"""

from __future__ import annotations

import dataclasses

SOLVER_METHODS = ("picard", "anderson")
TOL_KINDS = ("relative", "absolute")
NONCONVERGENCE_POLICIES = ("best", "last", "raise")
GRADIENT_METHODS = ("implicit", "sjfb", "phantom", "jfb", "unrolled")


class SpecError(ValueError):
    """A spec field out of range; `field`, `value` and `allowed` let config code name the
    config field the user set instead of the spec's own field."""

    def __init__(self, field: str, value, allowed: str):
        super().__init__(f"fixed-point setting '{field}' = {value!r} is invalid: allowed {allowed}")
        self.field, self.value, self.allowed = field, value, allowed


def _check(ok: bool, field: str, value, allowed: str) -> None:
    if not ok:
        raise SpecError(field, value, allowed)


@dataclasses.dataclass(frozen=True)
class SolverSpec:
    """How to solve h = f(params, h, x) forward.

    tol = 0 turns the tolerance off: every example runs exactly `max_iter` steps
    (what training and the budgeted sampler use).
    """

    method: str = "anderson"
    max_iter: int = 30  # static default; `solve` also accepts a traced count
    tol: float = 1e-3
    tol_kind: str = "relative"  # ||f(h) - h|| or ||f(h) - h|| / ||f(h)||
    damping: float = 1.0  # Picard: h <- (1 - damping) h + damping f(h)
    window: int = 5  # Anderson history size
    ridge: float = 1e-4  # Anderson ridge, relative to each slot's squared residual
    beta: float = 1.0  # Anderson mixing
    on_nonconvergence: str = "best"  # best: lowest-residual iterate; raise: debug

    def validate(self) -> None:
        _check(self.method in SOLVER_METHODS, "method", self.method, f"one of {SOLVER_METHODS}")
        _check(self.max_iter >= 1, "max_iter", self.max_iter, ">= 1")
        _check(self.tol >= 0.0, "tol", self.tol, ">= 0 (0 turns the tolerance off)")
        _check(self.tol_kind in TOL_KINDS, "tol_kind", self.tol_kind, f"one of {TOL_KINDS}")
        _check(0.0 < self.damping <= 1.0, "damping", self.damping, "(0, 1]")
        _check(self.window >= 1, "window", self.window, ">= 1")
        _check(self.ridge >= 0.0, "ridge", self.ridge, ">= 0")
        _check(0.0 < self.beta <= 1.0, "beta", self.beta, "(0, 1]")
        _check(
            self.on_nonconvergence in NONCONVERGENCE_POLICIES,
            "on_nonconvergence",
            self.on_nonconvergence,
            f"one of {NONCONVERGENCE_POLICIES}",
        )


def _default_adjoint() -> SolverSpec:
    return SolverSpec(method="anderson", max_iter=30, tol=1e-4)


@dataclasses.dataclass(frozen=True)
class GradientSpec:
    """How gradients flow through the fixed point (docs/method.md §2.3 for the SJFB ranges)."""

    method: str = "sjfb"
    nograd_range: tuple[int, int] = (0, 4)  # SJFB N_ng ~ U{lo..hi}
    grad_range: tuple[int, int] = (3, 6)  # SJFB N_g ~ U{lo..hi}
    phantom_steps: int = 5
    phantom_damping: float = 0.5
    unrolled_steps: int = 30
    # jax.checkpoint every differentiated step (sjfb, phantom, jfb, unrolled): memory flat
    # in the number of differentiated steps for one more forward of F per step.
    remat: bool = False
    adjoint: SolverSpec = dataclasses.field(default_factory=_default_adjoint)

    def validate(self) -> None:
        _check(self.method in GRADIENT_METHODS, "method", self.method, f"one of {GRADIENT_METHODS}")
        for name, lo_min in (("nograd_range", 0), ("grad_range", 1)):
            rng = getattr(self, name)
            _check(
                len(rng) == 2 and lo_min <= rng[0] <= rng[1],
                name,
                rng,
                f"(lo, hi) with {lo_min} <= lo <= hi",
            )
        _check(self.phantom_steps >= 1, "phantom_steps", self.phantom_steps, ">= 1")
        _check(0.0 < self.phantom_damping <= 1.0, "phantom_damping", self.phantom_damping, "(0, 1]")
        _check(self.unrolled_steps >= 1, "unrolled_steps", self.unrolled_steps, ">= 1")
        self.adjoint.validate()
