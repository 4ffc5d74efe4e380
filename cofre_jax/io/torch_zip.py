"""`torch.save` zip files read without torch, by a restricted unpickler.

Pickles are read by an unpickler that imports nothing: only the names needed to rebuild
tensors and plain containers are allowed, plus the OmegaConf classes a Lightning
checkpoint pickles its `hyper_parameters` with (`DictConfig`, `ListConfig`, value nodes,
metadata), which come back as plain dicts, lists and values without importing omegaconf.
Anything else is refused (or, on request, replaced by an inert `OpaqueObject`).
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cofre_jax.io.arrays import decode_array
from cofre_jax.io.errors import TorchCheckpointError

# torch's legacy typed storage classes name the element type of the raw bytes.
_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16",
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "UntypedStorage": np.uint8,
}


# ---------------------------------------------------------------------------- tensors


def _rebuild_tensor(
    flat: np.ndarray, offset: int, size: Sequence[int], stride: Sequence[int], *_unused: Any
) -> np.ndarray:
    """A tensor view (offset, size, stride in elements) of a storage, copied out.

    The view's extent is checked first: `as_strided` trusts its arguments and would read
    past the buffer for a malformed file."""
    size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(n < 0 for n in size) or any(s < 0 for s in stride):
        raise TorchCheckpointError(f"malformed tensor: size {size}, stride {stride}")
    if 0 in size:
        return np.zeros(size, dtype=flat.dtype)
    last = int(offset) + sum((n - 1) * s for n, s in zip(size, stride))
    if offset < 0 or last >= flat.size:
        raise TorchCheckpointError(
            f"tensor of size {size}, stride {stride}, offset {offset} overruns its "
            f"storage of {flat.size} elements"
        )
    itemsize = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[int(offset) :], shape=size, strides=tuple(s * itemsize for s in stride)
    )
    return np.array(view)


def _rebuild_parameter(data: np.ndarray, *_unused: Any) -> np.ndarray:
    return data


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    """Protocol-2 pickles spell bytes as `_codecs.encode(text, "latin1")`; only that
    codec is let through."""
    if encoding != "latin1":
        raise TorchCheckpointError(f"refusing to unpickle _codecs.encode with {encoding!r}")
    return text.encode("latin1")


# ---------------------------------------------------------------------------- unpickling


class OpaqueObject:
    """Inert stand-in for an object whose class we refuse to import (a Lightning config,
    a callback's state): it keeps what the pickle handed it and runs no code."""

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = object.__new__(cls)
        obj.args, obj.state, obj.items, obj.elements = args, None, {}, []
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

    def __call__(self, *args: Any, **kwargs: Any) -> OpaqueObject:
        return _opaque_class(f"{self.qualname}(...)")(*args)

    def __repr__(self) -> str:
        return f"OpaqueObject({self.qualname})"


def _opaque_class(qualname: str) -> type:
    return type("OpaqueObject", (OpaqueObject,), {"qualname": qualname})


class _OmegaConfObject:
    """Inert stand-in for an OmegaConf object: the pickle builds it with no arguments and
    hands it its `__dict__` (`_content` for containers, `_val` for value nodes), which
    `_plain` turns into plain Python values. Metadata and parent links are dropped."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def content(self, field: str) -> Any:
        if isinstance(self.state, tuple) and len(self.state) == 2:  # (dict, slots) form
            state = self.state[0]
        else:
            state = self.state
        return state.get(field) if isinstance(state, dict) else None


class _OmegaConfContainer(_OmegaConfObject):
    """DictConfig / ListConfig: `_content` is a dict or list of nodes, or None or a
    string (a missing value "???" or an unresolved "${interpolation}")."""


class _OmegaConfNode(_OmegaConfObject):
    """AnyNode, StringNode, IntegerNode, ...: `_val` is the plain value."""


def _type_marker(qualname: str) -> str:
    """OmegaConf metadata names types (`ref_type`, `object_type`, `key_type`); we keep
    only the name, never the type."""
    return f"<type {qualname}>"


def _inert_defaultdict(*args: Any) -> dict:
    """OmegaConf's metadata holds `resolver_cache = defaultdict(dict)`; a plain dict
    stands in (the factory argument is a type marker and is not called)."""
    return {}


_OMEGACONF_GLOBALS: dict[tuple[str, str], Any] = {
    ("omegaconf.dictconfig", "DictConfig"): _OmegaConfContainer,
    ("omegaconf.listconfig", "ListConfig"): _OmegaConfContainer,
    **{
        ("omegaconf.nodes", name): _OmegaConfNode
        for name in (
            "AnyNode",
            "StringNode",
            "IntegerNode",
            "FloatNode",
            "BooleanNode",
            "BytesNode",
            "PathNode",
            "ValueNode",
        )
    },
    ("omegaconf.base", "ContainerMetadata"): _OmegaConfObject,
    ("omegaconf.base", "Metadata"): _OmegaConfObject,
    ("typing", "Any"): _type_marker("typing.Any"),
    ("collections", "defaultdict"): _inert_defaultdict,
    **{
        (module, name): _type_marker(name)
        for module in ("builtins", "__builtin__")
        for name in ("dict", "list", "tuple", "int", "long", "float", "str", "bool", "bytes")
    },
}


def _plain(obj: Any) -> Any:
    """The loaded object with every OmegaConf stand-in rebuilt as plain values."""
    if isinstance(obj, _OmegaConfContainer):
        return _plain(obj.content("_content"))
    if isinstance(obj, _OmegaConfNode):
        return _plain(obj.content("_val"))
    if isinstance(obj, _OmegaConfObject):
        return None
    if isinstance(obj, Mapping):
        plain = {k: _plain(v) for k, v in obj.items()}
        return collections.OrderedDict(plain) if isinstance(obj, collections.OrderedDict) else plain
    if type(obj) in (list, tuple):
        return type(obj)(_plain(v) for v in obj)
    return obj


_ALLOWED_GLOBALS = {
    **_OMEGACONF_GLOBALS,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals; storages come from the zip via persistent ids
    ("storage", storage_type, key, location, numel)."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str, opaque: bool):
        super().__init__(io.BytesIO(data))
        self._archive, self._prefix, self._opaque = archive, prefix, opaque
        self._storages: dict[str, np.ndarray] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        if module in ("torch", "torch.storage") and name in _STORAGE_DTYPES:
            return name  # a marker read back in persistent_load
        if self._opaque:
            return _opaque_class(f"{module}.{name}")
        raise TorchCheckpointError(
            f"refusing to unpickle {module}.{name}: only tensors and plain containers are "
            "allowed (pass opaque_unknown_globals=True to keep such objects as inert "
            "OpaqueObject stand-ins)"
        )

    def persistent_load(self, pid: Any) -> np.ndarray:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchCheckpointError(f"refusing to unpickle persistent id {pid!r}")
        _, storage_type, key, _location, _numel = pid
        if storage_type not in _STORAGE_DTYPES:
            raise TorchCheckpointError(f"refusing to unpickle storage type {storage_type!r}")
        key = str(key)
        if key not in self._storages:
            member = f"{self._prefix}data/{key}"
            try:
                raw = self._archive.read(member)
            except KeyError:
                raise TorchCheckpointError(f"storage {member} is not in the archive") from None
            self._storages[key] = decode_array(raw, _STORAGE_DTYPES[storage_type], member)
        return self._storages[key]


def load_torch_zip(path: str, opaque: bool = False) -> Any:
    """The object a `torch.save` zip holds, every tensor a numpy array (see module doc)."""
    if not zipfile.is_zipfile(path):
        raise TorchCheckpointError(
            f"{path} is not a zip-format torch.save file (the legacy pre-1.6 format is not "
            "supported: re-save it with a current torch)"
        )
    with zipfile.ZipFile(path) as archive:
        pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise TorchCheckpointError(f"{path}: expected one <name>/data.pkl, found {pickles}")
        prefix = pickles[0][: -len("data.pkl")]
        if f"{prefix}byteorder" in archive.namelist():
            order = archive.read(f"{prefix}byteorder").decode().strip()
            if order != "little":
                raise TorchCheckpointError(f"{path}: byte order {order!r} is not supported")
        unpickler = _RestrictedUnpickler(archive.read(pickles[0]), archive, prefix, opaque)
        try:
            loaded = unpickler.load()
        except (TypeError, pickle.UnpicklingError) as e:
            # E.g. a type marker of the OmegaConf allow-list called as a constructor.
            raise TorchCheckpointError(f"{path}: cannot rebuild the pickled object ({e})") from e
        return _plain(loaded)
