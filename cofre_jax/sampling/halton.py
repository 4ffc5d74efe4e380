"""The image model's reveal rules (docs/method.md §2.7, Halton-MaskGIT style) over an
H x W grid of VQ codes flattened row-major to L = H W tokens (position p = row W + col).

Halton order (`halton_order`). The 2-D Halton sequence, point n = 1, 2, ... (as
Halton-MaskGIT's generator, which starts at n = 1) is (phi_2(n), phi_3(n)), phi_b the
radical inverse in base b; point n falls in cell (floor(H phi_2(n)), floor(W phi_3(n))),
the base-2 coordinate giving the row. Cells are listed in the order they are first
visited (duplicates dropped) until all L are, which gives a permutation of range(L).
The arithmetic is exact (integers), on the host, once per grid (cached). On square
grids (7, 14, 16, 32 checked) it equals Halton-MaskGIT's `build_halton_mask` order.

Arccos counts (`arccos_mask_counts`). MaskGIT's arccos schedule: after step i of T the
mask ratio is r(i) = arccos(i / T) / (pi / 2) (r(0) = 1, r(T) = 0). As Halton-MaskGIT
counts revealed tokens with int((1 - r(i)) L), the masks left after step i are

    M_i = min(L - floor(L (1 - r(i))), M_{i-1} - 1),   M_0 = L   (float64, numpy)

so M_T = 0 and each step reveals M_{i-1} - M_i >= 1 tokens, summing to L, for T <= L.
The min makes ">= 1 per step" hold by construction; in our checks it never binds: for
every L < 120, L in (196, 256, 1024) and every T <= L the table equals Halton-MaskGIT's
revealed counts max(i, int((1 - r(i)) L)) exactly. The floor has a 1e-9 guard
(`FLOOR_GUARD`) so that an integer real value (i / T = 1/2 with 3 | L gives L / 3) is
not floored one below by float rounding, as float32 and float64 arithmetic can.

Step index. The rules are step-indexed (the count table and the annealing depend on
i, not on a time), and get i from the sampler's time s with `reveal.step_of_time`,
exact on the samplers' grid `loop.ancestral_times(T, final_eps)`. We chose this over a
step argument in the `RevealFn` interface: the loop, both samplers and every existing
rule stay as they are, and a rule built for T steps is checked against the sampler's T
(`reveal.check_reveal_steps`: the rules carry `steps`). Each rule is a frozen
dataclass, so equal settings hash alike and reuse the samplers' compilation.

    HaltonReveal         reveals exactly the masked positions among the first L - M_i
                         of the Halton order, each drawn from the step's tempered
                         log-probs (no confidence, no noise). Unlike Halton-MaskGIT,
                         which redraws the whole prefix every step, visible tokens never
                         change (3SR relies on it).
    AnnealedConfidence   MaskGIT's rule: log p(x0) + tau (1 - (i + 1) / T) Gumbel, the
                         M_i least confident masks stay masked.

Token temperature: x0 is drawn from log_probs / temp_i, temp_i linear from
temperature[0] at the first step to temperature[1] at the last (equal: constant);
Halton-MaskGIT multiplies logits by its "temperature" (an inverse temperature), we
divide.

Letters: B batch, L length (H W), V vocabulary (MASK included), T steps.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.sampling.noise import sample_categorical
from cofre_jax.sampling.reveal import (
    MaskProbFn,
    confidence_update,
    linear_in_step,
    step_of_time,
)

HALTON_BASES = (2, 3)  # (rows, columns)
# Added before flooring L (1 - r(i)), so that a real value that is an integer is not
# floored one below by float64 rounding (far below the spacing 1/L of other values).
FLOOR_GUARD = 1e-9


def radical_inverse(n_N: np.ndarray, base: int) -> tuple[np.ndarray, np.ndarray]:
    """phi_base(n) = sum_j d_j base^-(j+1) for n = sum_j d_j base^j, as exact integer
    fractions (numerator_N, denominator_N), int64."""
    n_N = np.asarray(n_N, np.int64).copy()
    num_N, den_N = np.zeros_like(n_N), np.ones_like(n_N)
    while (n_N > 0).any():
        live_N = n_N > 0
        num_N = np.where(live_N, num_N * base + n_N % base, num_N)
        den_N = np.where(live_N, den_N * base, den_N)
        n_N //= base
    return num_N, den_N


@functools.lru_cache(maxsize=16)
def _halton_order(height: int, width: int) -> tuple[int, ...]:
    length = height * width
    points = 4 * length
    while True:
        n_N = np.arange(1, points + 1, dtype=np.int64)
        row_num, row_den = radical_inverse(n_N, HALTON_BASES[0])
        col_num, col_den = radical_inverse(n_N, HALTON_BASES[1])
        cell_N = (height * row_num // row_den) * width + width * col_num // col_den
        _, first_visit = np.unique(cell_N, return_index=True)
        if first_visit.shape[0] == length:
            return tuple(int(c) for c in cell_N[np.sort(first_visit)])
        points *= 2


def halton_order(height: int, width: int) -> np.ndarray:
    """The Halton reveal order of an H x W grid: int64 (L,), a permutation of range(L)
    of row-major positions, in first-visit order (see the module docstring)."""
    if height < 1 or width < 1:
        raise ValueError(f"grid must be at least 1 x 1, got {height} x {width}")
    return np.asarray(_halton_order(int(height), int(width)), np.int64)


@functools.lru_cache(maxsize=64)
def _arccos_mask_counts(length: int, steps: int) -> tuple[int, ...]:
    i_T = np.arange(1, steps + 1, dtype=np.float64)
    ratio_T = np.arccos(i_T / steps) / (np.pi / 2)
    # FLOOR_GUARD: floor the real value where it is an integer (i / T = 1/2, 3 | L).
    raw_T = length - np.floor(length * (1.0 - ratio_T) + FLOOR_GUARD).astype(np.int64)
    counts = [length]
    for raw in raw_T:
        counts.append(min(int(raw), counts[-1] - 1))
    return tuple(counts)


def arccos_mask_counts(length: int, steps: int) -> np.ndarray:
    """M_0..M_T (int64, T + 1): the masks left after each step under the arccos schedule
    (module docstring); M_0 = L, M_T = 0, strictly decreasing. Needs 1 <= T <= L."""
    if not 1 <= steps <= length:
        raise ValueError(f"need 1 <= steps <= length for >= 1 token per step, got "
                         f"steps={steps}, length={length}")  # fmt: skip
    return np.asarray(_arccos_mask_counts(int(length), int(steps)), np.int64)


def arccos_reveal_counts(length: int, steps: int) -> np.ndarray:
    """Tokens revealed at each step, M_{i-1} - M_i (int64, T): each >= 1, summing to L."""
    return -np.diff(arccos_mask_counts(length, steps))


def _check_temperature(rule) -> None:
    """Validates rule.temperature and stores it as a tuple of floats (hashable)."""
    temperature = tuple(float(x) for x in rule.temperature)
    if len(temperature) != 2 or min(temperature) <= 0:
        raise ValueError(f"temperature must be (first, last), both > 0; got {temperature!r}")
    object.__setattr__(rule, "temperature", temperature)


def _tempered(log_probs_BxLxV, temperature: tuple[float, float], step, steps):
    """log_probs / temp_i (unchanged when the temperature is 1 throughout)."""
    if tuple(temperature) == (1.0, 1.0):
        return log_probs_BxLxV
    temp = linear_in_step(temperature[0], temperature[1], step, steps)
    return log_probs_BxLxV.astype(jnp.float32) / temp


@dataclasses.dataclass(frozen=True)
class HaltonReveal:
    """Halton-MaskGIT's reveal rule for an H x W grid sampled in `steps` steps (a
    `RevealFn`): step i reveals the masked positions among the first L - M_i of the
    Halton order, each drawn from the step's tempered log-probs."""

    height: int
    width: int
    steps: int
    temperature: tuple[float, float] = (1.0, 1.0)  # token temperature, first and last step

    def __post_init__(self):
        arccos_mask_counts(self.height * self.width, self.steps)  # validates the sizes
        _check_temperature(self)

    @property
    def length(self) -> int:
        return self.height * self.width

    def scheduled_L(self, step: int) -> np.ndarray:
        """bool (L,): the positions step `step` (0-based) reveals from an all-MASK start."""
        order_L = halton_order(self.height, self.width)
        counts = self.length - arccos_mask_counts(self.length, self.steps)
        out_L = np.zeros(self.length, bool)
        out_L[order_L[counts[step] : counts[step + 1]]] = True
        return out_L

    def __call__(
        self,
        key: jax.Array,
        z_BxL: jax.Array,
        log_probs_BxLxV: jax.Array,
        t: jax.Array,
        s: jax.Array,
        *,
        mask_prob_fn: MaskProbFn,
        mask_id: int,
    ) -> jax.Array:
        del t, mask_prob_fn  # the step comes from s, the counts from the arccos table
        if z_BxL.shape[1] != self.length:
            raise ValueError(f"{self} needs length {self.length}, got {z_BxL.shape[1]}")
        done = step_of_time(s, self.steps)  # steps done after this one
        rank_L = np.empty(self.length, np.int32)
        rank_L[halton_order(self.height, self.width)] = np.arange(self.length, dtype=np.int32)
        revealed_T1 = jnp.asarray(
            self.length - arccos_mask_counts(self.length, self.steps), jnp.int32
        )
        in_prefix_L = jnp.asarray(rank_L) < revealed_T1[done]
        lp_BxLxV = _tempered(log_probs_BxLxV, self.temperature, done - 1, self.steps)
        x0_BxL = sample_categorical(key, lp_BxLxV)
        reveal_BxL = (z_BxL == mask_id) & in_prefix_L[None, :]
        return jnp.where(reveal_BxL, x0_BxL, z_BxL)


@dataclasses.dataclass(frozen=True)
class AnnealedConfidence:
    """MaskGIT's confidence rule with annealed Gumbel noise for `steps` steps (a
    `RevealFn`). Step i (0-based) scores each MASK by

        log p(x0) + tau (1 - (i + 1) / T) g,   g ~ Gumbel(0, 1),

    x0 drawn from the step's tempered log-probs, p the model's (untempered) log-probs,
    and keeps the lowest-scoring M_{i+1} masked: counts="arccos" takes M from
    `arccos_mask_counts`, counts="schedule" is confidence_update's floor(m(s) L) with
    the sampler's mask_prob_fn. The noise is MaskGIT's choice_temperature (1 - ratio),
    ratio = (i + 1) / T, so the last step has none; tau = 0 is greedy confidence. With
    counts="schedule", temperature 1 and tau = 0 it is `confidence_update(...,
    temperature=0)` bit for bit."""

    steps: int
    tau: float = 4.5
    temperature: tuple[float, float] = (1.0, 1.0)  # token temperature, first and last step
    counts: str = "arccos"

    def __post_init__(self):
        if self.steps < 1 or self.tau < 0 or self.counts not in ("arccos", "schedule"):
            raise ValueError(f"need steps >= 1, tau >= 0, counts 'arccos' or 'schedule': {self}")
        _check_temperature(self)

    def __call__(
        self,
        key: jax.Array,
        z_BxL: jax.Array,
        log_probs_BxLxV: jax.Array,
        t: jax.Array,
        s: jax.Array,
        *,
        mask_prob_fn: MaskProbFn,
        mask_id: int,
    ) -> jax.Array:
        done = step_of_time(s, self.steps)
        keep = None
        if self.counts == "arccos":
            keep = jnp.asarray(arccos_mask_counts(z_BxL.shape[1], self.steps), jnp.int32)[done]
        noise_scale = jnp.float32(self.tau) * (1.0 - done.astype(jnp.float32) / self.steps)
        token_temperature = None
        if tuple(self.temperature) != (1.0, 1.0):
            token_temperature = linear_in_step(*self.temperature, done - 1, self.steps)
        return confidence_update(
            key,
            z_BxL,
            log_probs_BxLxV,
            t,
            s,
            mask_prob_fn=mask_prob_fn,
            mask_id=mask_id,
            noise_scale=noise_scale,
            keep=keep,
            token_temperature=token_temperature,
        )
