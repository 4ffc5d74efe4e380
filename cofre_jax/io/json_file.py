"""Atomic JSON records that a run writes next to its checkpoints (process 0 only)."""

from __future__ import annotations

import json
import os

import jax


def write_json(path: str, payload: dict) -> None:
    """Writes `payload` to `path` through a temporary file, so a reader or an
    interrupted run never sees half a record; other processes write nothing."""
    if jax.process_index() != 0:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
