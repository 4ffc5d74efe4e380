"""Block-pass costs (StepCost) and budget plans: allocation over the steps, errors, and the
plan of a config (sample_plan).

Shape legend: T steps.
"""

import numpy as np
import pytest
from tiny import fp_config

from cofre_jax.config.typed import ConfigError
from cofre_jax.sampling import (
    ALLOCATION_SCHEDULES,
    BudgetError,
    StepCost,
    budget,
    cost_formula,
    plan_budget,
    sample_plan,
)


def test_step_cost_is_the_one_cost_formula():
    mdlm = fp_config(**{"model.kind": "mdlm", "model.num_layers": 12}).model
    fp = fp_config(**{"model.k_pre": 2, "model.k_fp": 3, "model.k_post": 1}).model
    assert StepCost.for_model(mdlm) == StepCost(base=12, per_iteration=0)
    assert StepCost.for_model(fp) == StepCost(base=3, per_iteration=3)
    assert StepCost.for_model(fp)(10) == 2 + 10 * 3 + 1
    assert StepCost.for_model(fp)(6.5) == 2 + 6.5 * 3 + 1  # a mean count
    assert StepCost.for_model(fp).total(4, 25) == 4 * 3 + 25 * 3  # 4 calls, 25 iterations
    assert StepCost.for_model(mdlm).total(8) == 96
    np.testing.assert_array_equal(StepCost(2, 1).total(3, np.array([0, 5])), [6, 11])
    assert (cost_formula(mdlm), cost_formula(fp)) == ("12", "2 + 3*N + 1")


def test_plans_never_exceed_random_budgets_and_spend_all_they_can():
    rng = np.random.default_rng(0)
    plans = errors = 0
    for _ in range(3000):
        base_cost, per_iteration = int(rng.integers(0, 13)), int(rng.integers(0, 4))
        if base_cost + per_iteration == 0:
            continue
        cost = StepCost(base=base_cost, per_iteration=per_iteration)
        budget_b = int(rng.integers(1, 400))
        steps = None if rng.random() < 0.4 else int(rng.integers(1, 40))
        schedule = str(rng.choice(ALLOCATION_SCHEDULES))
        min_iterations = int(rng.integers(0, 3))
        default = min_iterations + int(rng.integers(0, 10))
        try:
            plan = plan_budget(
                budget_b, cost, steps=steps, schedule=schedule, default_iterations=default,
                min_iterations=min_iterations,
            )  # fmt: skip
        except BudgetError as e:
            errors += 1
            floor = cost(min_iterations)
            if floor == 0:
                assert "at least one" in str(e)
                continue
            assert budget_b < (steps or 1) * floor, (budget_b, cost, steps, min_iterations)
            assert "below the minimum" in str(e)
            continue
        plans += 1
        n_T = np.asarray(plan.iterations_T)
        assert plan.block_passes == sum(cost(int(n)) for n in n_T) <= budget_b
        assert plan.steps == (steps or max(1, budget_b // cost(default)))
        if cost.per_iteration:
            assert (n_T >= min_iterations).all()
            # What is left cannot pay for one more iteration anywhere.
            assert budget_b - plan.block_passes < cost.per_iteration
        else:
            assert (n_T == 0).all()
    assert plans > 1000 and errors > 50


@pytest.mark.parametrize("steps", [1, 2, 7, 16])
def test_schedule_shapes(steps):
    cost = StepCost(2, 1)
    n = {s: np.asarray(plan_budget(steps * 12 + 5, cost, steps=steps, schedule=s).iterations_T)
         for s in ALLOCATION_SCHEDULES}  # fmt: skip
    assert n["fixed"].max() - n["fixed"].min() <= 1
    for s in ("decreasing", "cosine", "front_loaded"):
        assert (np.diff(n[s]) <= 0).all(), (s, n[s])
    assert (np.diff(n["increasing"]) >= 0).all()
    if steps >= 7:
        assert n["decreasing"][0] > n["fixed"][0] > n["increasing"][0]
    assert len({int(v.sum()) for v in n.values()}) == 1  # same total, different spread


def test_published_accounting_and_mdlm_budget():
    fp = StepCost(base=2, per_iteration=1)  # FP-MDLM: 1 + N + 1
    assert plan_budget(96, fp, steps=8, schedule="fixed").iterations_T == (10,) * 8
    mdlm = StepCost(base=12, per_iteration=0)  # 12 blocks: budget 96 = 8 steps
    for b, steps in ((96, 8), (100, 8), (12, 1), (768, 64)):
        plan = plan_budget(b, mdlm)
        assert (plan.steps, plan.block_passes) == (steps, steps * 12)
    largest = budget.largest_remainder(10, np.array([1.0, 1.0, 1.0]))
    np.testing.assert_array_equal(largest, [4, 3, 3])  # ties go to the earlier step


def test_budget_below_one_step_is_a_clear_error():
    with pytest.raises(BudgetError, match=r"budget 2 block passes is below the minimum of 1"):
        plan_budget(2, StepCost(2, 1))
    with pytest.raises(BudgetError, match="below the minimum of 8 step"):
        plan_budget(90, StepCost(12, 0), steps=8)
    with pytest.raises(ValueError, match="unknown allocation schedule 'linear'"):
        plan_budget(96, StepCost(2, 1), schedule="linear")
    # Through the config, the error names the field.
    config = fp_config(**{"sample.budget": 11, "sample.budget_steps": 4})
    with pytest.raises(ConfigError, match="'sample.budget'.*below the minimum of 4 step"):
        sample_plan(config)


def test_sample_config_fields_are_validated():
    for field, value, allowed in (
        ("schedule", "linear", "one of"),
        ("warm_start", "hot", "one of"),
        ("reuse_changed", 1.5, r"\[0, 1\]"),
        ("budget", -1, ">= 0"),
        ("adaptive_tol", -0.1, ">= 0"),
    ):
        with pytest.raises(ConfigError, match=f"'sample.{field}' = .*allowed {allowed}"):
            fp_config(**{f"sample.{field}": value})
    # budget 0: `steps` steps at eval_iterations (8 here), spread by the schedule.
    plan = sample_plan(fp_config(**{"sample.steps": 5, "sample.schedule": "fixed"}))
    assert plan.iterations_T == (8,) * 5 and plan.budget == 50
