"""Reads public MDLM PyTorch checkpoints into our DiT parameters, without torch.

Three steps, each a pure function of its input:

1. `load_checkpoint(path)`: the object a `torch.save` zip (.ckpt/.pt/.bin) or a
   `.safetensors` file holds, every tensor turned into a numpy array. Pickles are read
   by a restricted unpickler that imports nothing: only the names needed to rebuild
   tensors and plain containers are allowed, plus the OmegaConf classes a Lightning
   checkpoint pickles its `hyper_parameters` with (`DictConfig`, `ListConfig`, value
   nodes, metadata), which come back as plain dicts, lists and values without importing
   omegaconf. Anything else is refused (or, on request, replaced by an inert
   `OpaqueObject`).
   `check_mdlm_hyperparameters(raw, config)` compares the checkpoint's MDLM
   hyper-parameters (`hyper_parameters["config"]`) with the model config.
2. `select_state_dict(raw)`: the backbone's flat state dict inside a Lightning
   checkpoint (`state_dict`, keys prefixed `backbone.`), or its EMA weights.
3. `mdlm_params_from_state_dict(state_dict, config)`: our `DiT` params pytree, after
   checking every key and shape (torch Linear weights (out, in) become Flax kernels
   (in, out); LayerNorm `weight` becomes `scale`).

How MDLM stores EMA: its Lightning module saves `checkpoint["ema"] = {"decay",
"num_updates", "shadow_params"}`, where `shadow_params` is a bare list of tensors in the
order of `chain(backbone.parameters(), noise.parameters())` (the log-linear noise has no
parameters). Names are therefore recovered from MDLM's module registration order, which
`mdlm_parameter_names(config)` spells out.

Letters: V vocabulary, D hidden, C cond dim, F frequency embedding width, M MLP width.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from cofre_jax.config.typed import ModelConfig
from cofre_jax.models.layers import FREQUENCY_EMBEDDING_SIZE

# Buffers MDLM's DIT keeps in its state dict that we recompute instead of loading.
IGNORED_KEYS = ("rotary_emb.inv_freq",)

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


class TorchCheckpointError(ValueError):
    """A checkpoint file cannot be read safely, or does not fit the configured model."""


# ---------------------------------------------------------------------------- arrays


def _decode(raw: bytes, dtype: Any, path: str) -> np.ndarray:
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
            self._storages[key] = _decode(raw, _STORAGE_DTYPES[storage_type], member)
        return self._storages[key]


def _load_torch_zip(path: str, opaque: bool) -> Any:
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


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
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
        flat = _decode(bytes(data[begin:end]), _SAFETENSORS_DTYPES[info["dtype"]], path)
        shape = tuple(info["shape"])
        if flat.size != int(np.prod(shape)):
            raise TorchCheckpointError(f"{path}: tensor {name} bytes do not match {shape}")
        tensors[name] = flat.reshape(shape).copy()
    return tensors


def load_checkpoint(path: str, *, opaque_unknown_globals: bool = False) -> Any:
    """Everything the file holds, tensors as numpy arrays (bfloat16 widened to float32).

    `.safetensors` files give a flat {name: array}; anything else is read as a
    `torch.save` zip through the restricted unpickler."""
    path = os.fspath(path)
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    return _load_torch_zip(path, opaque_unknown_globals)


# ---------------------------------------------------------------------------- MDLM layout


def _mdlm_layout(config: ModelConfig) -> list[tuple[str, tuple[str, ...], tuple[int, ...]]]:
    """(MDLM key, our param path, torch shape) in MDLM's `DIT.parameters()` order."""
    V, D, C, F = config.vocab_size, config.hidden_size, config.cond_dim, FREQUENCY_EMBEDDING_SIZE
    M = config.mlp_ratio * D

    def linear(key, path, n_out, n_in, bias=True):
        rows = [(f"{key}.weight", (*path, "kernel"), (n_out, n_in))]
        return rows + ([(f"{key}.bias", (*path, "bias"), (n_out,))] if bias else [])

    layout = [("vocab_embed.embedding", ("vocab_embed", "embedding"), (V, D))]
    layout += linear("sigma_map.mlp.0", ("sigma_map", "mlp_0"), C, F)
    layout += linear("sigma_map.mlp.2", ("sigma_map", "mlp_2"), C, C)
    for i in range(config.num_layers):
        key, path = f"blocks.{i}", (f"blocks_{i}",)
        layout.append((f"{key}.norm1.weight", (*path, "norm1", "scale"), (D,)))
        layout += linear(f"{key}.attn_qkv", (*path, "attn_qkv"), 3 * D, D, bias=False)
        layout += linear(f"{key}.attn_out", (*path, "attn_out"), D, D, bias=False)
        layout.append((f"{key}.norm2.weight", (*path, "norm2", "scale"), (D,)))
        layout += linear(f"{key}.mlp.0", (*path, "mlp_0"), M, D)
        layout += linear(f"{key}.mlp.2", (*path, "mlp_2"), D, M)
        layout += linear(f"{key}.adaLN_modulation", (*path, "adaLN_modulation"), 6 * D, C)
    path = ("output_layer",)
    layout.append(("output_layer.norm_final.weight", (*path, "norm_final", "scale"), (D,)))
    layout += linear("output_layer.linear", (*path, "linear"), V, D)
    layout += linear("output_layer.adaLN_modulation", (*path, "adaLN_modulation"), 2 * D, C)
    return layout


def mdlm_parameter_names(config: ModelConfig) -> list[str]:
    """MDLM state-dict keys of the trainable parameters, in `DIT.parameters()` order
    (the order of EMA `shadow_params`)."""
    return [key for key, _, _ in _mdlm_layout(config)]


# MDLM's Hydra config (`hyper_parameters["config"]`) -> what our config must say.
# `model.*` are the DIT's dimensions; the rest are choices our import assumes.
_MDLM_HPARAMS: tuple[tuple[str, str, Any], ...] = (
    ("model.hidden_size", "model.hidden_size", lambda c: c.hidden_size),
    ("model.n_blocks", "model.num_layers", lambda c: c.num_layers),
    ("model.n_heads", "model.num_heads", lambda c: c.num_heads),
    ("model.cond_dim", "model.cond_dim", lambda c: c.cond_dim),
    ("time_conditioning", "model.time_conditioning", lambda c: c.time_conditioning),
    ("parameterization", "the SUBS parameterization", lambda c: "subs"),
    ("backbone", "the DiT backbone", lambda c: "dit"),
)


def mdlm_hyperparameters(raw: Any) -> Mapping[str, Any] | None:
    """MDLM's config inside a Lightning checkpoint (`hyper_parameters["config"]`, or the
    hyper-parameters themselves when they hold no `config`); None if there is none."""
    hparams = raw.get("hyper_parameters") if isinstance(raw, Mapping) else None
    if not isinstance(hparams, Mapping):
        return None
    config = hparams.get("config", hparams)
    return config if isinstance(config, Mapping) else None


def check_mdlm_hyperparameters(raw: Any, config: ModelConfig) -> None:
    """Raises one TorchCheckpointError line naming every hyper-parameter of the
    checkpoint's MDLM config that disagrees with `config`; keys it lacks are skipped."""
    hparams = mdlm_hyperparameters(raw)
    if hparams is None:
        return
    problems = []
    for dotted, ours, expected in _MDLM_HPARAMS:
        node: Any = hparams
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        want = expected(config)
        if node is None or node == want:
            continue
        problems.append(f"{dotted} = {node!r} (config: {ours} = {want!r})")
    if problems:
        raise TorchCheckpointError(
            "checkpoint hyper-parameters disagree with the model config: " + "; ".join(problems)
        )


def select_state_dict(
    raw: Any, prefix: str = "backbone.", *, ema_parameter_names: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """The model's flat state dict inside a loaded checkpoint.

    A Lightning checkpoint keeps it under `state_dict` with keys prefixed `prefix`
    (other modules' keys are dropped); a mapping without that prefix on any key is taken
    as a bare model state dict. With `ema_parameter_names` (see `mdlm_parameter_names`),
    the EMA weights `raw["ema"]["shadow_params"]` are returned under those names instead.
    """
    if ema_parameter_names is not None:
        ema = raw.get("ema") if isinstance(raw, Mapping) else None
        shadow = ema.get("shadow_params") if isinstance(ema, Mapping) else None
        if not isinstance(shadow, (list, tuple)):
            raise TorchCheckpointError("checkpoint has no ema.shadow_params list")
        if len(shadow) < len(ema_parameter_names):
            raise TorchCheckpointError(
                f"ema.shadow_params holds {len(shadow)} tensors, the model has "
                f"{len(ema_parameter_names)} parameters"
            )
        # Extra trailing entries belong to modules registered after the backbone.
        selected = dict(zip(ema_parameter_names, shadow))
    else:
        if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
            raw = raw["state_dict"]
        if not isinstance(raw, Mapping):
            raise TorchCheckpointError(f"expected a state dict mapping, got {type(raw).__name__}")
        selected = dict(raw)
        if prefix and any(str(k).startswith(prefix) for k in raw):
            selected = {k[len(prefix) :]: v for k, v in raw.items() if str(k).startswith(prefix)}
    not_arrays = [k for k, v in selected.items() if not isinstance(v, np.ndarray)]
    if not_arrays:
        raise TorchCheckpointError(f"state dict entry {not_arrays[0]!r} is not a tensor")
    return selected


def mdlm_params_from_state_dict(
    state_dict: Mapping[str, np.ndarray], config: ModelConfig
) -> dict[str, Any]:
    """MDLM DIT state dict -> our `DiT(config)` params (the `params` collection), in
    `config.param_dtype`. Every key and shape is checked before anything is converted."""
    layout = _mdlm_layout(config)
    expected = {key for key, _, _ in layout}
    missing = [key for key, _, _ in layout if key not in state_dict]
    unexpected = [k for k in state_dict if k not in expected and k not in IGNORED_KEYS]
    wrong = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} {state_dict[key].dtype}, "
        f"model expects {shape} float"
        for key, _, shape in layout
        if key in state_dict
        and (
            tuple(state_dict[key].shape) != shape
            or not np.issubdtype(state_dict[key].dtype, np.floating)
        )
    ]
    if missing or unexpected or wrong:
        problems = [
            f"{label} ({len(keys)}), first: {keys[0]}"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("bad", wrong))
            if keys
        ]
        raise TorchCheckpointError(
            "state dict does not fit the MDLM model config: " + "; ".join(problems)
        )
    dtype = jnp.dtype(config.param_dtype)
    params: dict[str, Any] = {}
    for key, path, _ in layout:
        value = state_dict[key]
        if path[-1] == "kernel":
            value = value.T  # torch Linear weight is (out, in), a Flax kernel (in, out)
        node = params
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = jnp.asarray(value, dtype=dtype)
    return params


def load_mdlm_params(
    path: str,
    config: ModelConfig,
    *,
    use_ema: bool = False,
    prefix: str = "backbone.",
    opaque_unknown_globals: bool = False,
) -> dict[str, Any]:
    """A public MDLM checkpoint file -> our `DiT(config)` params, optionally its EMA.

    A Lightning `.ckpt` pickles its OmegaConf hyper-parameters, which are read as plain
    dicts and checked against `config` first (`check_mdlm_hyperparameters`). Objects of
    any other class are refused unless `opaque_unknown_globals=True` (they then load as
    inert `OpaqueObject`s and are never used)."""
    raw = load_checkpoint(path, opaque_unknown_globals=opaque_unknown_globals)
    check_mdlm_hyperparameters(raw, config)
    names = mdlm_parameter_names(config) if use_ema else None
    return mdlm_params_from_state_dict(
        select_state_dict(raw, prefix, ema_parameter_names=names), config
    )


def load_torch_state_dict(path: str, prefix: str = "backbone.") -> dict[str, np.ndarray]:
    """The flat model state dict of a checkpoint file (see `select_state_dict`)."""
    return select_state_dict(load_checkpoint(path), prefix)
