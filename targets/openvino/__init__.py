"""OpenVINO target: IR (``.xml`` + ``.bin``) for Intel/AMD CPUs, iGPUs and NPUs; dynamic, static and stateful forms.

Route: our fp32 ONNX (``targets.onnx.export.export_graph`` with the refiner tail that OpenVINO's CPU plugin runs
fastest: ``phases`` where the upsampling factor is a whole number, else ``planar``; targets/traced/refiner_tail.py) ->
``openvino.convert_model`` -> precision step -> ``save_model``. The ONNX route is the only one that keeps a runtime
``downsample_ratio`` (the ratio becomes a Resize *scale*, see targets/traced/contract.py); tracing the module directly
freezes it. Using it for the static form too means one graph and one set of names for both, and it converts in ~3 s
where ``convert_model(torch_module)`` took ~12 s (docs/openvino.md).

- dynamic: any H x W and batch, runtime ratio; equals PyTorch at every ratio including 1.0.
- static: resolution and ratio fixed, every shape constant (the ratio is folded, not just the inputs ``reshape``d).
- stateful (option ``stateful``, default on): the same model with r1..r4 kept inside as ReadValue/Assign variables,
  zero-initialised from the input's shape; ``InferRequest.reset_state()`` starts a new clip.
- fp32: float32 weights. fp16: float16 weights (the CPU decompresses them and computes in f32; GPUs compute in f16).
- bf16: the fp16 IR, recorded as "run with INFERENCE_PRECISION_HINT=bf16"; the runner compiles it so. Any artifact can
  also be run in bf16 with ``RuntimeOptions(inference_precision="bf16")``; every label states the precision used.
- int8: NNCF post-training quantisation calibrated on rollout frames with the states the fp32 model produces
  (quantize.py); the ratio/size arithmetic, the refiner and the output projection stay float.

On CPUs with AVX512-BF16/AMX, OpenVINO's default inference precision is bf16, even for an fp32 IR (an IR cannot override
it: its ``runtime_options`` rt_info is ignored for this key). The runner always sets the precision.

Files: export.py (ONNX -> IR, precision, save), quantize.py (NNCF int8), stateful.py (ReadValue/Assign states), graph.py
(graph walks), runtime.py (compiled models and streams).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rvm_export.core.options import TargetOptions, option
from rvm_export.core.request import Artifact, ExportRequest, RuntimeOptions
from rvm_export.core.spec import Layout, Precision
from rvm_export.core.target import TargetDescription

from . import export as _export
from . import runtime as _runtime
from .runtime import (DYNAMIC_BF16, INFERENCE_PRECISIONS, OpenVinoRunner, OpenVinoStream, compile_config,
                      default_inference_precision, load_ir, read_contract)

__all__ = ["DESCRIPTION", "OpenVinoOptions", "missing", "check_request", "export", "load", "load_ir",
           "read_contract", "compile_config", "default_inference_precision", "OpenVinoRunner", "OpenVinoStream",
           "INFERENCE_PRECISIONS", "DYNAMIC_BF16", "where_it_runs"]


@dataclass(frozen=True)
class OpenVinoOptions(TargetOptions):
    """``--option openvino.KEY=VALUE``."""

    stateful: bool = option(True, "also write the stateful variant of each IR (states inside; bool, default true)")


DESCRIPTION = TargetDescription(
    name="openvino",
    summary="OpenVINO IR (.xml + .bin) for Intel/AMD CPUs, iGPUs and NPUs; dynamic, static and stateful",
    precisions=(Precision.FP32, Precision.FP16, Precision.BF16, Precision.INT8),
    default_precision=Precision.FP32,
    # bf16 only static: the dynamic IR computes resize coordinates from the ratio at run time, and bf16 rounds them
    dynamic_precisions=frozenset({Precision.FP32, Precision.FP16, Precision.INT8}),
    layouts=(Layout.NCHW,),
    devices=("cpu", "gpu", "npu", "auto", "hetero", "multi"),
    takes_opset=True,
    options=OpenVinoOptions,
    extra="openvino",
    modules=("openvino", "nncf", "onnx"),
    in_all=True,
    runtime_label="OpenVINO Runtime",
)
OPSETS = range(13, 22)  # it converts through our ONNX


def missing(device: str = "cpu") -> str | None:
    """None when openvino, nncf and onnx import and OpenVINO sees ``device`` (CPU, GPU, NPU...); else what is
    missing."""
    absent = DESCRIPTION.missing()
    if absent or device.lower() in ("cpu", "auto", "hetero", "multi"):
        return absent
    import openvino as ov

    devices = ov.Core().available_devices
    if device.upper().split(".")[0] not in {d.split(".")[0] for d in devices}:
        return f"OpenVINO sees no {device.upper()} device here (available: {', '.join(devices)}): install its driver"
    return None


def check_request(request: ExportRequest) -> None:
    """Raise UsageError for what this target cannot take (bf16 dynamic IRs among them), before any work."""
    from rvm_export.core.errors import UsageError

    if request.dynamic and request.precision == Precision.BF16:
        raise UsageError(DYNAMIC_BF16)
    DESCRIPTION.check_common(request)
    if request.opset not in OPSETS:
        raise UsageError(f"openvino converts through ONNX opset {OPSETS.start}..{OPSETS.stop - 1}, "
                         f"not {request.opset}")


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """Per spec the stateless IR and, unless ``stateful=false``, the stateful IR (each a directory)."""
    DESCRIPTION.require()
    check_request(request)
    return _export.export(model, request, Path(out_dir))


def load(artifact: Artifact, options: RuntimeOptions) -> OpenVinoRunner:
    """Compile the artifact on ``options.device`` at its parity inference precision (or the one asked for)."""
    DESCRIPTION.require()
    return _runtime.load(artifact, options)


def where_it_runs(artifact: Artifact, options: RuntimeOptions) -> tuple:
    """No accelerator check beyond the artifact's own parity: the CPU plugin is the artifact's own runtime; iGPU/NPU
    plugins are not on this machine; no separate check."""
    return ()
