"""Classifier-free guidance (CFG) for conditional denoisers: a hook for the image models.

`make_guided_denoise_fn` wraps a conditional `DenoiseFn` `(params, z_BxL, t_B, cond) ->
log_probs` into a guided one with the same signature, whose condition is a `Guided`
pair (the model's condition, the scale w). One guided call makes ONE denoiser call on a
batch of 2B rows, the conditional rows then the null-condition rows (the same z and t,
the condition replaced by `null_cond_fn(cond)`), and combines them per token as

    log p_w = log_softmax((1 + w) log p(x | cond) - w log p(x | null))

with the MASK column kept at NEG_INF. w = 0 returns the conditional log-probs exactly
(MASK column set to NEG_INF), w > 0 sharpens towards the condition. Log-probs below
NEG_INF (-inf included) are raised to NEG_INF first, so that -inf - (-inf) never makes
a NaN. w is traced (a scalar or one per row, shape (B,)), so sweeping it reuses the
compiled sampler; the guided function goes to the samplers like any `DenoiseFn`:

    guided = make_guided_denoise_fn(denoise_fn, lambda y: jnp.full_like(y, NULL), mask_id=M)
    ancestral_sample(guided, params, key, ..., cond=Guided(labels_B, jnp.float32(2.0)))

Ramp (static, `GUIDANCE_RAMPS`). "constant": w at every step. "linear": w(t) = w (1 - t)
from the denoiser's time t, so on the samplers' grid (t_i = 1 - i (1 - eps) / T) step i
uses w i (1 - eps) / T: no guidance at the first step, rising to about w (T - 1) / T at
the last. This is the ramp of Besnier's MaskGIT-pytorch (w i / (T - 1)) up to its end
value; Halton-MaskGIT's released sampler keeps w constant. Either way w = 0 is the
conditional model exactly, and each guided call is still one denoiser call on 2B rows.
A ramped guided denoiser depends on t: give the ancestral sampler reuse_logits=False
(its logits cache assumes a t-free denoiser).

The FP sampler. `make_guided_fp_denoise_fn` does the same for an `FPDenoiseFn`: one
solve on the 2B rows (the batched solver runs until its slowest row, conditional or
null), each half warm-started from its own previous fixed point. The sampler keeps one
h* per row, so the wrapper lays the two halves side by side on the hidden axis: pass
hidden_size = 2 D to `fp_sample`. Per-row stats are the worse of the two halves.

Cost. The budgets of docs/method.md §2.7 count the conditional network's block passes
only; the samplers' block_passes are that count (one batched call per step, priced per
batch). The doubled batch costs twice as many: `block_passes_with_guidance` reports it,
and reports should quote both.

Letters: B batch, L length, D hidden, V vocabulary (MASK included).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cofre_jax.config.choices import GUIDANCE_RAMPS
from cofre_jax.diffusion import NEG_INF
from cofre_jax.sampling.ancestral import DenoiseFn
from cofre_jax.sampling.fixed_point import FPDenoiseFn, FPDenoiseOutput

# Rows per sample of a guided call: the conditional row and the null row.
GUIDANCE_PASS_FACTOR = 2


class Guided(NamedTuple):
    """The condition of a guided denoiser."""

    cond: Any  # the conditional denoiser's condition: a pytree of arrays, batch first
    scale: jax.Array  # w, float scalar or shape (B,); 0: no guidance


def guide(cond_BxLxV: jax.Array, null_BxLxV: jax.Array, scale, mask_id: int) -> jax.Array:
    """log_softmax((1 + w) cond - w null) over the last axis, MASK at NEG_INF; exactly
    `cond` (MASK at NEG_INF) where w = 0. float32."""
    cond_BxLxV = cond_BxLxV.astype(jnp.float32)
    w = jnp.asarray(scale, jnp.float32)
    w_Bx1x1 = jnp.broadcast_to(w, cond_BxLxV.shape[:1]).reshape(-1, 1, 1)
    mixed_BxLxV = (1.0 + w_Bx1x1) * jnp.maximum(cond_BxLxV, NEG_INF) - w_Bx1x1 * jnp.maximum(
        null_BxLxV.astype(jnp.float32), NEG_INF
    )
    mixed_BxLxV = mixed_BxLxV.at[..., mask_id].set(NEG_INF)
    guided_BxLxV = jax.nn.log_softmax(mixed_BxLxV, axis=-1).at[..., mask_id].set(NEG_INF)
    return jnp.where(w_Bx1x1 == 0.0, cond_BxLxV.at[..., mask_id].set(NEG_INF), guided_BxLxV)


def guidance_scale(scale, t_B: jax.Array, ramp: str = "constant") -> jax.Array:
    """w per row at the denoiser's time t_B: w ("constant") or w (1 - t) ("linear"),
    float32 of shape (B,)."""
    if ramp not in _RAMPS:
        raise ValueError(f"unknown guidance ramp {ramp!r}; valid: {GUIDANCE_RAMPS}")
    w_B = jnp.broadcast_to(jnp.asarray(scale, jnp.float32), t_B.shape)
    return _RAMPS[ramp](w_B, t_B.astype(jnp.float32))


# One entry per cofre_jax.config.choices.GUIDANCE_RAMPS (tests/test_registries.py).
_RAMPS = {
    "constant": lambda w_B, t_B: w_B,
    "linear": lambda w_B, t_B: w_B * (1.0 - t_B),
}


def block_passes_with_guidance(block_passes):
    """Block passes a guided run really made: the conditional count (the samplers'
    block_passes, what the budget bounds) times 2 for the null rows of the doubled batch."""
    return GUIDANCE_PASS_FACTOR * block_passes


def _doubled(guided: Guided, null_cond_fn, z_BxL, t_B):
    """(z_2BxL, t_2B, cond_2B): the conditional rows, then the null-condition rows."""
    both_cond = jax.tree.map(
        lambda c, n: jnp.concatenate([c, n], axis=0), guided.cond, null_cond_fn(guided.cond)
    )
    return jnp.concatenate([z_BxL, z_BxL], axis=0), jnp.concatenate([t_B, t_B], axis=0), both_cond


def _check_ramp(ramp: str) -> None:
    if ramp not in GUIDANCE_RAMPS:
        raise ValueError(f"unknown guidance ramp {ramp!r}; valid: {GUIDANCE_RAMPS}")


def make_guided_denoise_fn(
    denoise_fn: DenoiseFn,
    null_cond_fn: Callable[[Any], Any],
    *,
    mask_id: int,
    ramp: str = "constant",
) -> DenoiseFn:
    """The guided `(params, z_BxL, t_B, Guided(cond, w)) -> log_probs` of a conditional
    denoiser; null_cond_fn(cond) is the null condition of the same structure and shapes
    (e.g. every label replaced by the "no label" id); ramp how w follows t (module
    docstring). Build it once and pass the same object to the samplers, which hash it
    by identity."""
    _check_ramp(ramp)

    def guided_fn(params, z_BxL, t_B, guided: Guided):
        batch = z_BxL.shape[0]
        z_2BxL, t_2B, both_cond = _doubled(guided, null_cond_fn, z_BxL, t_B)
        log_probs_2BxLxV = denoise_fn(params, z_2BxL, t_2B, both_cond)
        w_B = guidance_scale(guided.scale, t_B, ramp)
        return guide(log_probs_2BxLxV[:batch], log_probs_2BxLxV[batch:], w_B, mask_id=mask_id)

    return guided_fn


def make_guided_fp_denoise_fn(
    fp_denoise_fn: FPDenoiseFn,
    null_cond_fn: Callable[[Any], Any],
    *,
    mask_id: int,
    ramp: str = "constant",
) -> FPDenoiseFn:
    """The guided `FPDenoiseFn` `(params, z_BxL, t_B, Guided(cond, w), h0_fn,
    num_iterations) -> FPDenoiseOutput` of a conditional FP denoiser of hidden size D:
    one solve on the 2B rows; its h* is (B, L, 2 D), the conditional half's D then the
    null half's (sample with hidden_size = 2 D). Stats per row are the worse half's
    (most iterations, largest residual, converged only if both did)."""
    _check_ramp(ramp)

    def guided_fn(params, z_BxL, t_B, guided: Guided, h0_fn, num_iterations):
        batch = z_BxL.shape[0]
        z_2BxL, t_2B, both_cond = _doubled(guided, null_cond_fn, z_BxL, t_B)
        fp_h0_fn = None
        if h0_fn is not None:

            def fp_h0_fn(h_pre_2BxLxD):
                side_BxLx2D = jnp.concatenate([h_pre_2BxLxD[:batch], h_pre_2BxLxD[batch:]], -1)
                h0_BxLx2D = h0_fn(side_BxLx2D)
                cond_h0, null_h0 = jnp.split(h0_BxLx2D, 2, axis=-1)
                return jnp.concatenate([cond_h0, null_h0], axis=0)

        out = fp_denoise_fn(params, z_2BxL, t_2B, both_cond, fp_h0_fn, num_iterations)
        w_B = guidance_scale(guided.scale, t_B, ramp)
        log_probs_BxLxV = guide(
            out.log_probs_BxLxV[:batch], out.log_probs_BxLxV[batch:], w_B, mask_id=mask_id
        )
        h_star_BxLx2D = jnp.concatenate(
            [out.h_star_BxLxD[:batch], out.h_star_BxLxD[batch:]], axis=-1
        )
        st = out.stats
        stats = type(st)(
            iterations_B=jnp.maximum(st.iterations_B[:batch], st.iterations_B[batch:]),
            residual_B=jnp.maximum(st.residual_B[:batch], st.residual_B[batch:]),
            converged_B=st.converged_B[:batch] & st.converged_B[batch:],
            evals=st.evals,
        )
        return FPDenoiseOutput(log_probs_BxLxV, h_star_BxLx2D, stats)

    return guided_fn
