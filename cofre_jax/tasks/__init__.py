"""The task seam: what differs between modalities (text today, images next).

`get_task(config)` returns the config's task object, built once per config. Modes, the
trainer and the sampler call the model, the loss and the metrics only through it, so a
new modality adds a module here and an entry in TASK_TYPES, not branches elsewhere.
"""

from __future__ import annotations

import functools

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


__all__ = ["TASK_TYPES", "ImageTask", "TextTask", "get_task"]
