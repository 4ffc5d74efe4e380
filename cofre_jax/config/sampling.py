"""The task-independent sections of sampling and evaluation: sample and eval.

Fields mirror `configs/base.py`, where each one is documented.
"""

from __future__ import annotations

import dataclasses

from cofre_jax.config.checks import _check, _check_choice, _int_tuple_field
from cofre_jax.config.choices import (
    ALLOCATION_SCHEDULES,
    FID_FEATURES,
    GUIDANCE_RAMPS,
    REVEAL_RULES,
    WARM_STARTS,
)


@dataclasses.dataclass(frozen=True)
class SampleConfig:
    seed: int
    num_samples: int
    steps: int  # T when budget = 0
    top_p: float  # 1.0 disables the nucleus filter
    reuse_logits: bool  # skip the network when no token changed (MDLM's cache)
    final_eps: float  # last time of the linspace(1, final_eps, steps + 1) grid
    # Budget in block passes (cofre_jax/sampling/budget.py); 0: the cost of `steps` calls at
    # fixed_point.eval_iterations.
    budget: int
    budget_steps: int  # T under a budget; 0 derives it from the budget
    schedule: str  # allocation of fixed-point iterations over the steps
    min_iterations: int  # fewest fixed-point iterations a step gets
    warm_start: str  # solver start per step: cold, reuse or 3sr (docs/method.md §2.5)
    reuse_visible: float  # 3SR gamma of unchanged visible tokens
    reuse_masked_min: float  # 3SR gamma of still-masked tokens at visible fraction 0
    reuse_masked_max: float  # ... and at visible fraction 1
    reuse_changed: float  # 3SR gamma of newly revealed tokens
    adaptive_tol: float  # per-sequence residual tolerance of adaptive stopping; 0 = off
    frame: bool  # start with position 0 = BOS and the last = EOS visible
    reveal_rule: str  # which masks a step reveals: ancestral (text), confidence, halton
    guidance_scale: float  # classifier-free guidance w; 0 = off (no null-class pass)
    guidance_ramp: str  # how w follows the step: constant or linear
    temperature: float  # token softmax temperature of the confidence and halton rules
    confidence_tau: float  # Gumbel noise scale of the confidence rule, annealed to 0

    def validate(self) -> None:
        _check(self.num_samples >= 1, "sample.num_samples", self.num_samples, ">= 1")
        _check(self.steps >= 1, "sample.steps", self.steps, ">= 1")
        _check(0.0 < self.top_p <= 1.0, "sample.top_p", self.top_p, "(0, 1]")
        _check(0.0 < self.final_eps < 1.0, "sample.final_eps", self.final_eps, "(0, 1)")
        _check(self.budget >= 0, "sample.budget", self.budget, ">= 0 (0: no budget)")
        _check(self.budget_steps >= 0, "sample.budget_steps", self.budget_steps, ">= 0 (0: derive)")
        _check_choice("sample.schedule", self.schedule, ALLOCATION_SCHEDULES)
        _check(self.min_iterations >= 0, "sample.min_iterations", self.min_iterations, ">= 0")
        _check_choice("sample.warm_start", self.warm_start, WARM_STARTS)
        for name in ("reuse_visible", "reuse_masked_min", "reuse_masked_max", "reuse_changed"):
            value = getattr(self, name)
            _check(0.0 <= value <= 1.0, f"sample.{name}", value, "[0, 1]")
        _check(self.adaptive_tol >= 0.0, "sample.adaptive_tol", self.adaptive_tol, ">= 0 (0: off)")
        _check_choice("sample.reveal_rule", self.reveal_rule, REVEAL_RULES)
        _check(
            self.guidance_scale >= 0.0,
            "sample.guidance_scale",
            self.guidance_scale,
            ">= 0 (0: off)",
        )
        _check_choice("sample.guidance_ramp", self.guidance_ramp, GUIDANCE_RAMPS)
        _check(self.temperature > 0.0, "sample.temperature", self.temperature, "> 0")
        _check(self.confidence_tau >= 0.0, "sample.confidence_tau", self.confidence_tau, ">= 0")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """--mode=eval: validation NELBO, costs, then samples scored by a scorer LM."""

    budgets: tuple[int, ...]  # block passes to sample at; () = likelihood and costs only
    budget_steps: tuple[int, ...]  # denoising steps per budget; () = sample.budget_steps
    num_samples: int  # per budget
    scorer: str  # "smollm2", a .gguf file, a Hugging Face folder, "oracle" or "none"
    scorer_batch_size: int
    report: str  # the report is <workdir>/<report>_step<N>.json
    reference: str  # a quality_vs_budget.json whose MDLM/CoFRe figures are printed too
    fid_features: str  # images: "domain" (in-domain classifier) or "inception" (FID)
    inception_weights: str  # pytorch-fid's pt_inception-2015-12-05-*.pth for "inception"

    def __post_init__(self):
        _int_tuple_field(self, "eval", "budgets", "block-pass budgets, e.g. (32, 64)")
        _int_tuple_field(self, "eval", "budget_steps", "step counts, one per budget")

    def validate(self) -> None:
        _check(all(b >= 1 for b in self.budgets), "eval.budgets", self.budgets, "positive budgets")
        _check(
            len(self.budget_steps) in (0, len(self.budgets))
            and all(t >= 1 for t in self.budget_steps),
            "eval.budget_steps",
            self.budget_steps,
            f"() or {len(self.budgets)} positive step counts (one per budget)",
        )
        _check(self.num_samples >= 1, "eval.num_samples", self.num_samples, ">= 1")
        _check(
            self.scorer_batch_size >= 1, "eval.scorer_batch_size", self.scorer_batch_size, ">= 1"
        )
        _check(
            bool(self.report) and "/" not in self.report and self.report == self.report.strip(),
            "eval.report",
            self.report,
            "a file-name stem without '/'",
        )
        _check_choice("eval.fid_features", self.fid_features, FID_FEATURES)
        if self.fid_features == "inception":
            _check(
                bool(self.inception_weights),
                "eval.inception_weights",
                self.inception_weights,
                "a path to pytorch-fid's pt_inception-2015-12-05-*.pth for eval.fid_features "
                "'inception' (nothing is downloaded)",
            )
