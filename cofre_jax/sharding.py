"""Device mesh and partition rules, declared once.

Axes: "data" (pure data parallelism), "fsdp" (batch *and* parameters split),
"tensor" (attention heads / MLP width). The batch is split over ("data", "fsdp").
Parameters follow `PARAM_RULES` (first regex match on the parameter path wins);
an axis that does not divide its dimension is dropped for that tensor (replicated
there) rather than failing, and `describe` shows the resulting plan.

Letters: B batch, L length.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from cofre_jax.config.typed import MeshConfig

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# (path regex, spec per dimension of the kernel). Dense kernels are (in, out).
# Column-parallel layers split their output over "tensor", row-parallel ones their
# input, so one attention/MLP block needs a single all-reduce (Megatron layout).
PARAM_RULES: tuple[tuple[str, tuple[str | None, ...]], ...] = (
    (r"vocab_embed/embedding$", (None, "fsdp")),
    (r"(attn_qkv|mlp_0|fc1|injection)/kernel$", ("fsdp", "tensor")),
    (r"(attn_out|mlp_2|fc2)/kernel$", ("tensor", "fsdp")),
    (r"output_layer/linear/kernel$", ("fsdp", "tensor")),
    (r"(mlp_0|fc1)/bias$", ("tensor",)),
    (r"adaLN_modulation/kernel$", (None, "fsdp")),
    (r".*", ()),  # everything else (norms, small biases, time MLP): replicated
)


def make_mesh(mesh_cfg: MeshConfig, devices: Sequence[jax.Device] | None = None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_cfg.shape(len(devices))
    return Mesh(np.asarray(devices).reshape(shape), AXES)


def _path_str(path) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def _fit(spec: tuple[str | None, ...], shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """Pads `spec` to the rank and drops axes that do not divide their dimension."""
    spec = tuple(spec)[: len(shape)] + (None,) * max(0, len(shape) - len(spec))
    fitted = []
    for axis, dim in zip(spec, shape):
        size = mesh.shape[axis] if axis is not None else 1
        fitted.append(axis if axis is not None and size > 1 and dim % size == 0 else None)
    return PartitionSpec(*fitted)


def param_spec(path: str, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    for pattern, spec in PARAM_RULES:
        if re.search(pattern, path):
            return _fit(spec, shape, mesh)
    raise AssertionError("PARAM_RULES ends with a catch-all")


def tree_shardings(tree, mesh: Mesh):
    """NamedShardings for any pytree of arrays/ShapeDtypeStructs (params, opt state, EMA).

    Optimiser moments share their parameter's path suffix, so the same rules apply.
    """

    def one(path, leaf):
        shape = tuple(getattr(leaf, "shape", ()))
        return NamedSharding(mesh, param_spec(_path_str(path), shape, mesh))

    return jax.tree_util.tree_map_with_path(one, tree)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def global_batch(local_batch, mesh: Mesh):
    """Assembles a global array from each process's slice of the batch."""
    sharding = batch_sharding(mesh)
    return jax.tree_util.tree_map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), local_batch
    )


def describe_plan(params, mesh: Mesh) -> list[str]:
    """One `name: value` line per sharded parameter group, for --mode=describe."""
    lines = [f"mesh_shape: {dict(mesh.shape)}", f"batch_spec: {PartitionSpec(BATCH_AXES)}"]
    seen: dict[str, str] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        name = re.sub(r"blocks_\d+", "blocks_*", _path_str(path))
        seen.setdefault(name, str(param_spec(_path_str(path), tuple(leaf.shape), mesh)))
    lines += [f"param_spec[{name}]: {spec}" for name, spec in seen.items()]
    return lines
