"""The config's error and its check helpers, shared by every section module.

Each check raises one `ConfigError` naming the field, its value and the allowed range;
the entry point prints it as one line.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


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
