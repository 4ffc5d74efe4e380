"""Drawing class-conditional VQ codes from an image config: the sample section's reveal
rule and classifier-free guidance on top of `draw.draw_samples` (docs/method.md §2.7).

    draw_image_samples(config, params, plan, labels_B, seed) -> Samples

The reveal rule is `rules.make_reveal_fn(sample.reveal_rule, steps=plan.steps, grid=
(data.grid_size,) * 2, tau=sample.confidence_tau, temperature=sample.temperature)`.
With sample.guidance_scale w > 0 the model's denoiser is wrapped by
`guidance.make_guided_denoise_fn` (FP: `make_guided_fp_denoise_fn`, h* of width 2 D)
with the null class model.null_class: one batched call on 2B rows per step. w = 0 does
not wrap at all, so it costs and draws exactly what the conditional model does.

Budgets (docs/method.md §2.7) count the conditional network's block passes only:
`Samples.block_passes` is that count (never above plan.budget), and `details` reports
it next to `block_passes_with_guidance`, what the doubled batch really ran.

Compiles. The samplers are jitted with the denoiser and the rule as static arguments:
the guided wrappers are built once per (denoiser, null class, ramp) and the rules are
frozen dataclasses that hash by value, so a second draw with the same settings and
shapes reuses the compiled sampler; w and the labels are traced (a new w or new labels
compile nothing).

Letters: B batch (images), L codes per image (grid_size^2), D hidden.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from cofre_jax.config.typed import Config, ConfigError
from cofre_jax.models import model_class
from cofre_jax.sampling.draw import Samples, draw_samples, model_denoise_fn
from cofre_jax.sampling.guidance import (
    Guided,
    block_passes_with_guidance,
    make_guided_denoise_fn,
    make_guided_fp_denoise_fn,
)
from cofre_jax.sampling.reveal import RevealFn
from cofre_jax.sampling.rules import make_reveal_fn


@functools.lru_cache(maxsize=32)
def _guided_denoise_fn(base_fn: Callable, null_class: int, mask_id: int, ramp: str, fp: bool):
    """One guided wrapper per settings: the samplers hash their denoiser by identity."""

    def null_labels(labels_B):
        return jnp.full_like(labels_B, null_class)

    make = make_guided_fp_denoise_fn if fp else make_guided_denoise_fn
    return make(base_fn, null_labels, mask_id=mask_id, ramp=ramp)


def image_reveal_fn(config: Config, steps: int) -> RevealFn:
    """The sample section's reveal rule over the config's code grid, for `steps` steps."""
    sc, grid = config.sample, config.data.grid_size
    length = grid * grid
    if sc.reveal_rule != "ancestral" and not 1 <= steps <= length:
        raise ConfigError(
            f"config field 'sample.reveal_rule' = {sc.reveal_rule!r} cannot sample {steps} "
            f"steps over {length} codes (each step reveals at least one code); use at most "
            f"{length} steps (sample.steps / sample.budget_steps / eval.budget_steps)"
        )
    return make_reveal_fn(
        sc.reveal_rule,
        steps=steps,
        grid=(grid, grid),
        tau=sc.confidence_tau,
        temperature=(sc.temperature, sc.temperature),
    )


def _checked_labels(config: Config, labels_B: Any) -> np.ndarray:
    labels_B = np.asarray(labels_B)
    num_classes = config.model.num_classes
    if labels_B.ndim != 1 or len(labels_B) < 1 or not np.issubdtype(labels_B.dtype, np.integer):
        raise ValueError(
            f"labels_B must be a non-empty 1-d integer array, got {labels_B.dtype} {labels_B.shape}"
        )
    if labels_B.min() < 0 or labels_B.max() >= num_classes:
        low, high = labels_B.min(), labels_B.max()
        raise ValueError(f"labels_B must be classes in [0, {num_classes}), got {low}..{high}")
    return labels_B.astype(np.int32)


def draw_image_samples(
    config: Config,
    params,
    plan,
    labels_B,
    seed: int,
    mesh: Mesh | None = None,
) -> Samples:
    """One image's codes (row-major, L = grid_size^2) per label in labels_B, by the
    config's model, reveal rule and guidance within plan.budget conditional block
    passes. details: the sampler's counts plus reveal_rule, guidance_scale,
    guidance_ramp, block_passes (conditional, what the budget bounds) and
    block_passes_with_guidance (with the null-class rows; equal when w = 0)."""
    if config.task != "image":
        raise ConfigError(
            f"config field 'model.kind' = {config.model.kind!r} is invalid: allowed an image "
            "model ('maskgit' or 'fp_maskgit') for image sampling"
        )
    sc, m = config.sample, config.model
    labels_B = _checked_labels(config, labels_B)
    reveal_fn = image_reveal_fn(config, plan.steps)
    fp = model_class(m).is_fixed_point
    guided = sc.guidance_scale > 0.0
    extra: dict[str, Any] = {}
    cond: Any = jnp.asarray(labels_B)
    if guided:
        base_fn = model_denoise_fn(config)
        extra = dict(
            denoise_fn=_guided_denoise_fn(base_fn, m.null_class, m.mask_id, sc.guidance_ramp, fp),
            # The guided FP wrapper lays the conditional and null h* side by side.
            hidden_size=2 * m.hidden_size if fp else None,
            depends_on_t=sc.guidance_ramp != "constant",
        )
        cond = Guided(cond, jnp.float32(sc.guidance_scale))
    drawn = draw_samples(
        config, params, plan, len(labels_B), seed, mesh=mesh, cond=cond, reveal_fn=reveal_fn,
        **extra,
    )  # fmt: skip
    passes = drawn.block_passes
    details = {
        **drawn.details,
        "reveal_rule": sc.reveal_rule,
        "guidance_scale": sc.guidance_scale,
        "guidance_ramp": sc.guidance_ramp,
        "block_passes": passes,
        "block_passes_with_guidance": block_passes_with_guidance(passes) if guided else passes,
    }
    return Samples(drawn.tokens_BxL, passes, details)
