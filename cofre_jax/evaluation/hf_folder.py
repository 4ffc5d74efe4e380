"""Weights of a Hugging Face model folder, read without torch or transformers."""

from __future__ import annotations

import json
import os

import numpy as np

from cofre_jax.io import load_checkpoint


class ScorerLoadError(ValueError):
    """A scorer LM folder or file is missing, unreadable or of an unsupported kind."""


def read_hf_config(folder: str) -> dict:
    path = os.path.join(folder, "config.json")
    if not os.path.isfile(path):
        raise ScorerLoadError(f"{folder}: no config.json (not a Hugging Face model folder)")
    with open(path) as f:
        return json.load(f)


def _weight_files(folder: str) -> list[str]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        path = os.path.join(folder, index)
        if os.path.isfile(path):
            with open(path) as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            return [os.path.join(folder, s) for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        path = os.path.join(folder, single)
        if os.path.isfile(path):
            return [path]
    raise ScorerLoadError(
        f"{folder}: no model.safetensors, pytorch_model.bin or a sharded index of either"
    )


def read_hf_weights(folder: str) -> dict[str, np.ndarray]:
    """{name: float array} from every weight file of the folder (safetensors first)."""
    weights: dict[str, np.ndarray] = {}
    for path in _weight_files(folder):
        loaded = load_checkpoint(path)
        if not isinstance(loaded, dict):
            raise ScorerLoadError(f"{path}: expected a state dict, got {type(loaded).__name__}")
        weights.update({k: np.asarray(v) for k, v in loaded.items()})
    return weights
