"""The task seam: what differs between modalities (text today, images next).

`get_task(config)` returns the config's task object, built once per config. Modes, the
trainer and the sampler call the model, the loss and the metrics only through it, so a
new modality adds a module here and an entry in TASK_TYPES, not branches elsewhere.
"""

from __future__ import annotations

import functools
from typing import Any

import jax

from cofre_jax import checkpoint, sharding
from cofre_jax.config.choices import TASKS
from cofre_jax.config.typed import Config
from cofre_jax.tasks.image import ImageTask
from cofre_jax.tasks.text import TextTask

# One entry per cofre_jax.config.choices.TASKS (tests/test_registries.py).
TASK_TYPES = {"text": TextTask, "image": ImageTask}


@functools.lru_cache(maxsize=32)
def get_task(config: Config):
    if config.task not in TASK_TYPES:
        raise ValueError(f"unknown task {config.task!r}; valid tasks: {TASKS}")
    return TASK_TYPES[config.task].build(config)


def restore_model_params(
    config: Config, workdir: str, *, use_ema: bool = True, mesh: jax.sharding.Mesh | None = None
) -> tuple[Any, int]:
    """(params, step) of the latest checkpoint of `config`'s model in `workdir`, placed
    on `mesh` (default: config.mesh)."""
    mesh = mesh if mesh is not None else sharding.make_mesh(config.mesh)
    abstract = get_task(config).abstract_params()
    return checkpoint.restore_params_on_mesh(abstract, workdir, mesh, use_ema=use_ema)


__all__ = ["TASK_TYPES", "ImageTask", "TextTask", "get_task", "restore_model_params"]
