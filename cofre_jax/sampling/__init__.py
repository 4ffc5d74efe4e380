"""Samplers of masked diffusion models (docs/method.md §2.1-§2.5), one module per part:

    noise        float64-grade categorical noise, sample_categorical, top_p_filter
    loop         the decoding loop: state, Transition, run_transitions, the time grid
    reveal       reveal rules: ancestral_update (MDLM), confidence_update (MaskGIT)
    halton       the image rules: the Halton order, the arccos counts, HaltonReveal,
                 AnnealedConfidence (step-indexed, docs/method.md §2.7)
    rules        the reveal rules by name (REVEAL_RULES, make_reveal_fn)
    ancestral    MDLM's ancestral sampler (logits cache) and its budget form
    warm_start   the fixed-point solve's start per step: cold, reuse, 3SR
    fixed_point  the budgeted FP sampler: iteration caps, the bank, adaptive stopping
    budget       block-pass costs (StepCost: the only place the cost formula lives)
                 and budget plans over the steps
    guidance     classifier-free guidance of conditional denoisers (image models)
    denoisers    the Flax models as sampler denoisers
    draw         sample_plan and draw_samples from a config (--mode=sample and eval)
    images       draw_image_samples: class-conditional codes with the config's reveal
                 rule and guidance (the image task's draw)

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
from cofre_jax.sampling.guidance import (
    GUIDANCE_RAMPS,
    Guided,
    block_passes_with_guidance,
    guidance_scale,
    make_guided_denoise_fn,
    make_guided_fp_denoise_fn,
)
from cofre_jax.sampling.halton import (
    AnnealedConfidence,
    HaltonReveal,
    arccos_mask_counts,
    arccos_reveal_counts,
    halton_order,
)
from cofre_jax.sampling.images import draw_image_samples, image_reveal_fn
from cofre_jax.sampling.loop import SampleState, Transition, ancestral_times, run_transitions
from cofre_jax.sampling.noise import sample_categorical, top_p_filter
from cofre_jax.sampling.reveal import (
    MaskProbFn,
    RevealFn,
    ancestral_update,
    confidence_update,
    step_of_time,
)
from cofre_jax.sampling.rules import REVEAL_RULES, make_reveal_fn
from cofre_jax.sampling.warm_start import PUBLISHED_3SR, ReuseCoefficients

__all__ = [
    "ALLOCATION_SCHEDULES",
    "GUIDANCE_RAMPS",
    "PUBLISHED_3SR",
    "REVEAL_RULES",
    "AnnealedConfidence",
    "BudgetError",
    "BudgetPlan",
    "BudgetSampleOutput",
    "DenoiseFn",
    "FPDenoiseFn",
    "FPDenoiseOutput",
    "FPSampleOutput",
    "Guided",
    "HaltonReveal",
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
    "arccos_mask_counts",
    "arccos_reveal_counts",
    "block_passes_with_guidance",
    "confidence_update",
    "cost_formula",
    "draw_image_samples",
    "draw_samples",
    "fp_sample",
    "fp_sample_fn",
    "fp_sample_jit",
    "guidance_scale",
    "halton_order",
    "image_reveal_fn",
    "make_fp_denoise_fn",
    "make_guided_denoise_fn",
    "make_guided_fp_denoise_fn",
    "make_mdlm_denoise_fn",
    "make_reveal_fn",
    "plan_budget",
    "run_transitions",
    "sample_categorical",
    "sample_plan",
    "step_of_time",
    "top_p_filter",
]
