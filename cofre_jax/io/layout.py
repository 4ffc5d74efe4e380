"""Checking a state dict read from a file against the layout a model expects, before
anything is converted: one error that names the missing, unexpected and misshapen keys."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cofre_jax.io.errors import TorchCheckpointError

SHOWN = 5  # keys named per kind of problem


def check_state_dict(
    state_dict: Mapping[str, np.ndarray],
    layout: Sequence[tuple],
    *,
    ignored: Iterable[str] = (),
    what: str,
) -> None:
    """`layout` rows start with (torch key, anything, expected shape); every expected key
    must be present with that shape and a floating dtype, and no other key but `ignored`
    may be. Raises TorchCheckpointError "state dict does not fit <what>: ..."."""
    ignored = set(ignored)
    expected = {row[0] for row in layout}
    missing = [row[0] for row in layout if row[0] not in state_dict]
    unexpected = [k for k in state_dict if k not in expected and k not in ignored]
    wrong = [
        f"{key}: checkpoint {tuple(state_dict[key].shape)} {state_dict[key].dtype}, "
        f"model expects {shape} float"
        for key, _, shape, *_ in layout
        if key in state_dict
        and (
            tuple(state_dict[key].shape) != tuple(shape)
            or not np.issubdtype(state_dict[key].dtype, np.floating)
        )
    ]
    problems = [
        f"{label} ({len(keys)}): {', '.join(keys[:SHOWN])}{', ...' if len(keys) > SHOWN else ''}"
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("bad", wrong))
        if keys
    ]
    if problems:
        raise TorchCheckpointError(f"state dict does not fit {what}: " + "; ".join(problems))
