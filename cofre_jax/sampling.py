"""Jitted samplers for masked diffusion models (docs/method.md §2.1): MDLM's ancestral sampler.

Structure (MaskGIT `libml/` style): a decoding state (`SampleState`, a NamedTuple) is
carried through one `lax.fori_loop` over a time grid by a generic driver
(`run_transitions`). What a step does is a swappable pure function
`transition(state, t, s) -> state`; `make_ancestral_transition` builds MDLM's. The
fixed-point sampler (`cofre_jax.fp_sampling`: warm-started solver state, budgets)
supplies its own transition and state and reuses the driver, `sample_categorical`,
`top_p_filter` and a reveal rule (`RevealFn`): `ancestral_update` (MDLM) or
`confidence_update` (MaskGIT's confidence decoding, for the image model).
`ancestral_sample_with_budget` puts MDLM on the block-pass budget interface of
`cofre_jax.budget`.

Ancestral step t -> s. Every MASK position is revealed with probability
(alpha_s - alpha_t) / (1 - alpha_t) = (m(t) - m(s)) / m(t), m = mask_prob_fn = 1 - alpha,
to a token drawn from p_theta(x_0 | z_t); visible tokens are copied (no re-masking).
For the log-linear schedule m(t) = (1 - eps) t, so this is MDLM's (t - s) / t.
Times are linspace(1, final_eps, steps + 1) as in MDLM.

Last step. MDLM ends with a "noise removal" pass: one extra network call at t = final_eps
and an argmax over the masks still left. We instead treat the last step's s as the clean
time 0 (alpha_0 = 1, reveal probability 1): every remaining MASK is drawn from the same
p_theta the step already computed. This is the exact ancestral posterior from
t_{steps-1} to 0, costs no extra network call (so `steps` network calls is the whole
budget, matching the block-pass accounting of docs/method.md §2.2), and differs from MDLM only on
positions still masked at final_eps (a fraction about final_eps / t_{steps-1}), which
are sampled rather than argmaxed.

Logit reuse (MDLM's cache). If a step revealed no token anywhere in the batch, the next
step's z equals this step's z, and the previous (filtered) log-probabilities are reused:
`lax.cond` skips the network, and `network_calls` counts the evaluations really made.
The reuse is exact only when the denoiser ignores t (time conditioning off, as in the
published OWT run): with time conditioning on, the reused log-probs belong to the
previous time, an approximation MDLM avoids by disabling the cache. Callers with a
t-dependent denoiser should pass reuse_logits=False.

Categorical noise with float64 resolution, without x64. Drawing with float32 uniforms
truncates the Gumbel noise (largest value about 16 with 23-bit uniforms), which makes
tokens more than e^-16 less likely than the top one unreachable and measurably lowers
sample diversity; MDLM therefore draws in float64. Enabling x64 is not an option here:
`jax.experimental.enable_x64` is gone in jax 0.10, and tracing the caller's denoiser
under a scoped `jax.enable_x64(True)` silently turns its `jnp.zeros`/`arange` defaults
into 64-bit types (doubled memory, emulated float64 on TPU). Instead each noise value is
built from 64 random bits (two uint32 draws) N in [0, 2^64): U = (N + 1/2) 2^-64 and
V = 1 - U are both formed in float32 with full *relative* precision (V from the bitwise
complement of N, so no cancellation), and the Exp(1) variate is E = -log U for U < 1/2,
-log1p(-V) otherwise. E agrees with the same formula evaluated in float64 to float32
rounding (about 1e-7 relative) over its whole range, [2^-65, 45]: the equivalent Gumbel
noise -log E reaches 45, beyond float64 uniform draws (about 36) and float32 ones (16).
Sampling is the exponential race argmax_v p_v / E_v, done in log space as
argmax_v log p_v - log E_v. Measured on one top token plus 4096 tokens each e^-16.5 times
less likely (131072 draws, CPU): this noise drew a tail token 35 times (36.6 expected),
`jax.random.categorical` with its float32 default 15 times; the noise costs about 1.7x
the float32 draw, small next to a network call.

Letters: B batch, L sequence length, V vocabulary (MASK included), T time points
(steps + 1), S any leading (batch) shape.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from cofre_jax.budget import BudgetPlan
from cofre_jax.diffusion import NEG_INF

# (params, z_BxL, t_B) -> log_probs_BxLxV, SUBS applied (MASK column NEG_INF).
DenoiseFn = Callable[[Any, jax.Array, jax.Array], jax.Array]
# t (any shape) -> 1 - alpha_t elementwise, with mask_prob_fn(0) = 0.
MaskProbFn = Callable[[jax.Array], jax.Array]


class SampleState(NamedTuple):
    """Decoding state carried through the loop."""

    z_BxL: jax.Array  # int32 current sequence; MASK where not yet revealed
    log_probs_BxLxV: jax.Array  # float32 filtered log-probs of the last network call
    cache_valid: jax.Array  # bool: log_probs_BxLxV was computed from the current z_BxL
    key: jax.Array
    network_calls: jax.Array  # int32 denoiser evaluations made so far


class SampleOutput(NamedTuple):
    tokens_BxL: jax.Array  # int32, no MASK left
    network_calls: jax.Array  # int32 scalar


Transition = Callable[[Any, jax.Array, jax.Array], Any]
# (key, z_BxL, log_probs_BxLxV, t, s, *, mask_prob_fn, mask_id) -> z_BxL: which MASK
# positions a step t -> s reveals, and to what. `ancestral_update` (MDLM) and
# `confidence_update` (MaskGIT) are the two rules; samplers take either.
RevealFn = Callable[..., jax.Array]


# --------------------------------------------------------------------------- noise


def _unit_from_bits(hi: jax.Array, lo: jax.Array) -> jax.Array:
    """(N + 1/2) 2^-64 for N = hi 2^32 + lo, in float32 with full relative precision
    (the hi and lo terms are scaled separately, so tiny values keep 24 significant bits)."""
    hi_f = hi.astype(jnp.float32) * jnp.float32(2.0**-32)
    lo_f = (lo.astype(jnp.float32) + jnp.float32(0.5)) * jnp.float32(2.0**-64)
    return hi_f + lo_f


def exponential_from_bits(hi: jax.Array, lo: jax.Array) -> jax.Array:
    """Exp(1) variates from 64 random bits (two uint32 arrays of equal shape), float32.

    E = -log U with U = (N + 1/2) 2^-64 uniform in (0, 1). Where U < 1/2, -log U is
    accurate as is; where U >= 1/2 the small values of E are what matter (they decide
    rare-token wins), so E = -log1p(-V) with V = 1 - U formed from the complemented bits.
    """
    hi = hi.astype(jnp.uint32)
    lo = lo.astype(jnp.uint32)
    u = _unit_from_bits(hi, lo)
    v = _unit_from_bits(jnp.bitwise_not(hi), jnp.bitwise_not(lo))
    lower_half = hi < jnp.uint32(2**31)
    return jnp.where(lower_half, -jnp.log(u), -jnp.log1p(-v))


def exponential_noise(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Exp(1) noise of the given shape with float64-grade tails (see module docstring)."""
    bits_2xS = jax.random.bits(key, (2, *shape), jnp.uint32)
    return exponential_from_bits(bits_2xS[0], bits_2xS[1])


def sample_categorical(
    key: jax.Array, log_probs_SxV: jax.Array, *, from_probs: bool = False
) -> jax.Array:
    """Draws one index per row of the last axis: int32 of shape S.

    log_probs_SxV need not be normalised (any log-weights); with from_probs=True the
    input is probabilities instead. Exponential race argmax_v log p_v - log E_v with
    `exponential_noise`; zero-probability entries (log p = -inf or NEG_INF) never win
    while a row has any entry of positive probability.
    """
    log_probs_SxV = log_probs_SxV.astype(jnp.float32)
    if from_probs:
        log_probs_SxV = jnp.log(log_probs_SxV)
    noise_SxV = exponential_noise(key, log_probs_SxV.shape)
    score_SxV = log_probs_SxV - jnp.log(noise_SxV)
    # argmax(score) written as argmax(score == max(score)): the same first index of the
    # maximum, but XLA:CPU then computes the noise in vectorised elementwise code instead
    # of fusing it into argmax's (value, index) reduction, about 3x faster (measured at
    # 8 x 128 x 258: 3.3 ms instead of 9.6 ms).
    is_max_SxV = score_SxV == jnp.max(score_SxV, axis=-1, keepdims=True)
    return jnp.argmax(is_max_SxV, axis=-1).astype(jnp.int32)


def top_p_filter(log_probs_SxV: jax.Array, top_p: float) -> jax.Array:
    """Nucleus filter: keeps the smallest set of most likely tokens whose mass is >= top_p.

    Returns renormalised float32 log-probs with the dropped tokens at NEG_INF. Ties at the
    boundary are broken by token index (lower first), so the kept set is always minimal.
    top_p >= 1 returns the input unchanged (cast to float32).
    """
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    log_probs_SxV = log_probs_SxV.astype(jnp.float32)
    if top_p >= 1.0:
        return log_probs_SxV
    log_probs_SxV = jax.nn.log_softmax(log_probs_SxV, axis=-1)
    order_SxV = jnp.argsort(log_probs_SxV, axis=-1, stable=True, descending=True)
    sorted_probs_SxV = jnp.exp(jnp.take_along_axis(log_probs_SxV, order_SxV, axis=-1))
    # Mass strictly before each sorted token; shifting the inclusive cumsum (rather than
    # subtracting) avoids cancellation. A token is kept iff that mass is still < top_p,
    # so the top token is always kept and the kept prefix is the smallest with mass >= p.
    cumsum_SxV = jnp.cumsum(sorted_probs_SxV, axis=-1)
    mass_before_SxV = jnp.concatenate(
        [jnp.zeros_like(cumsum_SxV[..., :1]), cumsum_SxV[..., :-1]], axis=-1
    )
    keep_sorted_SxV = mass_before_SxV < top_p
    keep_SxV = jnp.put_along_axis(
        jnp.zeros_like(keep_sorted_SxV), order_SxV, keep_sorted_SxV, axis=-1, inplace=False
    )
    filtered_SxV = jnp.where(keep_SxV, log_probs_SxV, NEG_INF)
    return jax.nn.log_softmax(filtered_SxV, axis=-1)


# ------------------------------------------------------------------ one ancestral step


def ancestral_update(
    key: jax.Array,
    z_BxL: jax.Array,
    log_probs_BxLxV: jax.Array,
    t: jax.Array,
    s: jax.Array,
    *,
    mask_prob_fn: MaskProbFn,
    mask_id: int,
) -> jax.Array:
    """z_s given z_t and p_theta(x_0 | z_t): reveal each MASK w.p. (m(t) - m(s)) / m(t).

    s <= 0 means the clean time: every MASK is revealed. Visible tokens are copied.
    """
    reveal_key, token_key = jax.random.split(key)
    t = jnp.asarray(t, jnp.float32)
    s = jnp.asarray(s, jnp.float32)
    mask_t = mask_prob_fn(t)
    reveal_prob = (mask_t - mask_prob_fn(s)) / jnp.maximum(mask_t, jnp.finfo(jnp.float32).tiny)
    reveal_prob = jnp.where(s <= 0.0, 1.0, jnp.clip(reveal_prob, 0.0, 1.0))
    x0_BxL = sample_categorical(token_key, log_probs_BxLxV)
    # u in [0, 1), so reveal_prob = 1 reveals every mask and 0 none.
    u_BxL = jax.random.uniform(reveal_key, z_BxL.shape, jnp.float32)
    reveal_BxL = (z_BxL == mask_id) & (u_BxL < reveal_prob)
    return jnp.where(reveal_BxL, x0_BxL, z_BxL)


def confidence_update(
    key: jax.Array,
    z_BxL: jax.Array,
    log_probs_BxLxV: jax.Array,
    t: jax.Array,
    s: jax.Array,
    *,
    mask_prob_fn: MaskProbFn,
    mask_id: int,
    temperature: float = 4.5,
) -> jax.Array:
    """MaskGIT's confidence decoding step t -> s (the image model's reveal rule).

    Draws x0 at every position, scores each MASK position by log p(x0) plus
    temperature * t * Gumbel noise (MaskGIT's annealed choice temperature), and keeps
    the floor(m(s) L) lowest-scoring ones masked (at most the masks there are), so the
    mask count follows the schedule deterministically; the others are revealed to
    their x0. s <= 0 reveals every MASK. Visible tokens are copied.
    """
    token_key, noise_key = jax.random.split(key)
    x0_BxL = sample_categorical(token_key, log_probs_BxLxV)
    score_BxL = jnp.take_along_axis(log_probs_BxLxV, x0_BxL[..., None], axis=-1)[..., 0]
    gumbel_BxL = -jnp.log(exponential_noise(noise_key, z_BxL.shape))
    score_BxL = (
        score_BxL.astype(jnp.float32) + temperature * jnp.asarray(t, jnp.float32) * gumbel_BxL
    )
    masked_BxL = z_BxL == mask_id
    # Visible positions score +inf, so the ascending rank of a MASK is among masks only.
    score_BxL = jnp.where(masked_BxL, score_BxL, jnp.inf)
    rank_BxL = jnp.argsort(jnp.argsort(score_BxL, axis=-1, stable=True), axis=-1, stable=True)
    length = z_BxL.shape[1]
    s = jnp.asarray(s, jnp.float32)
    keep = jnp.where(s <= 0.0, 0, jnp.floor(mask_prob_fn(s) * length)).astype(jnp.int32)
    keep_B = jnp.minimum(keep, jnp.sum(masked_BxL, axis=1))
    reveal_BxL = masked_BxL & (rank_BxL >= keep_B[:, None])
    return jnp.where(reveal_BxL, x0_BxL, z_BxL)


def make_ancestral_transition(
    denoise_fn: DenoiseFn,
    params: Any,
    *,
    mask_id: int,
    mask_prob_fn: MaskProbFn,
    top_p: float = 1.0,
    reuse_logits: bool = True,
) -> Transition:
    """MDLM's step as a pure `(SampleState, t, s) -> SampleState`.

    The network runs on (z_t, t) unless reuse_logits and no token changed in the previous
    step, in which case `lax.cond` skips it and the cached log-probs are used.
    """

    def network(z_BxL: jax.Array, t: jax.Array) -> jax.Array:
        t_B = jnp.full((z_BxL.shape[0],), t, jnp.float32)
        log_probs_BxLxV = denoise_fn(params, z_BxL, t_B).astype(jnp.float32)
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
        z_BxL = ancestral_update(
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


# ------------------------------------------------------------------------- the loop


def run_transitions(transition: Transition, state: Any, times_T: jax.Array) -> Any:
    """Applies `state = transition(state, times_T[i], times_T[i + 1])`, i = 0..T-2, in
    one `lax.fori_loop` (no Python loop per step). Works for any state pytree."""

    def body(i, state):
        return transition(state, times_T[i], times_T[i + 1])

    return lax.fori_loop(0, times_T.shape[0] - 1, body, state)


def ancestral_times(steps: int, final_eps: float | jax.Array) -> jax.Array:
    """times_T = linspace(1, final_eps, steps + 1) with the last entry set to the clean
    time 0, so the last transition resolves every mask (see the module docstring)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps!r}")
    times_T = jnp.linspace(1.0, final_eps, steps + 1, dtype=jnp.float32)
    return times_T.at[-1].set(0.0)


def init_state(denoise_fn: DenoiseFn, params: Any, z_BxL: jax.Array, key: jax.Array) -> SampleState:
    """Start state: no cached log-probs (their shape comes from `jax.eval_shape`)."""
    z_BxL = jnp.asarray(z_BxL, jnp.int32)
    t_B = jnp.ones((z_BxL.shape[0],), jnp.float32)
    out = jax.eval_shape(denoise_fn, params, z_BxL, t_B)
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
) -> SampleOutput:
    """MDLM ancestral sampling of batch_size sequences in `steps` steps (jitted).

    denoise_fn and mask_prob_fn are static (hashed by identity: pass the same function
    objects to reuse the compilation); params, key, final_eps and z_init_BxL are traced.
    z_init_BxL (optional, shape (batch_size, seq_len)) starts from a partly visible
    sequence, e.g. for infilling; its visible tokens are kept. Default: all MASK.
    """
    if batch_size < 1 or seq_len < 1:
        raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
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
    )
    state = init_state(denoise_fn, params, z_BxL, key)
    state = run_transitions(transition, state, ancestral_times(steps, final_eps))
    return SampleOutput(tokens_BxL=state.z_BxL, network_calls=state.network_calls)


# ------------------------------------------------------------------- with a budget


class BudgetSampleOutput(NamedTuple):
    tokens_BxL: jax.Array  # int32, no MASK left
    network_calls: jax.Array  # int32 scalar
    block_passes: jax.Array  # int32 scalar: network_calls * blocks per call (<= budget)


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
    `ancestral_sample` (batch_size, seq_len, mask_id, mask_prob_fn, top_p, ...).
    """
    if plan.cost.per_iteration != 0:
        raise ValueError(
            f"an MDLM plan has no per-iteration cost; got {plan.cost} (use the FP sampler)"
        )
    out = ancestral_sample(denoise_fn, params, key, steps=plan.steps, **kwargs)
    return BudgetSampleOutput(
        out.tokens_BxL, out.network_calls, out.network_calls * jnp.int32(plan.cost.base)
    )
