"""Typed, validated, frozen views of the experiment ConfigDict.

Modules never see a ConfigDict: `from_config_dict` builds these dataclasses once,
validates every field and raises one `ConfigError` naming the field and the allowed
range. Fields mirror `configs/base.py`, where each one is documented.

The root is generic over the task: model.kind names the task (choices.MODEL_TASKS),
whose `data` and `model` sections and hooks come from cofre_jax.config.tasks (text:
cofre_jax.config.text); the other sections are shared (cofre_jax.config.core and
cofre_jax.config.sampling). Every section class is importable from here too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from cofre_jax.config import choices, tasks
from cofre_jax.config.checks import ConfigError, _check, _check_choice
from cofre_jax.config.core import (
    ConvertConfig,
    DiffusionConfig,
    FixedPointConfig,
    MeshConfig,
    OptimConfig,
    StageConfig,
    TrainConfig,
)
from cofre_jax.config.sampling import EvalConfig, SampleConfig
from cofre_jax.config.text import (
    TOKENIZER_VOCAB_SIZES,
    DataConfig,
    ModelConfig,
    tokenizer_vocab_size,
)

__all__ = [
    "TOKENIZER_VOCAB_SIZES",
    "Config",
    "ConfigError",
    "ConvertConfig",
    "DataConfig",
    "DiffusionConfig",
    "EvalConfig",
    "FixedPointConfig",
    "MeshConfig",
    "ModelConfig",
    "OptimConfig",
    "SampleConfig",
    "StageConfig",
    "TrainConfig",
    "from_config_dict",
    "tokenizer_vocab_size",
]


@dataclasses.dataclass(frozen=True)
class Config:
    model: Any  # the task's model section (text: ModelConfig), see cofre_jax.config.tasks
    fixed_point: FixedPointConfig
    diffusion: DiffusionConfig
    data: Any  # the task's data section (text: DataConfig)
    optim: OptimConfig
    train: TrainConfig
    sample: SampleConfig
    stage: StageConfig
    convert: ConvertConfig
    eval: EvalConfig
    mesh: MeshConfig

    @property
    def task(self) -> str:
        """The task model.kind belongs to (choices.MODEL_TASKS), e.g. "text"."""
        return choices.MODEL_TASKS[self.model.kind]

    def validate(self) -> None:
        _check_choice("model.kind", self.model.kind, choices.MODEL_TASKS)
        for section in dataclasses.fields(self):
            getattr(self, section.name).validate()
        tasks.TASK_SECTIONS[self.task].validate(self)
        _check(
            not self.eval.reference or self.eval.scorer == "oracle",
            "eval.reference",
            self.eval.reference,
            "'' unless eval.scorer is 'oracle' (its figures are excess NLL)",
        )


# The sections every task shares; the task adds "model" and "data".
_SHARED_SECTIONS = {
    "fixed_point": FixedPointConfig,
    "diffusion": DiffusionConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "sample": SampleConfig,
    "stage": StageConfig,
    "convert": ConvertConfig,
    "eval": EvalConfig,
    "mesh": MeshConfig,
}
_SECTION_NAMES = tuple(f.name for f in dataclasses.fields(Config))


def _build_section(name: str, cls: type, values: Mapping[str, Any]) -> Any:
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key '{name}.{unknown[0]}'; valid keys of '{name}': {sorted(names)}"
        )
    missing = [n for n in names if n not in values]
    if missing:
        raise ConfigError(f"config section '{name}' is missing key '{missing[0]}'")
    return cls(**{n: values[n] for n in names})


def from_config_dict(cfg: Mapping[str, Any]) -> Config:
    """Builds and validates the typed config; raises ConfigError on any bad field."""
    plain = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    unknown = sorted(set(plain) - set(_SECTION_NAMES))
    if unknown:
        raise ConfigError(
            f"unknown config section '{unknown[0]}'; valid sections: {sorted(_SECTION_NAMES)}"
        )
    plain = {name: dict(plain.get(name, {})) for name in _SECTION_NAMES}
    if "kind" not in plain["model"]:
        raise ConfigError("config section 'model' is missing key 'kind'")
    kind = plain["model"]["kind"]
    _check_choice("model.kind", kind, choices.MODEL_TASKS)
    task = tasks.TASK_SECTIONS[choices.MODEL_TASKS[kind]]
    task.resolve(plain)
    classes = {**_SHARED_SECTIONS, "model": task.model, "data": task.data}
    sections = {name: _build_section(name, classes[name], plain[name]) for name in _SECTION_NAMES}
    config = Config(**sections)
    config.validate()
    return config
