"""ONNX target: dynamic and static graphs, fp32 / fp16 / int8, run on ONNX Runtime.

- dynamic: any H x W and batch, runtime ``downsample_ratio`` input; equals PyTorch at every ratio including 1.0
  (see targets/traced/contract.py for the refiner gate). Exported with the TorchScript-based exporter, which keeps
  the ratio as a graph input (the dynamo exporter cannot, see docs/onnx.md).
- static: resolution and ratio fixed, no dynamic axes; after simplification no shape arithmetic is left
  (no Shape node: what TensorRT and fixed-shape runtimes want).
- fp16: weights and activations in half precision with float32 I/O (``Cast`` at the boundary), so fed-back states
  stay float32; weights are stored float16, and the ratio/size arithmetic stays float32 and reads the float32 ratio
  (a half-precision ratio would change floor(H*r): targets/onnx/graph.py).
- int8: ONNX Runtime static quantisation (QDQ, per-channel weights) of Conv only, calibrated on frames of the
  generated scene with the states the fp32 PyTorch model really produces; resize/ratio arithmetic stays float.
- mobile (static graphs): every op one that NNAPI and both CoreML providers of ONNX Runtime list (hardswish,
  hardsigmoid and the channel mean traced as PyTorch's own elementary ops; Resize inputs all shaped), checked per
  artifact with ONNX Runtime's mobile usability checker (``where_it_runs``); ``--option onnx.ort=true`` also writes
  the ORT format (``.ort``) beside each ``.onnx``, with its own parity.

Files: export.py (trace, simplify, metadata), graph.py (fp16 conversion), quantize.py (int8), runtime.py (ONNX
Runtime sessions and streams), mobile.py (the mobile usability checker, Resize inputs, the ORT format).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from rvm_export.core.options import TargetOptions, option
from rvm_export.core.placement import Placement
from rvm_export.core.request import Artifact, ExportRequest, RuntimeOptions
from rvm_export.core.spec import Layout, Precision
from rvm_export.core.target import TargetDescription

from . import export as _export
from . import runtime as _runtime
from .export import export_graph
from .runtime import OnnxRunner, OnnxStream, load_foreign, read_contract

__all__ = ["DESCRIPTION", "OnnxOptions", "missing", "check_request", "export", "load", "where_it_runs", "export_graph",
           "read_contract", "load_foreign", "OnnxRunner", "OnnxStream"]


@dataclass(frozen=True)
class OnnxOptions(TargetOptions):
    """``--option onnx.KEY=VALUE``."""

    ort: bool = option(False, "also write each model in the ORT format (.ort, for ONNX Runtime Mobile and minimal "
                              "builds) beside its .onnx, checked like any artifact")


DESCRIPTION = TargetDescription(
    name="onnx",
    summary="ONNX graphs (dynamic or static) for ONNX Runtime, TensorRT and other ONNX runtimes",
    precisions=(Precision.FP32, Precision.FP16, Precision.INT8),
    default_precision=Precision.FP32,
    dynamic_precisions=frozenset({Precision.FP32, Precision.FP16, Precision.INT8}),
    layouts=(Layout.NCHW,),
    devices=("cpu", "cuda", "tensorrt"),
    takes_opset=True,
    options=OnnxOptions,
    extra="onnx",
    modules=("onnx", "onnxruntime", "onnxsim"),
    in_all=True,
    runtime_label="ONNX Runtime",
)
OPSETS = range(13, 22)  # opsets it can write: Resize with scales since 13; 21 is the newest ONNX Runtime 1.32 takes


def missing(device: str = "cpu") -> str | None:
    """None when onnx, onnxruntime and onnxsim import and ONNX Runtime has the execution provider ``device`` needs
    (cuda: CUDAExecutionProvider; tensorrt: TensorrtExecutionProvider); else what is missing and the install line."""
    absent = DESCRIPTION.missing()
    if absent or device not in ("cuda", "tensorrt"):
        return absent
    import onnxruntime as ort

    wanted = _runtime.PROVIDERS[device][0]
    if wanted not in ort.get_available_providers():
        return (f"ONNX Runtime's {wanted} is not available here (this onnxruntime has "
                f"{', '.join(ort.get_available_providers())}): pip install onnxruntime-gpu instead of onnxruntime")
    return None


def check_request(request: ExportRequest) -> None:
    """Raise UsageError for a precision, layout or opset this target cannot take."""
    from rvm_export.core.errors import UsageError

    DESCRIPTION.check_common(request)
    if request.opset not in OPSETS:
        raise UsageError(f"onnx opset {request.opset} is not supported; choose {OPSETS.start}..{OPSETS.stop - 1}")


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """One dynamic graph, or one static graph per bucket (see the module docstring)."""
    DESCRIPTION.require()
    check_request(request)
    if not isinstance(request.options, OnnxOptions):  # a request built without options gets the defaults
        request = replace(request, options=OnnxOptions())
    return _export.export(model, request, Path(out_dir))


def load(artifact: Artifact, options: RuntimeOptions) -> OnnxRunner:
    """An ONNX Runtime session over the artifact (``options.device``: cpu, cuda, tensorrt)."""
    DESCRIPTION.require()
    return _runtime.load(artifact, options)


def where_it_runs(artifact: Artifact, options: RuntimeOptions) -> tuple[Placement, ...]:
    """ONNX Runtime's mobile usability checker per provider (NNAPI, CoreML NeuralNetwork, CoreML MLProgram) for the
    artifact's ``.onnx``; an ``.ort`` file is reported with the counts of the ``.onnx`` it was converted from (the
    checker reads ONNX only). Empty without onnxruntime."""
    from dataclasses import replace

    from rvm_export.core.target import missing_modules

    from .mobile import usability

    if missing_modules(("onnxruntime", "onnx")):
        return ()
    path = Path(artifact.path)
    if path.suffix != ".ort":
        return usability(path)
    source = path.with_name(artifact.details["converted_from"])
    return tuple(replace(p, note=f"counts of {source.name}, which this .ort was converted from; {p.note}")
                 for p in usability(source))
