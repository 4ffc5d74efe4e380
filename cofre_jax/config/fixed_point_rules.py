"""The allowed ranges of the fixed-point solver and gradient settings, in the spec's
field names (cofre_jax/fixed_point/specs.py).

Both the specs' own `validate()` and the config's `fixed_point` section check against
these rules: a spec built by hand fails like a bad config does, and the config names
the config field the user set (FixedPointConfig.validate renames the fields).

Each function yields (ok, field, value, allowed) in checking order; the first rule that
is not ok is the error.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cofre_jax.config.choices import (
    GRADIENT_METHODS,
    NONCONVERGENCE_POLICIES,
    SOLVER_METHODS,
    TOL_KINDS,
)

Rule = tuple[bool, str, Any, str]


def solver_rules(
    *,
    method: str,
    max_iter: int,
    tol: float,
    tol_kind: str,
    damping: float,
    window: int,
    ridge: float,
    beta: float,
    on_nonconvergence: str,
) -> Iterator[Rule]:
    yield method in SOLVER_METHODS, "method", method, f"one of {SOLVER_METHODS}"
    yield max_iter >= 1, "max_iter", max_iter, ">= 1"
    yield tol >= 0.0, "tol", tol, ">= 0 (0 turns the tolerance off)"
    yield tol_kind in TOL_KINDS, "tol_kind", tol_kind, f"one of {TOL_KINDS}"
    yield 0.0 < damping <= 1.0, "damping", damping, "(0, 1]"
    yield window >= 1, "window", window, ">= 1"
    yield ridge >= 0.0, "ridge", ridge, ">= 0"
    yield 0.0 < beta <= 1.0, "beta", beta, "(0, 1]"
    yield (
        on_nonconvergence in NONCONVERGENCE_POLICIES,
        "on_nonconvergence",
        on_nonconvergence,
        f"one of {NONCONVERGENCE_POLICIES}",
    )


def gradient_rules(
    *,
    method: str,
    nograd_range: tuple[int, int],
    grad_range: tuple[int, int],
    phantom_steps: int,
    phantom_damping: float,
    unrolled_steps: int,
) -> Iterator[Rule]:
    """The gradient's own fields; its adjoint solver is checked by `solver_rules`."""
    yield method in GRADIENT_METHODS, "method", method, f"one of {GRADIENT_METHODS}"
    for name, rng, lo_min in (("nograd_range", nograd_range, 0), ("grad_range", grad_range, 1)):
        yield (
            len(rng) == 2 and lo_min <= rng[0] <= rng[1],
            name,
            rng,
            f"(lo, hi) with {lo_min} <= lo <= hi",
        )
    yield phantom_steps >= 1, "phantom_steps", phantom_steps, ">= 1"
    yield 0.0 < phantom_damping <= 1.0, "phantom_damping", phantom_damping, "(0, 1]"
    yield unrolled_steps >= 1, "unrolled_steps", unrolled_steps, ">= 1"
