"""Typed errors of the model package. Each message names what was expected and what was given."""
from __future__ import annotations

__all__ = ["ModelInputError", "CheckpointError", "UnsafeCheckpointError"]


class ModelInputError(ValueError):
    """A tensor or argument given to ``MattingNetwork.forward`` does not fit the contract."""


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not match the requested network."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle checkpoint that would import or call code other than tensors and plain containers."""
