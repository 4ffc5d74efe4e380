"""Sampling budgets in block passes (docs/method.md §2.2) and their allocation over steps.

Cost unit. One denoiser call costs `base + N * per_iteration` transformer-block forward
passes: for FP-MDLM base = K_pre + K_post and per_iteration = K_fp with N fixed-point
iterations; for MDLM base = num_layers and per_iteration = 0 (N means nothing).
Embeddings, the injection G and the output head are not counted. `StepCost` is the one
place this formula is written: the samplers, --mode=describe, the benchmarks and the
notebooks all price a call through it.

Plan. A budget B and T denoising steps give per-step iteration counts N_0..N_{T-1}
(step 0 is the noisiest, t = 1) with

    sum_i (base + N_i * per_iteration) <= B,   N_i >= min_iterations,

and the leftover B - cost smaller than one iteration (per_iteration), so the plan
spends the budget up to what an integer count can use. How it works:
1. T: given, or derived as max(1, B // step_cost(default_iterations)), the number of
   steps at the default depth (MDLM: B // num_layers).
2. Every step gets min_iterations; the I = (B - T * base) // per_iteration - T * min
   extra iterations are split in proportion to the schedule's weights w_i, rounded
   by largest remainder (floors first, then one more to the steps with the largest
   fractional parts, earlier steps first on ties), so they sum to I exactly.
A budget below T * step_cost(min_iterations) is a `BudgetError` naming the numbers.

Schedules (weights w_i, i = 0..T-1, before normalisation):
    fixed         1                                  equal split
    decreasing    T - i                              linear, most iterations early
    increasing    i + 1                              linear, most iterations late
    cosine        1 + cos(pi (i + 1/2) / T)          half-cosine from ~2 down to ~0
    front_loaded  2^(-4 i / T)                       geometric, halves every T/4 steps

The plan is computed on the host (numpy) once per sampler call; the sampler receives
N_T as an array, so budgets of the same T share one compilation.

Letters: T steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cofre_jax.config.choices import ALLOCATION_SCHEDULES
from cofre_jax.models import block_cost


class BudgetError(ValueError):
    """A budget cannot pay for the requested steps."""


@dataclasses.dataclass(frozen=True)
class StepCost:
    """Block passes of one denoiser call: base + N * per_iteration."""

    base: int
    per_iteration: int

    def __post_init__(self):
        if self.base < 0 or self.per_iteration < 0 or self.base + self.per_iteration < 1:
            raise ValueError(
                f"StepCost(base={self.base}, per_iteration={self.per_iteration}): both must be "
                ">= 0 and a step must cost at least one block pass"
            )

    def __call__(self, iterations):
        """Block passes of a call with `iterations` fixed-point iterations (int, float
        mean or array)."""
        return self.base + iterations * self.per_iteration

    def total(self, calls, iterations=0):
        """Block passes of `calls` denoiser calls that ran `iterations` fixed-point
        iterations in all: calls * base + iterations * per_iteration (ints or arrays)."""
        return calls * self.base + iterations * self.per_iteration

    @classmethod
    def for_model(cls, model_config) -> StepCost:
        """From a `ModelConfig`, as its model class counts (`cofre_jax.models.block_cost`):
        MDLM num_layers per call; FP-MDLM k_pre + N k_fp + k_post."""
        base, per_iteration = block_cost(model_config)
        return cls(base=base, per_iteration=per_iteration)


def cost_formula(model_config) -> str:
    """The per-call cost of a `ModelConfig` as text: "12" (MDLM), "1 + 1*N + 1" (FP-MDLM
    k_pre + k_fp*N + k_post, N fixed-point iterations)."""
    cost = StepCost.for_model(model_config)
    if not cost.per_iteration:
        return str(cost.base)
    return f"{model_config.k_pre} + {cost.per_iteration}*N + {model_config.k_post}"


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    budget: int  # B, block passes
    iterations_T: tuple[int, ...]  # N_i per step (all 0 when per_iteration = 0)
    cost: StepCost

    @property
    def steps(self) -> int:
        return len(self.iterations_T)

    @property
    def block_passes(self) -> int:
        """Planned spend: sum_i base + N_i per_iteration (<= budget)."""
        return sum(self.cost(n) for n in self.iterations_T)


def schedule_weights(schedule: str, steps: int) -> np.ndarray:
    """Positive float64 weights w_T of an allocation schedule (see module docstring)."""
    i_T = np.arange(steps, dtype=np.float64)
    if schedule == "fixed":
        w_T = np.ones(steps)
    elif schedule == "decreasing":
        w_T = steps - i_T
    elif schedule == "increasing":
        w_T = i_T + 1.0
    elif schedule == "cosine":
        w_T = 1.0 + np.cos(np.pi * (i_T + 0.5) / steps)
    elif schedule == "front_loaded":
        w_T = np.exp2(-4.0 * i_T / steps)
    else:
        raise ValueError(f"unknown allocation schedule {schedule!r}; valid: {ALLOCATION_SCHEDULES}")
    return w_T


def largest_remainder(total: int, weights_T: np.ndarray) -> np.ndarray:
    """Non-negative integers proportional to weights_T that sum to `total` exactly."""
    weights_T = np.asarray(weights_T, np.float64)
    if total < 0 or weights_T.ndim != 1 or not (weights_T >= 0).all() or weights_T.sum() <= 0:
        raise ValueError(f"need total >= 0 and non-negative weights with a positive sum; got "
                         f"total={total}, weights={weights_T}")  # fmt: skip
    share_T = total * weights_T / weights_T.sum()
    floor_T = np.floor(share_T).astype(np.int64)
    short = total - int(floor_T.sum())
    # Stable sort on the negated remainders: ties go to the earlier step.
    order_T = np.argsort(-(share_T - floor_T), kind="stable")
    floor_T[order_T[:short]] += 1
    return floor_T


def plan_budget(
    budget: int,
    cost: StepCost,
    *,
    steps: int | None = None,
    schedule: str = "fixed",
    default_iterations: int = 8,
    min_iterations: int = 1,
) -> BudgetPlan:
    """Per-step iteration counts that spend at most `budget` block passes (see module
    docstring). steps=None derives T from the budget at `default_iterations` per step."""
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < 1:
        raise BudgetError(f"budget must be a positive number of block passes, got {budget!r}")
    if min_iterations < 0 or default_iterations < min_iterations:
        raise BudgetError(
            f"need 0 <= min_iterations <= default_iterations, got {min_iterations}, "
            f"{default_iterations}"
        )
    schedule_weights(schedule, 1)  # unknown names fail before any budget arithmetic
    budget = int(budget)
    floor_cost = cost(min_iterations)
    if floor_cost < 1:
        raise BudgetError(
            f"a step of {min_iterations} iterations costs {floor_cost} block passes under "
            f"{cost}; raise min_iterations so every step costs at least one"
        )
    if steps is None:
        steps = max(1, budget // cost(default_iterations))
    elif steps < 1:
        raise BudgetError(f"steps must be >= 1, got {steps}")
    if budget < steps * floor_cost:
        raise BudgetError(
            f"budget {budget} block passes is below the minimum of {steps} step(s) x "
            f"{floor_cost} (= {cost.base} + {min_iterations} x {cost.per_iteration}) = "
            f"{steps * floor_cost}; raise the budget or lower the steps"
        )
    if cost.per_iteration == 0:
        return BudgetPlan(budget, (0,) * steps, cost)
    extra = (budget - steps * cost.base) // cost.per_iteration - steps * min_iterations
    iterations_T = min_iterations + largest_remainder(extra, schedule_weights(schedule, steps))
    return BudgetPlan(budget, tuple(int(n) for n in iterations_T), cost)
