"""What every target module provides, and the records that travel between export, parity, bench and report.

A target module (``targets/onnx.py``, ...) exposes::

    NAME: str                                   # registry key, e.g. "onnx"
    PRECISIONS: tuple[str, ...]                 # precisions it can export
    RUNTIME_LABEL: str                          # how its parity/bench numbers were obtained
    def missing() -> str | None                 # None when converter and runtime import; else the install hint
    def check_request(request) -> None          # raise UsageError for anything it cannot take, before any work
    def export(model, request, out_dir) -> list[Artifact]
    def load(artifact, options) -> Runner

Heavy imports happen inside functions. A target never pip-installs anything.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from rvm_export.spec import STATE_PAIRS, Bucket, IOSpec, Layout, Precision

__all__ = ["ExportRequest", "RuntimeOptions", "Artifact", "Runner", "Stream", "ArrayStream", "TargetModule"]


@dataclass(frozen=True)
class ExportRequest:
    """What the user asked one target for. Validated by the target's ``check_request`` before any work."""

    variant: str  # network variant, sets state channels
    refiner: str  # refiner the PyTorch model uses
    buckets: tuple[Bucket, ...]  # resolutions x ratios to build (static) or to validate at (dynamic)
    dynamic: bool  # True: one model for any H x W with a runtime ratio input
    precision: Precision  # weights / compute precision of the artifact
    layout: Layout = Layout.NCHW  # tensor layout at the model boundary
    opset: int = 17  # ONNX opset where ONNX is involved
    options: Mapping[str, Any] = field(default_factory=dict)  # target-specific switches (documented per target)
    calibration_frames: int = 32  # frames of the rollout used to calibrate int8
    checkpoint_sha256: str | None = None  # recorded in the artifact's metadata
    checkpoint_label: str = "seeded-default (untrained)"  # where the weights came from

    def option(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


@dataclass(frozen=True)
class RuntimeOptions:
    threads: int | None = None  # intra-op threads; None = the runtime's default
    device: str = "cpu"  # "cpu" | "cuda" | a runtime-specific device name ("GPU", "NPU", ...)
    inference_precision: str | None = None  # e.g. OpenVINO "f32"/"bf16"; None = the target's parity default
    extra: Mapping[str, Any] = field(default_factory=dict)  # target-specific runtime switches (docs/<target>.md)


@dataclass
class Artifact:
    """One file (or package directory) a target produced."""

    target: str  # registry name of the target
    path: Path  # absolute while the run works; the manifest stores it relative to the output folder
    precision: Precision  # what the weights/compute are
    spec: IOSpec  # the I/O contract of this artifact (bucket None = dynamic)
    flavour: str  # "dynamic" | "static" | "stateful" | "multifunction" | ...
    buckets: tuple[Bucket, ...]  # where this artifact is valid and is checked
    details: dict[str, Any] = field(default_factory=dict)  # converter, opset, compute precision, io dtype, notes

    @property
    def name(self) -> str:
        return self.path.name


class Stream(Protocol):
    """Runs consecutive frames, keeping the recurrent states as the runtime's own values between calls.

    A stream whose runtime lives elsewhere (a browser page) may also set ``timed_ms``, the last step's time measured
    there; the benchmark reports it instead of the wall time seen from Python.
    """

    def step(self, src: np.ndarray) -> Mapping[str, np.ndarray]:
        """``src`` is NCHW float32 [1,3,H,W]; returns NCHW float32 ``fgr``, ``pha`` and, where the model exposes
        them, ``r1o..r4o``."""
        ...

    def reset(self) -> None:
        """Start a new clip: the next step uses zero states."""
        ...


class Runner(Protocol):
    artifact: Artifact | None
    label: str  # e.g. "ONNX Runtime 1.32.0 CPUExecutionProvider, 2 threads"

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call with contract-named inputs (in the artifact's layout/dtype); returns contract-named outputs."""
        ...

    def stream(self, bucket: Bucket) -> Stream:
        ...


class ArrayStream:
    """Default :class:`Stream` over ``Runner.run``: states travel as NumPy arrays (override for zero-copy)."""

    def __init__(self, runner: Runner, spec: IOSpec, bucket: Bucket) -> None:
        spec.check_bucket(bucket)
        self.runner = runner
        self.spec = spec
        self.bucket = bucket
        self.states: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        self.states = self.spec.zero_states(self.bucket)

    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.runner.run(self.spec.feeds(src, self.states, self.bucket))
        self.states = {inp: outputs[out] for out, inp in STATE_PAIRS}
        return {name: self.spec.from_layout(value).astype(np.float32, copy=False) if value.ndim == 4 else value
                for name, value in outputs.items()}


class TargetModule(Protocol):
    NAME: str
    PRECISIONS: tuple[str, ...]
    RUNTIME_LABEL: str

    def missing(self) -> str | None: ...

    def check_request(self, request: ExportRequest) -> None: ...

    def export(self, model: Any, request: ExportRequest, out_dir: Path) -> list[Artifact]: ...

    def load(self, artifact: Artifact, options: RuntimeOptions) -> Runner: ...


def timed(fn, *args, **kwargs) -> tuple[Any, float]:
    """Call ``fn`` and return (result, seconds)."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start
