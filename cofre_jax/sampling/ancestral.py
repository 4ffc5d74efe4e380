"""MDLM's ancestral sampler (docs/method.md §2.1), jitted, and its block-pass budget form.

The sampler is `make_ancestral_transition` (one step t -> s) run by `loop.run_transitions`
over `loop.ancestral_times`: each step calls the denoiser on (z_t, t), filters the
log-probs by top-p and reveals tokens with `reveal_fn` (default `reveal.ancestral_update`;
any `RevealFn`, e.g. the image rules of `sampling.halton`). `steps` steps make
at most `steps` network calls (the last step ends at the clean time 0, see `loop`).
`ancestral_sample_with_budget` puts MDLM on the block-pass budget interface of
`sampling.budget` shared with the FP sampler.

Logit reuse (MDLM's cache). If a step revealed no token anywhere in the batch, the next
step's z equals this step's z, and the previous (filtered) log-probabilities are reused:
`lax.cond` skips the network, and `network_calls` counts the evaluations really made.
The reuse is exact only when the denoiser ignores t (time conditioning off, as in the
published OWT run): with time conditioning on, the reused log-probs belong to the
previous time, an approximation MDLM avoids by disabling the cache. Callers with a
t-dependent denoiser should pass reuse_logits=False.

Conditioning. The denoiser takes a condition `cond`, a pytree of arrays (class labels
of an image model, say) or None (text), passed through the jitted sampler as a traced
argument: a new condition batch reuses the compiled sampler.

Letters: B batch, L sequence length, V vocabulary (MASK included).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from cofre_jax.diffusion import NEG_INF
from cofre_jax.sampling.budget import BudgetPlan
from cofre_jax.sampling.loop import SampleState, Transition, ancestral_times, run_transitions
from cofre_jax.sampling.noise import top_p_filter
from cofre_jax.sampling.reveal import MaskProbFn, RevealFn, ancestral_update, check_reveal_steps

# (params, z_BxL, t_B, cond) -> log_probs_BxLxV, SUBS applied (MASK column NEG_INF);
# cond is a pytree of arrays or None.
DenoiseFn = Callable[[Any, jax.Array, jax.Array, Any], jax.Array]


class SampleOutput(NamedTuple):
    tokens_BxL: jax.Array  # int32, no MASK left
    network_calls: jax.Array  # int32 scalar


class BudgetSampleOutput(NamedTuple):
    tokens_BxL: jax.Array  # int32, no MASK left
    network_calls: jax.Array  # int32 scalar
    block_passes: jax.Array  # int32 scalar: network_calls * blocks per call (<= budget)


def make_ancestral_transition(
    denoise_fn: DenoiseFn,
    params: Any,
    *,
    mask_id: int,
    mask_prob_fn: MaskProbFn,
    top_p: float = 1.0,
    reuse_logits: bool = True,
    cond: Any = None,
    reveal_fn: RevealFn = ancestral_update,
) -> Transition:
    """MDLM's step as a pure `(SampleState, t, s) -> SampleState`.

    The network runs on (z_t, t, cond) unless reuse_logits and no token changed in the
    previous step, in which case `lax.cond` skips it and the cached log-probs are used.
    """

    def network(z_BxL: jax.Array, t: jax.Array) -> jax.Array:
        t_B = jnp.full((z_BxL.shape[0],), t, jnp.float32)
        log_probs_BxLxV = denoise_fn(params, z_BxL, t_B, cond).astype(jnp.float32)
        # SUBS says MASK is never predicted; enforce it here too so "every mask resolved"
        # holds whatever the denoiser returns.
        log_probs_BxLxV = log_probs_BxLxV.at[..., mask_id].set(NEG_INF)
        # Filtering before caching: a reused step needs no second sort.
        return top_p_filter(log_probs_BxLxV, top_p)

    def transition(state: SampleState, t: jax.Array, s: jax.Array) -> SampleState:
        if reuse_logits:
            log_probs_BxLxV = lax.cond(
                state.cache_valid,
                lambda: state.log_probs_BxLxV,
                lambda: network(state.z_BxL, t),
            )
            calls = state.network_calls + jnp.where(state.cache_valid, 0, 1).astype(jnp.int32)
        else:
            log_probs_BxLxV = network(state.z_BxL, t)
            calls = state.network_calls + jnp.int32(1)
        key, step_key = jax.random.split(state.key)
        z_BxL = reveal_fn(
            step_key,
            state.z_BxL,
            log_probs_BxLxV,
            t,
            s,
            mask_prob_fn=mask_prob_fn,
            mask_id=mask_id,
        )
        # One batched network call serves all rows, so the cache is valid only if no row
        # changed (as in MDLM).
        unchanged = jnp.all(z_BxL == state.z_BxL)
        return SampleState(z_BxL, log_probs_BxLxV, unchanged, key, calls)

    return transition


def init_state(
    denoise_fn: DenoiseFn, params: Any, z_BxL: jax.Array, key: jax.Array, cond: Any = None
) -> SampleState:
    """Start state: no cached log-probs (their shape comes from `jax.eval_shape`)."""
    z_BxL = jnp.asarray(z_BxL, jnp.int32)
    t_B = jnp.ones((z_BxL.shape[0],), jnp.float32)
    out = jax.eval_shape(denoise_fn, params, z_BxL, t_B, cond)
    return SampleState(
        z_BxL=z_BxL,
        log_probs_BxLxV=jnp.zeros(out.shape, jnp.float32),
        cache_valid=jnp.asarray(False),
        key=key,
        network_calls=jnp.int32(0),
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "denoise_fn",
        "batch_size",
        "seq_len",
        "mask_id",
        "steps",
        "mask_prob_fn",
        "top_p",
        "reuse_logits",
        "reveal_fn",
    ),
)
def ancestral_sample(
    denoise_fn: DenoiseFn,
    params: Any,
    key: jax.Array,
    *,
    batch_size: int,
    seq_len: int,
    mask_id: int,
    steps: int,
    mask_prob_fn: MaskProbFn,
    top_p: float = 1.0,
    reuse_logits: bool = True,
    final_eps: float | jax.Array = 1e-5,
    z_init_BxL: jax.Array | None = None,
    cond: Any = None,
    reveal_fn: RevealFn = ancestral_update,
) -> SampleOutput:
    """MDLM ancestral sampling of batch_size sequences in `steps` steps (jitted).

    denoise_fn and mask_prob_fn are static (hashed by identity: pass the same function
    objects to reuse the compilation); params, key, final_eps, z_init_BxL and cond are
    traced. z_init_BxL (optional, shape (batch_size, seq_len)) starts from a partly
    visible sequence, e.g. for infilling; its visible tokens are kept. Default: all MASK.
    cond (a pytree of arrays, or None) is handed to every denoiser call. reveal_fn
    (static) is the reveal rule; a step-indexed one must be built for `steps`.
    """
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
    check_reveal_steps(reveal_fn, steps)
    if z_init_BxL is None:
        z_BxL = jnp.full((batch_size, seq_len), mask_id, jnp.int32)
    else:
        if tuple(z_init_BxL.shape) != (batch_size, seq_len):
            raise ValueError(
                f"z_init_BxL has shape {tuple(z_init_BxL.shape)}; expected "
                f"(batch_size, seq_len) = ({batch_size}, {seq_len})"
            )
        z_BxL = z_init_BxL.astype(jnp.int32)
    transition = make_ancestral_transition(
        denoise_fn,
        params,
        mask_id=mask_id,
        mask_prob_fn=mask_prob_fn,
        top_p=top_p,
        reuse_logits=reuse_logits,
        cond=cond,
        reveal_fn=reveal_fn,
    )
    state = init_state(denoise_fn, params, z_BxL, key, cond)
    state = run_transitions(transition, state, ancestral_times(steps, final_eps))
    return SampleOutput(tokens_BxL=state.z_BxL, network_calls=state.network_calls)


def ancestral_sample_with_budget(
    denoise_fn: DenoiseFn,
    params: Any,
    key: jax.Array,
    plan: BudgetPlan,
    **kwargs,
) -> BudgetSampleOutput:
    """MDLM under the block-pass budget interface shared with the FP sampler.

    `plan` comes from `budget.plan_budget(B, StepCost.for_model(mdlm_config), ...)`: T =
    plan.steps denoiser calls of plan.cost.base (= num_layers) block passes each, so at
    most B. Skipped calls (the logits cache) are not spent. kwargs go to
    `ancestral_sample` (batch_size, seq_len, mask_id, mask_prob_fn, top_p, cond,
    reveal_fn, ...).
    """
    if plan.cost.per_iteration != 0:
        raise ValueError(
            f"an MDLM plan has no per-iteration cost; got {plan.cost} (use the FP sampler)"
        )
    out = ancestral_sample(denoise_fn, params, key, steps=plan.steps, **kwargs)
    return BudgetSampleOutput(out.tokens_BxL, out.network_calls, plan.cost.total(out.network_calls))
