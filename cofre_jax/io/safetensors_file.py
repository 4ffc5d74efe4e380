"""`.safetensors` files read without the safetensors package."""

from __future__ import annotations

import json

import numpy as np

from cofre_jax.io.arrays import decode_array
from cofre_jax.io.errors import TorchCheckpointError

_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": "bfloat16",
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def load_safetensors(path: str) -> dict[str, np.ndarray]:
    """The safetensors layout: u64 header length, a JSON header of {name: {dtype, shape,
    data_offsets}}, then the data. Parsed here so the format needs no extra package."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise TorchCheckpointError(f"{path}: too short to be a safetensors file")
    header_len = int.from_bytes(blob[:8], "little")
    try:
        header = json.loads(blob[8 : 8 + header_len])
    except ValueError as e:
        raise TorchCheckpointError(f"{path}: unreadable safetensors header ({e})") from None
    data = memoryview(blob)[8 + header_len :]
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in _SAFETENSORS_DTYPES:
            raise TorchCheckpointError(f"{path}: tensor {name} has unsupported {info['dtype']}")
        begin, end = info["data_offsets"]
        if not 0 <= begin <= end <= len(data):
            raise TorchCheckpointError(f"{path}: tensor {name} lies outside the file")
        flat = decode_array(bytes(data[begin:end]), _SAFETENSORS_DTYPES[info["dtype"]], path)
        shape = tuple(info["shape"])
        if flat.size != int(np.prod(shape)):
            raise TorchCheckpointError(f"{path}: tensor {name} bytes do not match {shape}")
        tensors[name] = flat.reshape(shape).copy()
    return tensors
