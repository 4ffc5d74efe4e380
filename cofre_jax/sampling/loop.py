"""The decoding loop shared by every sampler (MaskGIT `libml/` style).

A decoding state (a NamedTuple pytree: `SampleState` for MDLM's ancestral sampler,
`fixed_point.FPSampleState` for the FP sampler) is carried through one `lax.fori_loop`
over a time grid by `run_transitions`. What a step does is a swappable pure function
`transition(state, t, s) -> state` (`Transition`); a sampler is a transition, a start
state and a time grid.

Time grid. `ancestral_times` is linspace(1, final_eps, steps + 1) as in MDLM, with the
last entry set to the clean time 0. MDLM ends with a "noise removal" pass: one extra
network call at t = final_eps and an argmax over the masks still left. We instead treat
the last step's s as the clean time 0 (alpha_0 = 1, reveal probability 1): every
remaining MASK is drawn from the same p_theta the step already computed. This is the
exact ancestral posterior from t_{steps-1} to 0, costs no extra network call (so
`steps` network calls is the whole budget, matching the block-pass accounting of
docs/method.md §2.2), and differs from MDLM only on positions still masked at final_eps
(a fraction about final_eps / t_{steps-1}), which are sampled rather than argmaxed.

Letters: B batch, L sequence length, V vocabulary (MASK included), T time points
(steps + 1).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


class SampleState(NamedTuple):
    """MDLM's decoding state carried through the loop."""

    z_BxL: jax.Array  # int32 current sequence; MASK where not yet revealed
    log_probs_BxLxV: jax.Array  # float32 filtered log-probs of the last network call
    cache_valid: jax.Array  # bool: log_probs_BxLxV was computed from the current z_BxL
    key: jax.Array
    network_calls: jax.Array  # int32 denoiser evaluations made so far


# (state, t, s) -> state: one denoising step from time t to the earlier time s.
Transition = Callable[[Any, jax.Array, jax.Array], Any]


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
