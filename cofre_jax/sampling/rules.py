"""The reveal rules by name: what a config's choice of rule builds (a `RevealFn`).

    ancestral   `reveal.ancestral_update`, MDLM's (time-driven; text's rule)
    confidence  `halton.AnnealedConfidence`, MaskGIT's confidence with annealed Gumbel
                noise and the arccos counts (step-indexed)
    halton      `halton.HaltonReveal`, the Halton order and the arccos counts over an
                H x W grid (step-indexed)

`_REVEAL_RULES` matches the config's REVEAL_RULES key for key (tests/test_registries.py).
"""

from __future__ import annotations

from collections.abc import Callable

from cofre_jax.config.choices import REVEAL_RULES
from cofre_jax.sampling.halton import AnnealedConfidence, HaltonReveal
from cofre_jax.sampling.reveal import RevealFn, ancestral_update


def _ancestral(*, steps, grid, tau, temperature) -> RevealFn:
    del steps, grid, tau, temperature
    return ancestral_update


def _confidence(*, steps, grid, tau, temperature) -> RevealFn:
    del grid
    return AnnealedConfidence(steps=steps, tau=tau, temperature=temperature)


def _halton(*, steps, grid, tau, temperature) -> RevealFn:
    del tau
    if grid is None:
        raise ValueError("the halton rule needs the token grid (height, width)")
    return HaltonReveal(height=grid[0], width=grid[1], steps=steps, temperature=temperature)


_REVEAL_RULES: dict[str, Callable[..., RevealFn]] = {
    "ancestral": _ancestral,
    "confidence": _confidence,
    "halton": _halton,
}


def make_reveal_fn(
    rule: str,
    *,
    steps: int,
    grid: tuple[int, int] | None = None,
    tau: float = 4.5,
    temperature: tuple[float, float] = (1.0, 1.0),
) -> RevealFn:
    """The `RevealFn` of a rule name for a sampler of `steps` steps. grid = (H, W) of
    the token grid (the halton rule only); tau the confidence noise scale (confidence
    only); temperature the token temperature at the first and last step (confidence,
    halton). Equal arguments give equal (same-hash) rules, so compiles are reused."""
    if rule not in _REVEAL_RULES:
        raise ValueError(f"unknown reveal rule {rule!r}; valid: {REVEAL_RULES}")
    return _REVEAL_RULES[rule](steps=steps, grid=grid, tau=tau, temperature=temperature)
