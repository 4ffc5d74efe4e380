"""Reads public MDLM PyTorch checkpoints into our DiT parameters, without torch.

Three steps, each a pure function of its input:

1. `cofre_jax.io.load_checkpoint(path)`: the object a `torch.save` zip (.ckpt/.pt/.bin)
   or a `.safetensors` file holds, every tensor turned into a numpy array, read by a
   restricted unpickler that imports nothing (cofre_jax/io/torch_zip.py).
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

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import numpy as np

from cofre_jax.config.typed import ModelConfig
from cofre_jax.io import TorchCheckpointError, load_checkpoint
from cofre_jax.io.layout import check_state_dict
from cofre_jax.models.layers import FREQUENCY_EMBEDDING_SIZE

# Buffers MDLM's DIT keeps in its state dict that we recompute instead of loading.
IGNORED_KEYS = ("rotary_emb.inv_freq",)


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
    check_state_dict(state_dict, layout, ignored=IGNORED_KEYS, what="the MDLM model config")
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
