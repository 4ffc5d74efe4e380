"""Training objectives beyond the MDLM loss (docs/method.md §2.4, §2.6).

consistency (CoFRe's post-training stage):
    L = L_MDLM(student) + lambda * mean_{i masked in z_s} D(h_s(i), sg(h_c(i)))
distill (--mode=convert, frozen MDLM teacher):
    L = L_MDLM(student) + lambda * tau^2 * mean_{i masked in z_s} KL(p_c^tau(i) || p_s^tau(i))

Both draw the student time t_s as MDLM does and a teacher time t_c = max(t_s - gap, 0),
gap ~ U[gap_min, gap_max], and mask with one uniform per position shared by both times,
so the teacher's masked set is nested in the student's: the teacher sees strictly more
of the sequence and its prediction is the target for the student's.

The consistency teacher is the same model at the same parameters under stop-gradient
(no EMA), run in eval mode: the target is then deterministic (no dropout, the configured
eval iteration count) rather than a second draw of SJFB's random counts.

Letters: B batch, L length, D hidden, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cofre_jax import diffusion
from cofre_jax.config.choices import DIVERGENCES
from cofre_jax.config.typed import DiffusionConfig, StageConfig
from cofre_jax.models import DenoiserOutput

ForwardFn = Callable[..., DenoiserOutput]


class StageSpec(NamedTuple):
    needs_teacher: bool  # learns from another, frozen network (given to the trainer)
    early_stop: bool  # guarded by stage.early_stop_ratio (cofre_jax.train.early_stop)


# One entry per cofre_jax.config.choices.STAGE_KINDS (tests/test_registries.py). The
# early-stop rule guards the consistency stage against over-sharpening.
STAGES = {
    "pretrain": StageSpec(needs_teacher=False, early_stop=False),
    "consistency": StageSpec(needs_teacher=False, early_stop=True),
    "distill": StageSpec(needs_teacher=True, early_stop=False),
}


def lambda_at(step: jax.Array | int, lambda_max: float, warmup_steps: int) -> jax.Array:
    """lambda rises linearly from 0 at step 0 to lambda_max at warmup_steps, then stays."""
    if warmup_steps == 0:
        return jnp.asarray(lambda_max, jnp.float32)
    ramp = jnp.clip(jnp.asarray(step, jnp.float32) / warmup_steps, 0.0, 1.0)
    return lambda_max * ramp


def teacher_times(
    key: jax.Array, t_s_B: jax.Array, gap_min: float, gap_max: float
) -> tuple[jax.Array, jax.Array]:
    """(t_c_B, gap_B): t_c = max(t_s - gap, 0) with gap ~ U[gap_min, gap_max]."""
    gap_B = jax.random.uniform(key, t_s_B.shape, jnp.float32, gap_min, gap_max)
    return jnp.maximum(t_s_B - gap_B, 0.0), gap_B


def correlated_masks(
    tokens_BxL: jax.Array,
    u_BxL: jax.Array,
    t_s_B: jax.Array,
    t_c_B: jax.Array,
    schedule: diffusion.Schedule,
    mask_id: int,
) -> tuple[jax.Array, jax.Array]:
    """(z_s, z_c) masked at positions with u_i < mask_prob(t).

    t_c <= t_s and a shared u make the teacher's masked set a subset of the student's.
    Where the two sets come out equal on a row that has a masked position, the teacher
    also reveals the student-masked position with the largest u, the one that a
    slightly earlier time would reveal first, so every such row has a real gap.
    """
    masked_s_BxL = u_BxL < schedule.mask_prob(t_s_B)[:, None]
    masked_c_BxL = (u_BxL < schedule.mask_prob(t_c_B)[:, None]) & masked_s_BxL
    equal_B = jnp.all(masked_s_BxL == masked_c_BxL, axis=1) & jnp.any(masked_s_BxL, axis=1)
    first_B = jnp.argmax(jnp.where(masked_s_BxL, u_BxL, -1.0), axis=1)
    reveal_BxL = equal_B[:, None] & (jnp.arange(tokens_BxL.shape[1]) == first_B[:, None])
    masked_c_BxL = masked_c_BxL & ~reveal_BxL
    mask = jnp.asarray(mask_id, tokens_BxL.dtype)
    return jnp.where(masked_s_BxL, mask, tokens_BxL), jnp.where(masked_c_BxL, mask, tokens_BxL)


def _masked_mean(values_BxL: jax.Array, masked_BxL: jax.Array) -> jax.Array:
    weights_BxL = masked_BxL.astype(jnp.float32)
    return jnp.sum(values_BxL * weights_BxL) / jnp.maximum(jnp.sum(weights_BxL), 1.0)


def hidden_mse(h_s_BxLxD, h_c_BxLxD, masked_BxL) -> jax.Array:
    """mean over masked positions of the squared L2 distance of hidden states."""
    diff_BxLxD = h_s_BxLxD.astype(jnp.float32) - h_c_BxLxD.astype(jnp.float32)
    return _masked_mean(jnp.sum(jnp.square(diff_BxLxD), axis=-1), masked_BxL)


def normalized_hidden_mse(h_s_BxLxD, h_c_BxLxD, masked_BxL) -> jax.Array:
    """hidden_mse of the states standardised over D (a LayerNorm without scale or bias).

    The logits see the post stack's output only through the final LayerNorm, so its
    scale is free; raw MSE against the model's own stop-gradient states can then grow it
    without bound (seen in benchmarks/quality_vs_budget: divergence 1e11 by step 100 at
    lr 2e-4). Standardised states bound the loss by 4 D per position."""

    def standardise(h_BxLxD):
        h_BxLxD = h_BxLxD.astype(jnp.float32)
        mean_BxLx1 = jnp.mean(h_BxLxD, axis=-1, keepdims=True)
        var_BxLx1 = jnp.var(h_BxLxD, axis=-1, keepdims=True)
        return (h_BxLxD - mean_BxLx1) * jax.lax.rsqrt(var_BxLx1 + 1e-6)

    return hidden_mse(standardise(h_s_BxLxD), standardise(h_c_BxLxD), masked_BxL)


def hidden_cosine(h_s_BxLxD, h_c_BxLxD, masked_BxL) -> jax.Array:
    """mean over masked positions of 1 - cos(h_s, h_c)."""
    h_s_BxLxD, h_c_BxLxD = h_s_BxLxD.astype(jnp.float32), h_c_BxLxD.astype(jnp.float32)
    dot_BxL = jnp.sum(h_s_BxLxD * h_c_BxLxD, axis=-1)
    norms_BxL = jnp.linalg.norm(h_s_BxLxD, axis=-1) * jnp.linalg.norm(h_c_BxLxD, axis=-1)
    return _masked_mean(1.0 - dot_BxL / jnp.maximum(norms_BxL, 1e-8), masked_BxL)


def tempered_kl(
    logits_s_BxLxV, z_s_BxL, logits_c_BxLxV, z_c_BxL, masked_BxL, *, mask_id: int, tau: float
) -> jax.Array:
    """tau^2 * mean over masked positions of KL(p_c^tau || p_s^tau), SUBS distributions.

    A position the teacher sees has a one-hot p_c, so its term is the student's tempered
    cross-entropy of the true token.
    """

    def tempered(logits_BxLxV, z_BxL):
        return jax.nn.log_softmax(diffusion.subs_log_probs(logits_BxLxV, z_BxL, mask_id) / tau)

    log_p_s_BxLxV = tempered(logits_s_BxLxV, z_s_BxL)
    log_p_c_BxLxV = tempered(logits_c_BxLxV, z_c_BxL)
    kl_BxL = jnp.sum(jnp.exp(log_p_c_BxLxV) * (log_p_c_BxLxV - log_p_s_BxLxV), axis=-1)
    return tau**2 * _masked_mean(kl_BxL, masked_BxL)


def _on_hidden(fn):
    """A divergence of the pre-logit hidden states, as a registry entry."""

    def divergence_fn(student, teacher, z_s_BxL, z_c_BxL, masked_BxL, *, mask_id, tau):
        del z_s_BxL, z_c_BxL, mask_id, tau
        return fn(student.hidden_BxLxD, teacher.hidden_BxLxD, masked_BxL)

    return divergence_fn


def _on_logits(student, teacher, z_s_BxL, z_c_BxL, masked_BxL, *, mask_id, tau):
    return tempered_kl(
        student.logits_BxLxV,
        z_s_BxL,
        teacher.logits_BxLxV,
        z_c_BxL,
        masked_BxL,
        mask_id=mask_id,
        tau=tau,
    )


# One entry per cofre_jax.config.choices.DIVERGENCES (tests/test_registries.py).
_DIVERGENCES = {
    "mse": _on_hidden(hidden_mse),
    "normalized_mse": _on_hidden(normalized_hidden_mse),
    "kl": _on_logits,
    "cosine": _on_hidden(hidden_cosine),
}


def divergence(
    kind: str,
    student: DenoiserOutput,
    teacher: DenoiserOutput,
    z_s_BxL,
    z_c_BxL,
    *,
    mask_id: int,
    tau: float,
) -> jax.Array:
    if kind not in _DIVERGENCES:
        raise ValueError(f"unknown divergence {kind!r}; valid: {', '.join(DIVERGENCES)}")
    masked_BxL = z_s_BxL == mask_id
    return _DIVERGENCES[kind](
        student, teacher, z_s_BxL, z_c_BxL, masked_BxL, mask_id=mask_id, tau=tau
    )


def stage_loss(
    forward: ForwardFn,
    params: Any,
    tokens_BxL: jax.Array,
    key: jax.Array,
    step: jax.Array,
    *,
    stage: StageConfig,
    divergence_kind: str,
    diffusion_cfg: DiffusionConfig,
    mask_id: int,
    teacher_forward: ForwardFn,
    teacher_params: Any,
    rngs: dict | None = None,
) -> tuple[jax.Array, dict[str, Any]]:
    """(loss, metrics) of one consistency or distillation step; the student is in train
    mode, the teacher in eval mode under stop-gradient; `divergence_kind` is one of
    DIVERGENCES (distillation uses "kl", the consistency stage stage.divergence).
    metrics holds scalars plus the student's and teacher's solver stats (None for MDLM
    networks) for the logs."""
    schedule = diffusion.make_schedule(diffusion_cfg.schedule, diffusion_cfg.eps)
    time_key, gap_key, mask_key = jax.random.split(key, 3)
    t_s_B = diffusion.sample_times(
        time_key,
        tokens_BxL.shape[0],
        antithetic=diffusion_cfg.antithetic,
        sampling_eps=diffusion_cfg.sampling_eps,
    )
    t_c_B, gap_B = teacher_times(gap_key, t_s_B, stage.gap_min, stage.gap_max)
    u_BxL = jax.random.uniform(mask_key, tokens_BxL.shape, jnp.float32)
    z_s_BxL, z_c_BxL = correlated_masks(tokens_BxL, u_BxL, t_s_B, t_c_B, schedule, mask_id)

    student = forward(params, z_s_BxL, schedule.total_noise(t_s_B), train=True, rngs=rngs)
    base_loss, metrics = diffusion.masked_diffusion_loss(
        student.logits_BxLxV, tokens_BxL, z_s_BxL, t_s_B, schedule, mask_id
    )
    teacher = teacher_forward(
        jax.lax.stop_gradient(teacher_params), z_c_BxL, schedule.total_noise(t_c_B), train=False
    )
    teacher = jax.tree_util.tree_map(jax.lax.stop_gradient, teacher)
    div = divergence(
        divergence_kind, student, teacher, z_s_BxL, z_c_BxL, mask_id=mask_id, tau=stage.temperature
    )
    lam = lambda_at(step, stage.lambda_max, stage.lambda_warmup_steps)
    metrics.update(
        base_loss=base_loss,
        divergence=div,
        **{"lambda": lam},
        time_gap=jnp.mean(t_s_B - t_c_B),
        drawn_gap=jnp.mean(gap_B),
        teacher_masked_fraction=jnp.mean((z_c_BxL == mask_id).astype(jnp.float32)),
        student_stats=student.stats,
        teacher_stats=teacher.stats,
    )
    return base_loss + lam * div, metrics
