"""MDLM -> FP-MDLM parameters (docs/method.md §2.6): copy mapped blocks, near-identity injection.

The embedding, time embedding and output head come from the MDLM unchanged. Teacher
blocks named by the 1-based `layer_map` become the pre blocks, the weight-tied block(s)
and the post blocks, in that order (default 1 / 6 / 12: the published CKA analysis finds
a break between layers 5 and 6 and near-identical layers 6-12).

Near-identity injection: at initialisation the input of the weight-tied block is exactly
h + s * h_pre (s = injection_scale), so iterating F starts as iterating the copied block
with a weak pull towards the pre stack's output.
- "fpdm": G = identity; fc1 maps [h, u] to [h + s u, -(h + s u)] and fc2 takes the
  difference of the two halves, because gelu(x) - gelu(-x) = x for the exact and the
  tanh-approximated GELU alike (x * Phi(x) + x * Phi(-x) = x).
- "add": the block input is h + u, so G = s * identity.

Letters: D hidden.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cofre_jax.config.typed import ModelConfig


class LayerMapError(ValueError):
    """The layer map does not fit the teacher or the FP-MDLM."""


def split_layer_map(config: ModelConfig, layer_map: tuple[int, ...]) -> dict[str, list[int]]:
    """0-based teacher block indices for 'pre_blocks', 'fp_blocks' and 'post_blocks'."""
    wanted = config.k_pre + config.k_fp + config.k_post
    if len(layer_map) != wanted:
        raise LayerMapError(
            f"layer_map {tuple(layer_map)} has {len(layer_map)} entries; the FP-MDLM has "
            f"k_pre + k_fp + k_post = {wanted} blocks"
        )
    zero_based = [int(i) - 1 for i in layer_map]
    return {
        "pre_blocks": zero_based[: config.k_pre],
        "fp_blocks": zero_based[config.k_pre : config.k_pre + config.k_fp],
        "post_blocks": zero_based[config.k_pre + config.k_fp :],
    }


def _dense(kernel_IxO: np.ndarray, like: Any) -> dict[str, jax.Array]:
    out = kernel_IxO.shape[1]
    return {
        "kernel": jnp.asarray(kernel_IxO, like["kernel"].dtype),
        "bias": jnp.zeros((out,), like["bias"].dtype),
    }


def near_identity_injection(
    config: ModelConfig, template: dict[str, Any], scale: float
) -> dict[str, Any]:
    """The injection G and (fpdm) the fc1/fc2 mixing layers, as the module docstring says."""
    D = config.hidden_size
    eye_DxD = np.eye(D, dtype=np.float32)
    if config.injection == "add":
        return {"injection": _dense(scale * eye_DxD, template["injection"])}
    if config.injection != "fpdm":
        raise LayerMapError(f"no near-identity initialisation for injection {config.injection!r}")
    fc1_2Dx2D = np.block([[eye_DxD, -eye_DxD], [scale * eye_DxD, -scale * eye_DxD]])
    fc2_2DxD = np.concatenate([eye_DxD, -eye_DxD], axis=0)
    cell = template["fp_cell"]
    return {
        "injection": _dense(eye_DxD, template["injection"]),
        "fc1": _dense(fc1_2Dx2D, cell["fc1"]),
        "fc2": _dense(fc2_2DxD, cell["fc2"]),
    }


def fp_params_from_mdlm(
    mdlm_params: dict[str, Any],
    template: dict[str, Any],
    config: ModelConfig,
    layer_map: tuple[int, ...],
    injection_scale: float,
) -> dict[str, Any]:
    """FP-MDLM params shaped like `template` (arrays or ShapeDtypeStructs), every leaf
    taken from the MDLM or the near-identity injection."""
    teacher_blocks = sorted(
        int(name.split("_")[-1]) for name in mdlm_params if name.startswith("blocks_")
    )
    index = split_layer_map(config, layer_map)
    for i in (i for group in index.values() for i in group):
        if i not in teacher_blocks:
            raise LayerMapError(
                f"layer_map names teacher block {i + 1}, but the MDLM has "
                f"{len(teacher_blocks)} blocks (1-based 1..{len(teacher_blocks)})"
            )

    def copy(tree, like):
        # Real copies: a block may be mapped twice, and the training step donates the
        # student's buffers while the teacher keeps its own.
        return jax.tree_util.tree_map(lambda a, t: jnp.array(a, t.dtype, copy=True), tree, like)

    def block(name: str, k: int):
        return copy(mdlm_params[f"blocks_{index[name][k]}"], template_block(name, k))

    def template_block(name: str, k: int):
        if name == "fp_blocks":
            return template["fp_cell"][f"blocks_{k}"]
        return template[f"{name}_{k}"]

    injection = near_identity_injection(config, template, injection_scale)
    params: dict[str, Any] = {
        name: copy(mdlm_params[name], template[name])
        for name in ("vocab_embed", "sigma_map", "output_layer")
    }
    params.update({f"pre_blocks_{k}": block("pre_blocks", k) for k in range(config.k_pre)})
    params["injection"] = injection.pop("injection")
    params["fp_cell"] = {
        **injection,
        **{f"blocks_{k}": block("fp_blocks", k) for k in range(config.k_fp)},
    }
    params.update({f"post_blocks_{k}": block("post_blocks", k) for k in range(config.k_post)})
    built, wanted = jax.tree_util.tree_structure(params), jax.tree_util.tree_structure(template)
    if built != wanted:
        raise LayerMapError(f"converted parameters {built} do not match the FP-MDLM's {wanted}")
    return params
