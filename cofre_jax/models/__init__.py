"""Denoiser networks and parameter accounting.

`build_model(config.model)` is the one place that maps `model.kind` to a module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax

from cofre_jax.config.choices import MODEL_KINDS
from cofre_jax.config.typed import FixedPointConfig, ModelConfig
from cofre_jax.fixed_point import SolverStats
from cofre_jax.models.dit import DiT
from cofre_jax.models.fp_mdlm import FPMDLM


def build_model(config: ModelConfig, fixed_point: FixedPointConfig | None = None) -> nn.Module:
    if config.kind == "mdlm":
        return DiT(config)
    if config.kind == "fp_mdlm":
        if fixed_point is None:
            raise ValueError("model.kind 'fp_mdlm' needs the fixed_point config section")
        return FPMDLM(config, fixed_point)
    raise ValueError(f"unknown model.kind {config.kind!r}; valid kinds: {MODEL_KINDS}")


class DenoiserOutput(NamedTuple):
    """What the training objectives need from one denoiser call."""

    logits_BxLxV: jax.Array
    hidden_BxLxD: jax.Array  # final pre-logit hidden states (after the post stack)
    stats: SolverStats | None  # fixed-point solver stats (None for the MDLM stack)


def make_forward(model: nn.Module) -> Callable[..., DenoiserOutput]:
    """forward(params, z_BxL, sigma_B, *, train, rngs=None) -> DenoiserOutput."""

    def forward(params: Any, z_BxL, sigma_B, *, train: bool, rngs=None) -> DenoiserOutput:
        variables = {"params": params}
        if isinstance(model, FPMDLM):
            logits, aux = model.apply(
                variables, z_BxL, sigma_B, train=train, rngs=rngs, return_aux=True
            )
            return DenoiserOutput(logits, aux["hidden"], aux["stats"])
        logits, hidden = model.apply(
            variables, z_BxL, sigma_B, train=train, rngs=rngs, return_hidden=True
        )
        return DenoiserOutput(logits, hidden, None)

    return forward


def _leaf_size(leaf) -> int:
    # Works for arrays and for the ShapeDtypeStructs of jax.eval_shape alike.
    return math.prod(leaf.shape)


def _unwrap(params):
    if isinstance(params, dict | nn.FrozenDict) and set(params) == {"params"}:
        return params["params"]
    return params


def count_params(params) -> int:
    return sum(_leaf_size(leaf) for leaf in jax.tree_util.tree_leaves(_unwrap(params)))


def param_groups(params) -> dict[str, int]:
    """Parameter count per top-level component, numbered copies merged
    (`blocks_0`..`blocks_11` -> `blocks`), in the order of the params tree."""
    groups: dict[str, int] = {}
    for name, subtree in _unwrap(params).items():
        group = re.sub(r"_\d+$", "", name)
        groups[group] = groups.get(group, 0) + count_params(subtree)
    return groups


__all__ = [
    "DiT",
    "FPMDLM",
    "MODEL_KINDS",
    "DenoiserOutput",
    "build_model",
    "count_params",
    "make_forward",
    "param_groups",
]
