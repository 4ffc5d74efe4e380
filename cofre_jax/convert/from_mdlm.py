"""--mode=convert's first half: load an MDLM teacher and build the FP-MDLM from it."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax

from cofre_jax import checkpoint, tasks
from cofre_jax.config.typed import Config, ModelConfig
from cofre_jax.convert.layer_map import fp_params_from_mdlm
from cofre_jax.convert.torch_checkpoint import load_mdlm_params
from cofre_jax.models import count_params
from cofre_jax.tasks.text import teacher_model_config

# Files read with the PyTorch-free loader; anything else must be one of our workdirs.
TORCH_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")


def abstract_params(config: Config, model_config: ModelConfig) -> Any:
    """ShapeDtypeStructs (on the first local device) of a model's parameters."""
    shapes = tasks.get_task(dataclasses.replace(config, model=model_config)).abstract_params()
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes
    )


def load_teacher(config: Config) -> tuple[Any, int | None]:
    """(MDLM params, training step or None) from convert.teacher: a workdir of ours
    (its latest checkpoint's EMA parameters) or a public MDLM PyTorch checkpoint."""
    path = config.convert.teacher
    teacher_config = teacher_model_config(config)
    if os.path.isdir(path):
        return checkpoint.restore_params(path, abstract_params(config, teacher_config))
    if os.path.isfile(path) and path.endswith(TORCH_SUFFIXES):
        # The OmegaConf hyper-parameters are allow-listed and checked; other objects a
        # Lightning checkpoint may carry (callback or tokenizer state) stay inert.
        return load_mdlm_params(path, teacher_config, opaque_unknown_globals=True), None
    raise FileNotFoundError(
        f"convert.teacher={path!r} is neither a workdir with checkpoints nor a PyTorch MDLM "
        f"checkpoint file ({', '.join(TORCH_SUFFIXES)})"
    )


def convert_mdlm(config: Config) -> tuple[Any, Any, dict[str, Any]]:
    """(teacher params, FP-MDLM params, report) as convert.layer_map and
    convert.injection_scale say."""
    teacher_params, teacher_step = load_teacher(config)
    template = abstract_params(config, config.model)
    student_params = fp_params_from_mdlm(
        teacher_params,
        template,
        config.model,
        config.convert.layer_map,
        config.convert.injection_scale,
    )
    report = {
        "teacher": config.convert.teacher,
        "teacher_step": teacher_step,
        "teacher_num_layers": config.convert.teacher_num_layers,
        "layer_map": list(config.convert.layer_map),
        "injection": config.model.injection,
        "injection_scale": config.convert.injection_scale,
        "teacher_params": count_params(teacher_params),
        "student_params": count_params(student_params),
    }
    return teacher_params, student_params, report
