"""Drawing samples from a restored model under a block-pass budget: the part of
--mode=sample that --mode=eval repeats at every budget it measures (and the benchmarks
call): `sample_plan` turns the config into a `BudgetPlan`, `draw_samples` runs the
model's sampler (MDLM ancestral or FP) on it. Text samples are unconditional (cond None).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from cofre_jax import diffusion, sharding
from cofre_jax.config.typed import Config, ConfigError, DiffusionConfig, ModelConfig
from cofre_jax.models import build_model, model_class
from cofre_jax.sampling import budget
from cofre_jax.sampling.ancestral import ancestral_sample_with_budget
from cofre_jax.sampling.denoisers import make_fp_denoise_fn, make_mdlm_denoise_fn
from cofre_jax.sampling.fixed_point import fp_sample
from cofre_jax.sampling.reveal import RevealFn, ancestral_update
from cofre_jax.sampling.warm_start import ReuseCoefficients

# The samplers are jitted with their denoiser as a static argument, hashed by identity.
# Building the denoiser once per (model, schedule, solver) settings, not once per call,
# lets a second draw with the same shapes and settings reuse the compiled program.


@functools.lru_cache(maxsize=32)
def _mdlm_denoise_fn(model: ModelConfig, diffusion_cfg: DiffusionConfig) -> Callable:
    schedule = diffusion.make_schedule(diffusion_cfg.schedule, diffusion_cfg.eps)
    return make_mdlm_denoise_fn(build_model(model), schedule.total_noise)


@functools.lru_cache(maxsize=32)
def _fp_denoise_fn(model: ModelConfig, fixed_point, diffusion_cfg: DiffusionConfig, tol: float):
    schedule = diffusion.make_schedule(diffusion_cfg.schedule, diffusion_cfg.eps)
    return make_fp_denoise_fn(build_model(model, fixed_point), schedule.total_noise, tol=tol)


def make_denoise_fn(config: Config) -> Callable:
    """(params, z_BxL, t_B, cond) -> SUBS log-probs, the sampler's view of the model."""
    return _mdlm_denoise_fn(config.model, config.diffusion)


def model_denoise_fn(config: Config) -> Callable:
    """The config's model as its sampler takes it: a `DenoiseFn`, or for a fixed-point
    model an `FPDenoiseFn` (with sample.adaptive_tol); one object per settings."""
    m = config.model
    if not model_class(m).is_fixed_point:
        return make_denoise_fn(config)
    return _fp_denoise_fn(m, config.fixed_point, config.diffusion, config.sample.adaptive_tol)


def sample_plan(config: Config, total: int | None = None, steps: int | None = None):
    """The block-pass plan of a sampling run: `total` block passes in `steps` steps when
    given, else sample.budget in sample.budget_steps (sample.budget 0: sample.steps steps
    at fixed_point.eval_iterations), spread by sample.schedule (sampling.budget)."""
    sc, n_eval = config.sample, config.fixed_point.eval_iterations
    cost = budget.StepCost.for_model(config.model)
    if total is not None:
        field = "eval.budgets"
        steps = steps or sc.budget_steps or None
    elif sc.budget == 0:
        total, steps, field = sc.steps * cost(n_eval), sc.steps, "sample.steps"
    else:
        total, steps, field = sc.budget, sc.budget_steps or None, "sample.budget"
    try:
        return budget.plan_budget(
            total,
            cost,
            steps=steps,
            schedule=sc.schedule,
            default_iterations=max(n_eval, sc.min_iterations),
            min_iterations=sc.min_iterations,
        )
    except budget.BudgetError as e:
        raise ConfigError(f"config field '{field}' is invalid: {e}") from None


@dataclasses.dataclass(frozen=True)
class Samples:
    tokens_BxL: np.ndarray
    block_passes: int
    details: dict[str, Any]  # sampler-specific counts, JSON-ready


def draw_samples(
    config: Config,
    params,
    plan,
    num_samples: int,
    seed: int,
    mesh: Mesh | None = None,
    cond: Any = None,
    reveal_fn: RevealFn = ancestral_update,
    *,
    denoise_fn: Callable | None = None,
    hidden_size: int | None = None,
    depends_on_t: bool = False,
) -> Samples:
    """`num_samples` sequences by the model's budgeted sampler (MDLM ancestral or FP),
    split over `mesh` (default: config.mesh) like a train batch when they divide; cond
    is the samplers' condition (None: unconditional, as for text); reveal_fn the reveal
    rule (`rules.make_reveal_fn(..., steps=plan.steps)` for a step-indexed one).

    denoise_fn replaces `model_denoise_fn(config)` (e.g. a guided wrapper of it, built
    once per settings so the compiled sampler is reused); hidden_size is then the width
    of the h* it returns (FP only; guidance: 2 D) and depends_on_t whether its output
    depends on t beyond the model's (a ramped guidance: the logits cache is then off)."""
    sc, m = config.sample, config.model
    mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
    schedule = diffusion.make_schedule(config.diffusion.schedule, config.diffusion.eps)
    z_BxL = np.full((num_samples, config.data.seq_len), m.mask_id, np.int32)
    if sc.frame:
        # Every tokenizer's BOS/EOS is its last id, the one just before MASK.
        z_BxL[:, 0] = z_BxL[:, -1] = m.mask_id - 1
    batch_ways = mesh.shape["data"] * mesh.shape["fsdp"]
    if jax.process_count() == 1 and num_samples % batch_ways == 0:
        # Samples split over the batch axes like a train batch (else replicated).
        z_BxL = jax.device_put(z_BxL, sharding.batch_sharding(mesh))
    common = dict(
        batch_size=num_samples,
        seq_len=config.data.seq_len,
        mask_id=m.mask_id,
        mask_prob_fn=schedule.mask_prob,
        top_p=sc.top_p,
        final_eps=sc.final_eps,
        z_init_BxL=z_BxL,
        cond=cond,
        reveal_fn=reveal_fn,
    )
    key = jax.random.PRNGKey(seed)
    denoise_fn = denoise_fn if denoise_fn is not None else model_denoise_fn(config)
    if not model_class(m).is_fixed_point:
        # The image models are never time-conditioned (no such field).
        uses_t = depends_on_t or getattr(m, "time_conditioning", False)
        out = ancestral_sample_with_budget(
            denoise_fn,
            params,
            key,
            plan,
            # The cache is exact only for a denoiser that ignores t (MDLM turns it off too).
            reuse_logits=sc.reuse_logits and not uses_t,
            **common,
        )
        details = {"network_calls": int(out.network_calls)}
    else:
        out = fp_sample(
            denoise_fn,
            params,
            key,
            plan,
            hidden_size=hidden_size or m.hidden_size,
            warm_start=sc.warm_start,
            coefficients=ReuseCoefficients(
                sc.reuse_visible, sc.reuse_masked_min, sc.reuse_masked_max, sc.reuse_changed
            ),
            **common,
        )
        details = {
            "network_calls": plan.steps,
            "warm_start": sc.warm_start,
            "adaptive_tol": sc.adaptive_tol,
            "planned_iterations_per_step": list(plan.iterations_T),
            "iterations_per_step": jax.device_get(out.evals_T).tolist(),
            "block_passes_per_sequence": jax.device_get(out.block_passes_B).tolist(),
        }
    tokens_BxL = np.asarray(jax.device_get(out.tokens_BxL))
    return Samples(tokens_BxL, int(out.block_passes), details)
