"""What every denoiser returns: one structure, whatever the model."""

from __future__ import annotations

from typing import NamedTuple

import jax

from cofre_jax.fixed_point import SolverStats


class DenoiserOutput(NamedTuple):
    """One denoiser call.

    logits_BxLxV: raw logits (float32), before any SUBS parameterisation.
    hidden_BxLxD: the final pre-logit hidden states (after the post stack).
    h_star_BxLxD: the fixed point the solver reached (None for an explicit stack).
    stats: the fixed-point solver's stats (None for an explicit stack).
    """

    logits_BxLxV: jax.Array
    hidden_BxLxD: jax.Array
    h_star_BxLxD: jax.Array | None = None
    stats: SolverStats | None = None
