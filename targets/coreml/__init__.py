"""CoreML target: mlprogram ``.mlpackage`` files (fp16 default, fp32), static per bucket, stateless and stateful,
one package per bucket or one multifunction package; parity on Linux through a reference MIL executor.

Surface (targets/base.py): ``NAME``, ``PRECISIONS``, ``DEFAULT_PRECISION``, ``RUNTIME_LABEL``, ``missing()``,
``check_request(request)``, ``export(model, request, out_dir)``, ``load(artifact, options)``.
Options: see :mod:`targets.coreml.options` and docs/coreml.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

from rvm_export.errors import MissingRuntimeError, UsageError

from ..base import Artifact, ExportRequest, RuntimeOptions
from .mil_executor import EXECUTOR_LABEL
from .options import check_buckets, parse_options

__all__ = ["NAME", "PRECISIONS", "DEFAULT_PRECISION", "SUPPORTS_DYNAMIC", "RUNTIME_LABEL", "missing",
           "check_request", "export", "load"]

NAME = "coreml"
PRECISIONS = ("fp16", "fp32")
DEFAULT_PRECISION = "fp16"  # what apps ship (the Neural Engine computes in float16); fp32 for exact checks
SUPPORTS_DYNAMIC = False  # resolution and ratio are fixed per model function
RUNTIME_LABEL = ("Core ML runtime (coremltools predict)" if sys.platform == "darwin" else EXECUTOR_LABEL)


def missing() -> str | None:
    try:
        import coremltools  # noqa: F401
    except ImportError:
        return "coremltools: pip install 'rvm-export[coreml]'"
    return None


def _require() -> None:
    if missing():
        raise MissingRuntimeError("coremltools", "coreml", "coremltools")


def check_request(request: ExportRequest) -> None:
    """Everything this target cannot take is refused here, before any work, with the reason and alternatives."""
    precision = getattr(request.precision, "value", str(request.precision))
    if precision not in PRECISIONS:
        raise UsageError(f"coreml exports fp16 (default) or fp32 programs, not {precision}")
    if request.dynamic:
        raise UsageError(
            "coreml models are static: resolution and downsample ratio are fixed per model function (Core ML's "
            "resize recomputes its scale from fixed sizes, and flexible shapes on several inputs need iOS 18 "
            "EnumeratedShapes). Pass --downsample-ratio R with one or more --resolution WxH; several buckets can "
            "share one package with --option coreml.multifunction=true")
    if precision == "fp16" and request.refiner == "fast_guided_filter":
        raise UsageError(
            "the fast guided filter cannot run in float16: its A = cov / (var + 1e-5) divides differences of 3x3 box "
            "means, which float16 leaves at ~1e-3 noise, so alpha errors reach 0.6-0.7 (measured on the MIL program). "
            "Export it with --precision fp32, or use the deep guided filter (the released checkpoints' refiner)")
    check_buckets(tuple(request.buckets), request.layout)
    parse_options(request.options, precision)


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    _require()
    check_request(request)
    from .packages import export_packages

    return export_packages(model, request, Path(out_dir))


def load(artifact: Artifact, options: RuntimeOptions):
    """macOS: Core ML's own runtime; elsewhere: the reference MIL executor (labelled as such)."""
    _require()
    from .runtime import COMPUTE_UNIT_NAMES, ExecutorRunner, PredictRunner, can_predict

    if can_predict():
        device = options.device if options.device != "cpu" else artifact.details.get("compute_units", "cpu")
        if device not in COMPUTE_UNIT_NAMES:
            raise UsageError(f"coreml runs on {', '.join(COMPUTE_UNIT_NAMES)}, not {device!r}")
        return PredictRunner(artifact, device)
    if options.device not in ("cpu", *COMPUTE_UNIT_NAMES):
        raise UsageError(f"coreml has no device {options.device!r}; on Linux it runs the MIL program check on the CPU")
    return ExecutorRunner(artifact, threads=options.threads or 1)
