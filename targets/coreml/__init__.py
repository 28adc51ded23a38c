"""CoreML target: mlprogram ``.mlpackage`` files (fp16 default, fp32), static per bucket, stateless and stateful,
one package per bucket or one multifunction package; parity on Linux through a reference MIL executor.

Files: options.py (the options and what each deployment target can express), export.py (which packages a request
becomes), convert.py (trace + coremltools.convert of one bucket), wrappers.py (the stateful contract),
multifunction.py (joining packages), runtime.py (the Apple runtime on macOS, the MIL program check elsewhere),
mil_executor.py + mil_ops.py (the NumPy MIL interpreter). Options: docs/coreml.md.
"""
from __future__ import annotations

import sys
from pathlib import Path

from rvm_export.core.errors import UsageError
from rvm_export.core.placement import Placement
from rvm_export.core.request import Artifact, ExportRequest, RuntimeOptions
from rvm_export.core.runner import Runner
from rvm_export.core.spec import Layout, Precision
from rvm_export.core.target import TargetDescription

from . import export as _export  # first: the submodule must not replace export() below when imported later
from .mil_executor import EXECUTOR_LABEL, UNTIMED_REASON
from .options import DEPLOYMENT_TARGETS, CoreMLOptions, check_buckets, resolve_options

__all__ = ["DESCRIPTION", "CoreMLOptions", "missing", "check_request", "export", "load", "where_it_runs"]

DESCRIPTION = TargetDescription(
    name="coreml",
    summary="Core ML mlprogram packages (.mlpackage) for iOS/macOS, per bucket or multifunction, optionally stateful",
    precisions=(Precision.FP16, Precision.FP32),
    default_precision=Precision.FP16,  # what apps ship (the Neural Engine computes in float16); fp32 for exact checks
    dynamic_precisions=frozenset(),  # resolution and ratio are fixed per model function
    layouts=(Layout.NCHW,),  # Core ML multi-arrays and image inputs are channel-first
    devices=("cpu", "all", "gpu", "ane", "npu", "cpu_only", "cpu_and_gpu", "cpu_and_ne"),
    takes_opset=False,
    options=CoreMLOptions,
    extra="coreml",
    modules=("coremltools",),
    in_all=True,
    runtime_label=("Core ML runtime (coremltools predict)" if sys.platform == "darwin" else EXECUTOR_LABEL),
    untimed_reason=None if sys.platform == "darwin" else UNTIMED_REASON,  # runtime.can_predict()
)


def missing(device: str = "cpu") -> str | None:
    """None when coremltools imports (it converts everywhere; it predicts on macOS only, elsewhere the MIL program
    check runs on the CPU whatever ``device`` says)."""
    return DESCRIPTION.missing()


def check_request(request: ExportRequest) -> None:
    """Everything this target cannot take is refused here, before any work, with the reason and alternatives."""
    if request.dynamic:
        raise UsageError(
            "coreml models are static: resolution and downsample ratio are fixed per model function (Core ML's "
            "resize recomputes its scale from fixed sizes, and flexible shapes on several inputs need iOS 18 "
            "EnumeratedShapes). Pass --downsample-ratio R with one or more --resolution WxH; several buckets can "
            "share one package with --option coreml.multifunction=true")
    if request.precision not in DESCRIPTION.precisions:
        raise UsageError(f"coreml exports fp16 (default) or fp32 programs, not {request.precision}")
    DESCRIPTION.check_common(request)
    if request.precision == Precision.FP16 and request.refiner == "fast_guided_filter":
        raise UsageError(
            "the fast guided filter cannot run in float16: its A = cov / (var + 1e-5) divides differences of 3x3 box "
            "means, which float16 leaves at ~1e-3 noise, so alpha errors reach 0.6-0.7 (measured on the MIL program). "
            "Export it with --precision fp32, or use the deep guided filter (the released checkpoints' refiner)")
    check_buckets(tuple(request.buckets))
    resolve_options(request.options, str(request.precision))


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """The packages ``request`` asks for (see export.py); each written atomically."""
    DESCRIPTION.require()
    check_request(request)
    return _export.export_packages(model, request, Path(out_dir))


def load(artifact: Artifact, options: RuntimeOptions) -> Runner:
    """macOS: Core ML's own runtime; elsewhere: the reference MIL executor (labelled as such, never timed)."""
    DESCRIPTION.require()
    from .runtime import COMPUTE_UNIT_NAMES, ExecutorRunner, PredictRunner, can_predict

    if can_predict():
        device = options.device if options.device != "cpu" else artifact.details.get("compute_units", "cpu")
        if device not in COMPUTE_UNIT_NAMES:
            raise UsageError(f"coreml runs on {', '.join(COMPUTE_UNIT_NAMES)}, not {device!r}")
        return PredictRunner(artifact, device)
    if options.device not in ("cpu", *COMPUTE_UNIT_NAMES):
        raise UsageError(f"coreml has no device {options.device!r}; on Linux it runs the MIL program check on the CPU")
    return ExecutorRunner(artifact, threads=options.threads or 1)


DEPLOYMENT_CHECK = "Core ML deployment target (the package's specification version)"


def where_it_runs(artifact: Artifact, options: RuntimeOptions) -> tuple[Placement, ...]:
    """What the package says about where it runs, read back from the saved file: its specification version (the
    oldest iOS/macOS that loads it), image I/O and states. Core ML chooses CPU, GPU or Neural Engine per op when an
    Apple device loads the package; nothing here runs it there (the note says so)."""
    from coremltools.proto import Model_pb2

    from .multifunction import package_model_file

    spec = Model_pb2.Model()
    spec.ParseFromString(package_model_file(Path(artifact.path)).read_bytes())
    names = [name for name, version in DEPLOYMENT_TARGETS.items() if version == spec.specificationVersion]
    facts = {"specification_version": spec.specificationVersion,
             "loads_on": " / ".join(n for n in names if n.startswith(("iOS", "macOS"))) + " or later",
             "deployment_target": artifact.details.get("deployment_target"),
             "image_input": bool(artifact.details.get("image_input")),
             "image_output": bool(artifact.details.get("image_output")),
             "states_inside": artifact.flavour.endswith("stateful")}
    note = ("read from the package; no Apple device ran it: which ops Core ML puts on the GPU or the Neural Engine "
            "is decided at load time on the device and is not proven here"
            + ("" if sys.platform == "darwin" else "; parity on this machine is the MIL program check"))
    return (Placement(DEPLOYMENT_CHECK, "the saved package (no device)", None, facts=facts, note=note),)
