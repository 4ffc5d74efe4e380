"""Denoiser networks and parameter accounting.

`MODELS` is the one place that maps `model.kind` to a module.
"""

from __future__ import annotations

import math
import re

import flax.linen as nn
import jax

from cofre_jax.config.choices import MODEL_KINDS
from cofre_jax.config.typed import FixedPointConfig, ModelConfig
from cofre_jax.models.dit import DiT
from cofre_jax.models.fp_mdlm import FPMDLM
from cofre_jax.models.maskgit import FPMaskGIT, MaskGIT
from cofre_jax.models.outputs import DenoiserOutput

# One entry per cofre_jax.config.choices.MODEL_KINDS (tests/test_registries.py). Every
# model is called as model(tokens_BxL, sigma_B, condition, *, train, ...) and returns a
# DenoiserOutput; its class says whether it solves a fixed point and what a call costs.
MODELS: dict[str, type[nn.Module]] = {
    "mdlm": DiT,
    "fp_mdlm": FPMDLM,
    "maskgit": MaskGIT,
    "fp_maskgit": FPMaskGIT,
}


def model_class(config: ModelConfig) -> type[nn.Module]:
    if config.kind not in MODELS:
        raise ValueError(f"unknown model.kind {config.kind!r}; valid kinds: {MODEL_KINDS}")
    return MODELS[config.kind]


def build_model(config: ModelConfig, fixed_point: FixedPointConfig | None = None) -> nn.Module:
    cls = model_class(config)
    if not cls.is_fixed_point:
        return cls(config)
    if fixed_point is None:
        raise ValueError(f"model.kind {config.kind!r} needs the fixed_point config section")
    return cls(config, fixed_point)


def block_cost(config: ModelConfig) -> tuple[int, int]:
    """(base, per_iteration): one call costs base + N * per_iteration block passes."""
    return model_class(config).block_cost(config)


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
    "FPMDLM",
    "MODELS",
    "MODEL_KINDS",
    "DenoiserOutput",
    "DiT",
    "FPMaskGIT",
    "MaskGIT",
    "block_cost",
    "build_model",
    "count_params",
    "model_class",
    "param_groups",
]
