"""The records that travel between planning, export, parity, benchmark and report.

- :class:`ExportRequest`: what one target is asked for (validated when built, then by the target's
  ``check_request`` before any work);
- :class:`RuntimeOptions`: how an artifact is run (threads, device, inference precision, typed target overrides);
- :class:`Artifact`: one file or package a target produced, with its I/O contract.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bucket import Bucket
from .errors import UsageError
from .names import DEFAULT_OPSET
from .options import NoOptions, TargetOptions
from .spec import IOSpec, Layout, Precision

__all__ = ["ExportRequest", "RuntimeOptions", "Artifact", "DEFAULT_OPSET"]


@dataclass(frozen=True)
class ExportRequest:
    """What the user asked one target for.

    Raises UsageError for values no target can take (no bucket, a calibration set under 4 frames, a dynamic model
    checked at a ratio whose float32 value PyTorch treats differently: ``Bucket.float32_ratio_agrees``) and
    TypeError for a field of the wrong type (a programming error, not a user's)."""

    variant: str  # network variant, sets state channels
    refiner: str  # refiner the PyTorch model uses
    buckets: tuple[Bucket, ...]  # resolutions x ratios to build (static) or to validate at (dynamic)
    dynamic: bool  # True: one model for any H x W with a runtime ratio input
    precision: Precision  # weights / compute precision of the artifact
    layout: Layout = Layout.NCHW  # tensor layout at the model boundary
    opset: int = DEFAULT_OPSET  # ONNX opset where ONNX is involved (targets that take none ignore it)
    options: TargetOptions = field(default_factory=NoOptions)  # the target's typed options
    calibration_frames: int = 32  # frames of the rollout used to calibrate int8
    checkpoint_sha256: str | None = None  # recorded in the artifact's metadata
    checkpoint_label: str = "seeded-default (untrained)"  # where the weights came from

    def __post_init__(self) -> None:
        if not isinstance(self.precision, Precision):
            raise TypeError(f"precision must be a Precision, got {self.precision!r}")
        if not isinstance(self.layout, Layout):
            raise TypeError(f"layout must be a Layout, got {self.layout!r}")
        if not isinstance(self.options, TargetOptions):
            raise TypeError(f"options must be a TargetOptions dataclass, got {type(self.options).__name__}")
        if not isinstance(self.buckets, tuple) or not all(isinstance(b, Bucket) for b in self.buckets):
            raise TypeError("buckets must be a tuple of Bucket")
        if not self.buckets:
            raise UsageError("at least one --resolution is needed (to build static models or to validate dynamic "
                             "ones)")
        if len(set(self.buckets)) != len(self.buckets):
            raise UsageError(f"bucket listed twice: {[b.label for b in self.buckets]}")
        problems = [b.float32_ratio_problem() for b in self.buckets] if self.dynamic else []
        if any(problems):
            raise UsageError(next(p for p in problems if p))
        if self.calibration_frames < 4:
            raise UsageError(f"int8 calibration needs at least 4 frames, got {self.calibration_frames}")

    @property
    def specs(self) -> tuple[IOSpec, ...]:
        """The contract of each model this request becomes: one dynamic spec, or one static spec per bucket
        (plain NCHW/NHWC I/O; targets add what their files differ in)."""
        if self.dynamic:
            return (IOSpec(self.variant, self.refiner, layout=self.layout),)
        return tuple(IOSpec(self.variant, self.refiner, b, layout=self.layout) for b in self.buckets)


@dataclass(frozen=True)
class RuntimeOptions:
    """How an artifact is run. ``overrides``: the target's options dataclass for run-time switches (e.g. the CUDA
    mode), None for the artifact's own."""

    threads: int | None = None  # intra-op threads; None = the runtime's default
    device: str = "cpu"  # "cpu" | "cuda" | a runtime-specific device name ("GPU", "NPU", ...)
    inference_precision: str | None = None  # e.g. OpenVINO "f32"/"bf16"; None = the target's parity default
    overrides: TargetOptions | None = None  # typed run-time options of the artifact's target
    spin_wait: bool = True  # idle worker threads spin for the next job (ONNX Runtime's allow_spinning); False frees
    # their cores between runs for other threads of the process (matte's decode and encode)

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise UsageError(f"threads must be at least 1, got {self.threads}")


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
    companions: tuple[Path, ...] = ()  # files written beside it that belong to it (a sidecar, an app's runtime files)

    @property
    def name(self) -> str:
        return Path(self.path).name
