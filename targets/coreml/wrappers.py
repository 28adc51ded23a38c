"""What gets traced for CoreML: the shared static contract, stateless or with the states inside the model.

- Stateless packages trace ``targets.contract.StaticContract`` itself (its resize sizes are Python constants:
  coremltools 9 cannot convert sizes read from a traced input, ``prim::NumToTensor`` + ``aten::Int``, under NumPy 2.4).
- :class:`StatefulContract` (iOS 18 states): ``forward(src) -> fgr, pha``; it reads r1..r4 from buffers, runs the same
  static contract and writes the new states back with a full slice assignment, which coremltools turns into
  ``read_state`` / ``coreml_update_state``. Core ML states are float16 only (coremltools refuses fp32 states). An
  fp16 program loses nothing by that; an fp32 program would round every state to 11 significant bits on every frame,
  so it stores each state as two float16 halves instead, ``hi = fp16(r)`` and ``lo = fp16(r - hi)``, and reads
  ``hi + lo`` (about 22 significant bits; the absolute error is below 3e-8 for the states' range |r| <= 1). The MIL
  program keeps the float16 round trip of ``hi`` as two casts, so the converted program computes exactly this.
  A new ``MLState`` (``make_state()``) is all zeros: that is the first frame's state, and "reset" is a new state.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from rvm_export.core.spec import IOSpec

__all__ = ["StatefulContract", "PixelOutputs", "state_buffers", "STATE_NAMES"]

STATE_NAMES = ("r1", "r2", "r3", "r4")


def state_buffers(storage: str) -> dict[str, list[str]]:
    """Core ML state names per recurrent state: ``{"r1": ["r1_hi", "r1_lo"], ...}`` or ``{"r1": ["r1"], ...}``."""
    if storage == "split":
        return {k: [f"{k}_hi", f"{k}_lo"] for k in STATE_NAMES}
    return {k: [k] for k in STATE_NAMES}


class StatefulContract(nn.Module):
    """Fixed resolution and ratio, states inside: ``forward(src) -> (fgr, pha)`` (times ``output_scale``)."""

    def __init__(self, model: nn.Module, spec: IOSpec, storage: str, output_scale: float = 1.0) -> None:
        super().__init__()
        self.output_scale = output_scale  # 255 for image outputs (the state buffers must stay top-level names)
        if spec.bucket is None:
            raise ValueError("StatefulContract needs a spec with a fixed bucket")
        if storage not in ("split", "fp16"):
            raise ValueError(f"state storage must be 'split' or 'fp16', got {storage!r}")
        from targets.traced.contract import StaticContract

        self.static = StaticContract(model, spec).eval()
        self.storage = storage
        shapes = spec.concrete_state_shapes(spec.bucket)
        for key, names in state_buffers(storage).items():
            for name in names:
                # float32 in PyTorch; coremltools declares them as float16 StateTypes (the only kind Core ML has).
                self.register_buffer(name, torch.zeros(shapes[key + "i"]), persistent=False)

    def _read(self, key: str) -> Tensor:
        if self.storage == "split":
            return getattr(self, f"{key}_hi") + getattr(self, f"{key}_lo")
        return getattr(self, key)

    def _write(self, key: str, value: Tensor) -> None:
        if self.storage == "split":
            hi = value.half().float()
            getattr(self, f"{key}_hi")[:] = hi
            getattr(self, f"{key}_lo")[:] = value - hi
        else:
            getattr(self, key)[:] = value

    def forward(self, src: Tensor) -> tuple[Tensor, Tensor]:
        fgr, pha, *new = self.static(src, *[self._read(k) for k in STATE_NAMES])
        for key, value in zip(STATE_NAMES, new):
            self._write(key, value)
        if self.output_scale != 1.0:
            return fgr * self.output_scale, pha * self.output_scale
        return fgr, pha


class PixelOutputs(nn.Module):
    """``fgr`` and ``pha`` (the first two outputs of a contract wrapper) times 255, for Core ML image outputs (8-bit
    pixel values); the states pass through unchanged."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        fgr, pha, *rest = self.inner(*inputs)
        return (fgr * 255.0, pha * 255.0, *rest)
