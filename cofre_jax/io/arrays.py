"""Raw little-endian bytes of a checkpoint file as numpy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from cofre_jax.io.errors import TorchCheckpointError


def decode_array(raw: bytes, dtype: Any, path: str) -> np.ndarray:
    """Little-endian bytes -> 1-D array. bfloat16 is the top half of a float32, so a
    16-bit left shift widens it exactly."""
    if dtype == "bfloat16":
        if len(raw) % 2:
            raise TorchCheckpointError(f"{path}: bfloat16 data has an odd byte count")
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32)
    itemsize = np.dtype(dtype).itemsize
    if len(raw) % itemsize:
        raise TorchCheckpointError(f"{path}: {len(raw)} bytes is not a whole number of {dtype}")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
