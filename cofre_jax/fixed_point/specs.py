"""Frozen settings of the fixed-point solvers and gradient strategies.

`specs_from_config` builds these from the typed config's `fixed_point` section;
`validate()` raises one `ValueError` naming the field and its allowed range (the rules
live in cofre_jax/config/fixed_point_rules.py, shared with the config's own checks).
The solver functions call `validate()` themselves, so a bad setting fails at trace time
even when built by hand.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from cofre_jax.config.choices import (
    GRADIENT_METHODS,
    NONCONVERGENCE_POLICIES,
    SOLVER_METHODS,
    TOL_KINDS,
)
from cofre_jax.config.fixed_point_rules import gradient_rules, solver_rules

if TYPE_CHECKING:
    from cofre_jax.config.typed import FixedPointConfig

__all__ = [
    "GRADIENT_METHODS",
    "NONCONVERGENCE_POLICIES",
    "SOLVER_METHODS",
    "TOL_KINDS",
    "GradientSpec",
    "SolverSpec",
    "SpecError",
    "specs_from_config",
]


class SpecError(ValueError):
    """A spec field out of range; `field`, `value` and `allowed` let config code name the
    config field the user set instead of the spec's own field."""

    def __init__(self, field: str, value, allowed: str):
        super().__init__(f"fixed-point setting '{field}' = {value!r} is invalid: allowed {allowed}")
        self.field, self.value, self.allowed = field, value, allowed


def _fields(spec) -> dict:
    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


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
        for rule in solver_rules(**_fields(self)):
            _check(*rule)


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
        own = _fields(self)
        del own["adjoint"], own["remat"]  # remat is a bool: nothing to check
        for rule in gradient_rules(**own):
            _check(*rule)
        self.adjoint.validate()


def specs_from_config(config: FixedPointConfig) -> tuple[SolverSpec, GradientSpec]:
    """(solver, gradient) specs of the typed config's `fixed_point` section."""
    solver_fields, gradient_fields, adjoint_fields = config.spec_fields()
    solver = SolverSpec(**solver_fields)
    gradient = GradientSpec(
        **gradient_fields, remat=config.remat, adjoint=SolverSpec(**adjoint_fields)
    )
    return solver, gradient
