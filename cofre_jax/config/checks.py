"""The config's error and its check helpers, shared by every section module.

Each check raises one `ConfigError` naming the field, its value and the allowed range;
the entry point prints it as one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cofre_jax.config.choices import DTYPES, INJECTIONS, MODEL_TASKS


class ConfigError(ValueError):
    """A config field has a value outside its allowed range."""


def _check(ok: bool, field: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"config field '{field}' = {value!r} is invalid: allowed {allowed}")


def _check_choice(field: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    _check(value in choices, field, value, f"one of {choices}")


def _int_tuple_field(section, section_name: str, field: str, allowed: str) -> None:
    """Normalises a tuple-of-ints field in place: a tuple, a list, one int, or "1,6,12"
    (how a command-line override arrives)."""
    value = getattr(section, field)
    parts = value
    if isinstance(value, str):
        parts = [part for part in value.strip("()[] ").split(",") if part.strip()]
    elif isinstance(value, int):
        parts = [value]
    try:
        object.__setattr__(section, field, tuple(int(i) for i in parts))
    except (TypeError, ValueError):
        raise ConfigError(
            f"config field '{section_name}.{field}' = {value!r} is invalid: allowed a "
            f"sequence of {allowed}"
        ) from None


def _check_model_kind(model: Any, task: str) -> None:
    """model.kind is one of the kinds that belong to `task` (choices.MODEL_TASKS)."""
    _check_choice("model.kind", model.kind, (k for k, t in MODEL_TASKS.items() if t == task))


def _check_stack_fields(model: Any) -> None:
    """The fields every model section shares: dtypes and the fixed-point stack's blocks."""
    _check_choice("model.dtype", model.dtype, DTYPES)
    _check_choice("model.param_dtype", model.param_dtype, DTYPES)
    for name in ("k_pre", "k_fp", "k_post"):
        value = getattr(model, name)
        _check(value >= (1 if name == "k_fp" else 0), f"model.{name}", value, ">= 0 (k_fp >= 1)")
    _check_choice("model.injection", model.injection, INJECTIONS)
