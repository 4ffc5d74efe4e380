"""The legacy (pre-1.6, non-zip) `torch.save` format, read without torch, for weight files
older than the zip format such as pytorch-fid's `pt_inception-2015-12-05-6726825d.pth`
(published in 2019). `cofre_jax.io.load_checkpoint` reads the zip format only; this
reader shares its tensor rebuilding and its allow-list spirit: only tensors, storages
and plain containers are unpickled, nothing is imported.

Layout (torch/serialization.py `_legacy_save`): pickles of the magic number, the
protocol version (1001) and a sys-info dict; the object's pickle, whose storages are
persistent ids ("storage", storage type, key, location, numel, view metadata); a pickle
of the sorted storage keys; then for each key an int64 element count and the raw bytes.
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
from typing import Any

import numpy as np

from cofre_jax.io.arrays import decode_array
from cofre_jax.io.errors import TorchCheckpointError
from cofre_jax.io.torch_zip import _STORAGE_DTYPES, _latin1_encode, _rebuild_tensor

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001


class _Storage:
    def __init__(self, key: str, dtype: Any, numel: int):
        self.key, self.dtype, self.numel = key, dtype, numel


class _LazyTensor:
    """A tensor whose storage bytes come after the pickle: rebuilt once they are read."""

    def __init__(self, storage: _Storage, offset: int, size, stride, *_unused: Any):
        self.storage, self.args = storage, (offset, size, stride)


_ALLOWED = {
    ("torch._utils", "_rebuild_tensor_v2"): _LazyTensor,
    ("torch._utils", "_rebuild_tensor"): _LazyTensor,
    ("torch._utils", "_rebuild_parameter"): lambda data, *_: data,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): _latin1_encode,
}


class _Unpickler(pickle.Unpickler):
    def __init__(self, stream, storages: dict[str, _Storage] | None):
        super().__init__(stream)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if self._storages is not None:
            if (module, name) in _ALLOWED:
                return _ALLOWED[(module, name)]
            if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
                return name
        raise TorchCheckpointError(f"refusing to unpickle {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage:
        if self._storages is None or not (isinstance(pid, tuple) and len(pid) == 6):
            raise TorchCheckpointError(f"refusing to unpickle persistent id {pid!r}")
        kind, storage_type, key, _location, numel, view = pid
        if kind != "storage" or storage_type not in _STORAGE_DTYPES or view is not None:
            raise TorchCheckpointError(f"unsupported storage {pid!r}")
        key = str(key)
        if key not in self._storages:
            self._storages[key] = _Storage(key, _STORAGE_DTYPES[storage_type], int(numel))
        return self._storages[key]


def _materialise(obj: Any, data: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, _LazyTensor):
        return _rebuild_tensor(data[obj.storage.key], *obj.args)
    if isinstance(obj, dict):
        kind = collections.OrderedDict if isinstance(obj, collections.OrderedDict) else dict
        return kind((k, _materialise(v, data)) for k, v in obj.items())
    if type(obj) in (list, tuple):
        return type(obj)(_materialise(v, data) for v in obj)
    return obj


def is_legacy_torch_file(path: str) -> bool:
    """Whether the file starts with the legacy format's pickled magic number."""
    with open(path, "rb") as f:
        head = f.read(64)
    try:
        return _Unpickler(io.BytesIO(head), None).load() == MAGIC_NUMBER
    except Exception:
        return False


def load_legacy_torch(path: str) -> Any:
    """The object a legacy `torch.save` file holds, every tensor a numpy array."""
    with open(path, "rb") as f:
        stream = io.BytesIO(f.read())
    try:
        header = [_Unpickler(stream, None).load() for _ in range(3)]
    except Exception as e:
        raise TorchCheckpointError(f"{path}: not a legacy torch.save file ({e})") from e
    magic, protocol, sys_info = header
    if magic != MAGIC_NUMBER or protocol != PROTOCOL_VERSION:
        raise TorchCheckpointError(f"{path}: not a legacy torch.save file")
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise TorchCheckpointError(f"{path}: big-endian files are not supported")
    storages: dict[str, _Storage] = {}
    try:
        obj = _Unpickler(stream, storages).load()
        keys = _Unpickler(stream, None).load()
    except (TypeError, pickle.UnpicklingError, EOFError) as e:
        raise TorchCheckpointError(f"{path}: cannot rebuild the pickled object ({e})") from e
    data: dict[str, np.ndarray] = {}
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise TorchCheckpointError(f"{path}: storage {key!r} is not referenced")
        (numel,) = struct.unpack("<q", stream.read(8) or b"\0" * 8)
        itemsize = 2 if storage.dtype == "bfloat16" else np.dtype(storage.dtype).itemsize
        raw = stream.read(numel * itemsize)
        if numel != storage.numel or len(raw) != numel * itemsize:
            raise TorchCheckpointError(f"{path}: storage {key} is truncated or mis-sized")
        data[storage.key] = decode_array(raw, storage.dtype, f"{path}:{key}")
    missing = storages.keys() - data.keys()
    if missing:
        raise TorchCheckpointError(f"{path}: storages {sorted(missing)} have no data")
    return _materialise(obj, data)
