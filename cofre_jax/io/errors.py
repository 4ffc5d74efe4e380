"""The error of the checkpoint-file readers."""

from __future__ import annotations


class TorchCheckpointError(ValueError):
    """A checkpoint file cannot be read safely, or does not fit the configured model."""
