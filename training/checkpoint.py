"""Training checkpoints: written atomically, read with ``weights_only=True``.

``checkpoint_last.pth`` holds ``{"model", "optimizer", "scaler", "config", "step", "data", "rng", "world_size",
"best"}``; ``checkpoint_best.pth`` (the lowest validation alpha MAD so far) holds ``{"model", "config", "step",
"valid"}``. Only tensors, dicts, lists, strings and numbers, so ``model.load_checkpoint`` (which reads the ``model``
entry) and ``torch.load(..., weights_only=True)`` both accept them.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ResumeError

__all__ = ["CHECKPOINT_NAME", "BEST_NAME", "save_atomic", "read_training_checkpoint", "capture_rng", "restore_rng"]

CHECKPOINT_NAME = "checkpoint_last.pth"
BEST_NAME = "checkpoint_best.pth"


def save_atomic(payload: dict[str, Any], path: str | Path) -> None:
    """Write to a temporary file in the same folder, then ``os.replace``: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ResumeError(f"no checkpoint to resume from at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, truncated zip, I/O: all mean "cannot resume from this file"
        raise ResumeError(f"cannot read {path}: {exc}") from exc
    missing = [k for k in ("model", "optimizer", "scaler", "config", "step", "data", "rng") if k not in payload]
    if missing:
        raise ResumeError(f"{path} is not a training checkpoint (missing {missing})")
    return payload


def capture_rng() -> dict[str, Any]:
    """Global RNG states of torch (CPU and CUDA), NumPy and Python as tensors and numbers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, python_state, gauss_next = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(python_state, dtype=torch.int64),
                   "gauss_next": [] if gauss_next is None else [float(gauss_next)]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    python = state["python"]
    gauss_next = python["gauss_next"][0] if python["gauss_next"] else None
    random.setstate((python["version"], tuple(python["state"].tolist()), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
