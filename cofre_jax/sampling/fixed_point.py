"""The budgeted sampler of fixed-point models: warm starts, 3SR and adaptive stopping.

One jitted program: `loop.run_transitions` (one `lax.fori_loop` over the T denoising
steps) carries `FPSampleState` (z, the previous step's input z_prev and fixed point
h*_prev, the iteration bank, per-step solver stats) from step to step. Each step
1. builds the solver's start h^0 from this step's h_pre (computed inside the model) by
   the warm start (`warm_start`: cold, reuse or 3SR, docs/method.md §2.5); every mode
   starts the first step cold;
2. runs the denoiser with an iteration cap N_i + bank (N_i from the budget plan);
3. reveals tokens with a swappable rule (`reveal.ancestral_update`, MDLM's;
   `reveal.confidence_update`, MaskGIT's; the image rules of `sampling.halton`, built
   for the plan's steps) from the top-p filtered log-probs.

Budget and adaptive stopping. The plan (`sampling.budget`) fixes N_i with
sum_i base + N_i per_iteration <= B. The denoiser's solver may stop a sequence early
when its residual reaches a tolerance (the model's fixed_point.tol;
`denoisers.make_fp_denoise_fn` sets it): the step then runs only as many batched F
evaluations as its slowest sequence needed, evals_i <= cap_i. The unspent
cap_i - evals_i goes to a bank that raises the cap of every later step, so

    spent = sum_i base + evals_i per_iteration <= sum_i base + N_i per_iteration <= B.

The bank is shared by the batch on purpose: the batch runs together, so what the device
spends for each sequence slot is the batch's evaluations, and a per-sequence bank could
make the batch's evaluations exceed B (a sequence that saved early runs long later while
another runs long now). "Spent" (`block_passes`) is therefore the batch's passes, which
is also the compute per sample; `block_passes_B` reports each sequence's own count
(<= block_passes). Both are priced by the plan's `StepCost`. Iterations left in the bank
after the last step are not spent. With the tolerance off every step runs exactly N_i
and the bank stays 0. MDLM's logits cache is not used here: every step calls the
denoiser (a step that revealed nothing still refines h* from its warm start).

The denoiser is any `FPDenoiseFn(params, z_BxL, t_B, cond, h0_fn, num_iterations) ->
FPDenoiseOutput` (SUBS log-probs, h*, solver stats), where cond is the condition (a
pytree of arrays, traced; None for text) and `h0_fn(h_pre)` returns the start (None:
cold). `denoisers.make_fp_denoise_fn` adapts `FPMDLM`; an image model supplies its own
and reuses everything else.

Letters: B batch, L length, D hidden, V vocabulary (MASK included), T steps.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from cofre_jax.config.choices import WARM_STARTS
from cofre_jax.diffusion import NEG_INF
from cofre_jax.fixed_point import SolverStats
from cofre_jax.sampling.budget import BudgetPlan, StepCost
from cofre_jax.sampling.loop import Transition, ancestral_times, run_transitions
from cofre_jax.sampling.noise import top_p_filter
from cofre_jax.sampling.reveal import MaskProbFn, RevealFn, ancestral_update, check_reveal_steps
from cofre_jax.sampling.warm_start import (
    PUBLISHED_3SR,
    ReuseCoefficients,
    mix_start,
    warm_start_gamma,
)


class FPDenoiseOutput(NamedTuple):
    log_probs_BxLxV: jax.Array  # SUBS log-probs (MASK never predicted)
    h_star_BxLxD: jax.Array  # the solver's returned state (the next step's h*_prev)
    stats: SolverStats


# (params, z_BxL, t_B, cond, h0_fn or None, num_iterations) -> FPDenoiseOutput
FPDenoiseFn = Callable[..., FPDenoiseOutput]


class FPSampleState(NamedTuple):
    z_BxL: jax.Array  # int32 current sequence
    z_prev_BxL: jax.Array  # int32 the previous step's denoiser input
    h_prev_BxLxD: jax.Array  # float32 the previous step's h*
    step: jax.Array  # int32 index of the next step
    bank: jax.Array  # int32 planned F iterations left unspent by earlier steps
    key: jax.Array
    iterations_TxB: jax.Array  # int32 F iterations each sequence ran per step
    evals_T: jax.Array  # int32 batched F evaluations per step (max over the batch)
    residual_TxB: jax.Array  # float32 residual of each step's returned state


class FPSampleOutput(NamedTuple):
    tokens_BxL: jax.Array  # int32, no MASK left
    block_passes: jax.Array  # int32 scalar: spent by the batch (<= budget)
    block_passes_B: jax.Array  # int32 each sequence's own passes (<= block_passes)
    iterations_TxB: jax.Array
    evals_T: jax.Array
    residual_TxB: jax.Array


def make_fp_transition(
    fp_denoise_fn: FPDenoiseFn,
    params: Any,
    iterations_T: jax.Array,
    coefficients: ReuseCoefficients,
    *,
    mask_id: int,
    mask_prob_fn: MaskProbFn,
    reveal_fn: RevealFn,
    warm_start: str,
    top_p: float,
    cond: Any = None,
) -> Transition:
    """One FP denoising step as a pure `(FPSampleState, t, s) -> FPSampleState`."""

    def transition(state: FPSampleState, t: jax.Array, s: jax.Array) -> FPSampleState:
        i = state.step
        cap = iterations_T[i] + state.bank
        gamma_BxL = warm_start_gamma(
            warm_start, i == 0, state.z_BxL, state.z_prev_BxL, coefficients, mask_id
        )
        h0_fn = None
        if gamma_BxL is not None:
            h0_fn = functools.partial(mix_start, gamma_BxL, state.h_prev_BxLxD)
        t_B = jnp.full((state.z_BxL.shape[0],), t, jnp.float32)
        out = fp_denoise_fn(params, state.z_BxL, t_B, cond, h0_fn, cap)
        log_probs_BxLxV = out.log_probs_BxLxV.astype(jnp.float32).at[..., mask_id].set(NEG_INF)
        log_probs_BxLxV = top_p_filter(log_probs_BxLxV, top_p)
        key, step_key = jax.random.split(state.key)
        z_BxL = reveal_fn(
            step_key, state.z_BxL, log_probs_BxLxV, t, s, mask_prob_fn=mask_prob_fn, mask_id=mask_id
        )
        stats = out.stats
        evals = stats.evals.astype(jnp.int32)
        return FPSampleState(
            z_BxL=z_BxL,
            z_prev_BxL=state.z_BxL,
            h_prev_BxLxD=out.h_star_BxLxD.astype(jnp.float32),
            step=i + 1,
            bank=cap - evals,
            key=key,
            iterations_TxB=state.iterations_TxB.at[i].set(stats.iterations_B.astype(jnp.int32)),
            evals_T=state.evals_T.at[i].set(evals),
            residual_TxB=state.residual_TxB.at[i].set(stats.residual_B.astype(jnp.float32)),
        )

    return transition


def fp_sample_fn(
    fp_denoise_fn: FPDenoiseFn,
    params: Any,
    key: jax.Array,
    iterations_T: jax.Array,
    z_init_BxL: jax.Array,
    coefficients: ReuseCoefficients = PUBLISHED_3SR,
    final_eps: float | jax.Array = 1e-5,
    cond: Any = None,
    *,
    cost: StepCost,
    hidden_size: int,
    mask_id: int,
    mask_prob_fn: MaskProbFn,
    reveal_fn: RevealFn = ancestral_update,
    warm_start: str = "3sr",
    top_p: float = 1.0,
) -> FPSampleOutput:
    """The sampler as a pure function (jit it, with shardings if wanted; `fp_sample` is
    the plain jitted form). iterations_T (int, length T) is the plan's N_i; z_init_BxL
    the start (all MASK, or partly visible for infilling; visible tokens are kept);
    cond the condition handed to every denoiser call (a pytree of arrays, or None)."""
    if warm_start not in WARM_STARTS:
        raise ValueError(f"unknown warm_start {warm_start!r}; valid: {WARM_STARTS}")
    iterations_T = jnp.asarray(iterations_T, jnp.int32)
    if iterations_T.ndim != 1 or iterations_T.shape[0] < 1:
        raise ValueError(f"iterations_T must be a non-empty 1-d array, got {iterations_T.shape}")
    z_BxL = jnp.asarray(z_init_BxL, jnp.int32)
    (batch, length), steps = z_BxL.shape, iterations_T.shape[0]
    check_reveal_steps(reveal_fn, steps)
    transition = make_fp_transition(
        fp_denoise_fn,
        params,
        iterations_T,
        coefficients,
        mask_id=mask_id,
        mask_prob_fn=mask_prob_fn,
        reveal_fn=reveal_fn,
        warm_start=warm_start,
        top_p=top_p,
        cond=cond,
    )
    state = FPSampleState(
        z_BxL=z_BxL,
        z_prev_BxL=z_BxL,
        h_prev_BxLxD=jnp.zeros((batch, length, hidden_size), jnp.float32),
        step=jnp.int32(0),
        bank=jnp.int32(0),
        key=key,
        iterations_TxB=jnp.zeros((steps, batch), jnp.int32),
        evals_T=jnp.zeros((steps,), jnp.int32),
        residual_TxB=jnp.zeros((steps, batch), jnp.float32),
    )
    state = run_transitions(transition, state, ancestral_times(steps, final_eps))
    return FPSampleOutput(
        tokens_BxL=state.z_BxL,
        block_passes=cost.total(steps, jnp.sum(state.evals_T)),
        block_passes_B=cost.total(steps, jnp.sum(state.iterations_TxB, axis=0)),
        iterations_TxB=state.iterations_TxB,
        evals_T=state.evals_T,
        residual_TxB=state.residual_TxB,
    )


_STATIC = ("fp_denoise_fn", "cost", "hidden_size", "mask_id", "mask_prob_fn", "reveal_fn",
           "warm_start", "top_p")  # fmt: skip
fp_sample_jit = jax.jit(fp_sample_fn, static_argnames=_STATIC)


def fp_sample(
    fp_denoise_fn: FPDenoiseFn,
    params: Any,
    key: jax.Array,
    plan: BudgetPlan,
    *,
    batch_size: int,
    seq_len: int,
    hidden_size: int,
    mask_id: int,
    mask_prob_fn: MaskProbFn,
    reveal_fn: RevealFn = ancestral_update,
    warm_start: str = "3sr",
    coefficients: ReuseCoefficients = PUBLISHED_3SR,
    top_p: float = 1.0,
    final_eps: float = 1e-5,
    z_init_BxL: jax.Array | None = None,
    cond: Any = None,
) -> FPSampleOutput:
    """Samples batch_size sequences within plan.budget block passes (jitted; functions
    are static and hashed by identity, so pass the same objects to reuse the compile;
    cond, a pytree of arrays or None, is traced, so a new condition batch reuses it)."""
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
    if plan.cost.per_iteration == 0:
        raise ValueError(f"plan {plan.cost} has no fixed-point iterations: use the MDLM sampler")
    if z_init_BxL is None:
        z_init_BxL = jnp.full((batch_size, seq_len), mask_id, jnp.int32)
    elif tuple(z_init_BxL.shape) != (batch_size, seq_len):
        raise ValueError(
            f"z_init_BxL has shape {tuple(z_init_BxL.shape)}; expected (batch_size, seq_len) "
            f"= ({batch_size}, {seq_len})"
        )
    return fp_sample_jit(
        fp_denoise_fn,
        params,
        key,
        jnp.asarray(plan.iterations_T, jnp.int32),
        z_init_BxL,
        ReuseCoefficients(*(float(c) for c in coefficients)),
        final_eps,
        cond,
        cost=plan.cost,
        hidden_size=hidden_size,
        mask_id=mask_id,
        mask_prob_fn=mask_prob_fn,
        reveal_fn=reveal_fn,
        warm_start=warm_start,
        top_p=top_p,
    )
