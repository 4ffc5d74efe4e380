"""Readers of weight files written elsewhere, without torch: `torch.save` zips through a
restricted unpickler (cofre_jax/io/torch_zip.py) and `.safetensors` files
(cofre_jax/io/safetensors_file.py). Model layouts (which tensor is which parameter) live
with their users: cofre_jax/convert (MDLM) and cofre_jax/evaluation (scorer LMs)."""

from __future__ import annotations

import os
from typing import Any

from cofre_jax.io.errors import TorchCheckpointError
from cofre_jax.io.safetensors_file import load_safetensors
from cofre_jax.io.torch_zip import OpaqueObject, load_torch_zip


def load_checkpoint(path: str, *, opaque_unknown_globals: bool = False) -> Any:
    """Everything the file holds, tensors as numpy arrays (bfloat16 widened to float32).

    `.safetensors` files give a flat {name: array}; anything else is read as a
    `torch.save` zip through the restricted unpickler."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return load_safetensors(path)
    return load_torch_zip(path, opaque_unknown_globals)


__all__ = [
    "OpaqueObject",
    "TorchCheckpointError",
    "load_checkpoint",
    "load_safetensors",
    "load_torch_zip",
]
