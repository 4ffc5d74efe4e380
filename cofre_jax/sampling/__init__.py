"""Samplers of masked diffusion models (docs/method.md §2.1-§2.5), one module per part:

    noise        float64-grade categorical noise, sample_categorical, top_p_filter
    loop         the decoding loop: state, Transition, run_transitions, the time grid
    reveal       reveal rules: ancestral_update (MDLM), confidence_update (MaskGIT)
    ancestral    MDLM's ancestral sampler (logits cache) and its budget form
    warm_start   the fixed-point solve's start per step: cold, reuse, 3SR
    fixed_point  the budgeted FP sampler: iteration caps, the bank, adaptive stopping
    budget       block-pass costs (StepCost: the only place the cost formula lives)
                 and budget plans over the steps
    guidance     classifier-free guidance of conditional denoisers (image models)
    denoisers    the Flax models as sampler denoisers
    draw         sample_plan and draw_samples from a config (--mode=sample and eval)

Every denoiser takes a condition `cond` (a pytree of arrays, traced; None for text).
"""

from cofre_jax.sampling.ancestral import (
    BudgetSampleOutput,
    DenoiseFn,
    SampleOutput,
    ancestral_sample,
    ancestral_sample_with_budget,
)
from cofre_jax.sampling.budget import (
    ALLOCATION_SCHEDULES,
    BudgetError,
    BudgetPlan,
    StepCost,
    cost_formula,
    plan_budget,
)
from cofre_jax.sampling.denoisers import make_fp_denoise_fn, make_mdlm_denoise_fn
from cofre_jax.sampling.draw import Samples, draw_samples, sample_plan
from cofre_jax.sampling.fixed_point import (
    FPDenoiseFn,
    FPDenoiseOutput,
    FPSampleOutput,
    fp_sample,
    fp_sample_fn,
    fp_sample_jit,
)
from cofre_jax.sampling.guidance import Guided, make_guided_denoise_fn
from cofre_jax.sampling.loop import SampleState, Transition, ancestral_times, run_transitions
from cofre_jax.sampling.noise import sample_categorical, top_p_filter
from cofre_jax.sampling.reveal import MaskProbFn, RevealFn, ancestral_update, confidence_update
from cofre_jax.sampling.warm_start import PUBLISHED_3SR, ReuseCoefficients

__all__ = [
    "ALLOCATION_SCHEDULES",
    "PUBLISHED_3SR",
    "BudgetError",
    "BudgetPlan",
    "BudgetSampleOutput",
    "DenoiseFn",
    "FPDenoiseFn",
    "FPDenoiseOutput",
    "FPSampleOutput",
    "Guided",
    "MaskProbFn",
    "ReuseCoefficients",
    "RevealFn",
    "SampleOutput",
    "SampleState",
    "Samples",
    "StepCost",
    "Transition",
    "ancestral_sample",
    "ancestral_sample_with_budget",
    "ancestral_times",
    "ancestral_update",
    "confidence_update",
    "cost_formula",
    "draw_samples",
    "fp_sample",
    "fp_sample_fn",
    "fp_sample_jit",
    "make_fp_denoise_fn",
    "make_guided_denoise_fn",
    "make_mdlm_denoise_fn",
    "plan_budget",
    "run_transitions",
    "sample_categorical",
    "sample_plan",
    "top_p_filter",
]
