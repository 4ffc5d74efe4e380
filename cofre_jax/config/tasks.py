"""The one table of tasks: which data and model sections a task's config has, and its
two hooks around the shared sections.

`from_config_dict` reads model.kind, finds its task in choices.MODEL_TASKS and builds
that task's sections from here; every other section (cofre_jax.config.core and
cofre_jax.config.sampling) is the same for all tasks. Keys: choices.TASKS
(tests/config/test_config.py checks both tables).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from cofre_jax.config import image, text


@dataclasses.dataclass(frozen=True)
class TaskSections:
    data: type  # frozen dataclass of the `data` section, with validate()
    model: type  # frozen dataclass of the `model` section, with validate(); has `kind`
    # Before the sections are built: fills defaults that depend on other sections, in
    # place on the plain {section: {key: value}} dict (text: model.vocab_size = -1).
    resolve: Callable[[dict[str, dict[str, Any]]], None]
    # After every section validated itself: checks across sections, given the Config.
    validate: Callable[[Any], None]


TASK_SECTIONS = {
    "text": TaskSections(
        data=text.DataConfig,
        model=text.ModelConfig,
        resolve=text.resolve_defaults,
        validate=text.validate,
    ),
    "image": TaskSections(
        data=image.ImageDataConfig,
        model=image.ImageModelConfig,
        resolve=image.resolve_defaults,
        validate=image.validate,
    ),
}
