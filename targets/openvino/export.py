"""OpenVINO export: our fp32 ONNX -> ``openvino.convert_model`` -> precision step -> ``save_model``, plus the
stateful variant (states inside as ReadValue/Assign). See the package docstring for the forms and precisions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rvm_export.core.atomic import atomic_path, staging_dir
from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import ExportFailedError
from rvm_export.core.metadata import artifact_metadata
from rvm_export.core.names import OUTPUT_NAMES, artifact_name, shape_label
from rvm_export.core.request import Artifact, ExportRequest
from rvm_export.core.spec import IOSpec, Precision

__all__ = ["export", "default_inference_precision", "META_SECTION"]

NAME = "openvino"
META_SECTION = "framework"  # where convert_model puts the ONNX metadata; ours overwrites those keys


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """Per spec (one dynamic, or one static per bucket): the stateless IR and, unless disabled, the stateful IR.

    Each artifact is a directory holding ``<stem>.xml`` and ``<stem>.bin``, written atomically. Raises
    ExportFailedError when a conversion step fails.
    """
    artifacts = []
    for spec in request.specs:
        artifacts += _export_spec(model, spec, request, Path(out_dir))
    return artifacts


def _export_spec(model, spec: IOSpec, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    import openvino as ov

    from targets.onnx.export import export_graph

    with staging_dir(out_dir) as work:
        onnx_path = work / "fp32.onnx"
        onnx_details = export_graph(model, spec, onnx_path, None, Precision.FP32, request.opset,
                                    tail="phases")
        try:
            ov_model = ov.convert_model(str(onnx_path))
        except Exception as exc:
            raise ExportFailedError(f"openvino.convert_model failed on the ONNX intermediate: {exc}") from exc
        _name_contract_io(ov_model, spec)
        details: dict[str, Any] = {"converter": f"openvino.convert_model {ov.get_version()} from ONNX "
                                                f"(opset {request.opset}, {onnx_details['exporter']})",
                                   "io_dtype": "float32", "refiner_tail": onnx_details["refiner_tail"]}
        if request.precision == Precision.INT8:
            from .quantize import quantize

            ov_model, quant_details = quantize(ov_model, model, spec, request)
            details.update(quant_details)
        details.update(_precision_details(request.precision))
        buckets = request.buckets if spec.dynamic else (spec.bucket,)
        flavour = "dynamic" if spec.dynamic else "static"
        artifacts = [_save(ov_model, spec, request, out_dir, flavour, buckets, details)]
        if request.options.stateful:
            from .stateful import make_stateful, stateful_spec

            stateful = make_stateful(ov_model.clone(), spec)
            sspec = stateful_spec(spec)
            note = ("states inside the IR as ReadValue/Assign variables r1..r4: zeros (from the input's shape) on "
                    "the first frame and after InferRequest.reset_state()")
            artifacts.append(_save(stateful, sspec, request, out_dir, "stateful", buckets, {**details, "states": note}))
    return artifacts


def default_inference_precision(precision: Precision) -> str:
    """The inference precision an artifact's parity is checked with: bf16 for bf16 artifacts, f32 otherwise."""
    return "bf16" if precision == Precision.BF16 else "f32"


def _precision_details(precision: Precision) -> dict[str, Any]:
    weights = {Precision.FP32: "float32", Precision.FP16: "float16 (the CPU decompresses them to f32 at load)",
               Precision.BF16: "float16 (rounded to bf16 by the CPU at load)",
               Precision.INT8: "int8 (per-channel, FakeQuantize) where quantised, float32 elsewhere"}[precision]
    compute = {Precision.FP32: "f32", Precision.FP16: "f32 on CPU (f16 on Intel GPU)", Precision.BF16: "bf16",
               Precision.INT8: "int8 convolutions, other ops at the inference precision (f32 for parity)"}[precision]
    return {"weights": weights, "compute": compute, "inference_precision": default_inference_precision(precision)}


def _name_contract_io(ov_model, spec: IOSpec) -> None:
    """Make every input/output carry exactly its contract name; refuse a graph whose order or names drifted."""
    expected_in = list(spec.input_names)
    got_in = [sorted(p.get_names()) for p in ov_model.inputs]
    if len(got_in) != len(expected_in) or any(n not in names for n, names in zip(expected_in, got_in)):
        raise ExportFailedError(f"OpenVINO model inputs {got_in} do not match the contract {expected_in}")
    got_out = [sorted(o.get_names()) for o in ov_model.outputs]
    if len(got_out) != len(OUTPUT_NAMES) or any(n not in names for n, names in zip(OUTPUT_NAMES, got_out)):
        raise ExportFailedError(f"OpenVINO model outputs {got_out} do not match the contract {list(OUTPUT_NAMES)}")
    for port, name in zip(ov_model.inputs, expected_in):
        port.get_tensor().set_names({name})
        port.get_node().set_friendly_name(name)
    for port, name in zip(ov_model.outputs, OUTPUT_NAMES):
        port.get_tensor().set_names({name})


def _save(ov_model, spec: IOSpec, request: ExportRequest, out_dir: Path, flavour: str,
          buckets: tuple[Bucket, ...], details: dict[str, Any]) -> Artifact:
    import openvino as ov

    stem = artifact_name(spec.variant, spec.refiner, shape_label(spec.bucket), str(request.precision),
                         "stateful" if flavour == "stateful" else "")
    details = {**details, "xml": f"{stem}.xml", "flavour": flavour, "openvino": ov.get_version()}
    meta = artifact_metadata(spec, request.precision.value, request.checkpoint_sha256, request.checkpoint_label,
                             opset=request.opset, io_dtype="float32", compute=details["compute"],
                             inference_precision=details["inference_precision"], flavour=flavour,
                             openvino=ov.get_version())
    for key, value in meta.items():
        ov_model.set_rt_info(value, [META_SECTION, key])
    final = out_dir / f"{stem}_openvino"
    compress = request.precision in (Precision.FP16, Precision.BF16)
    with atomic_path(final) as tmp:
        tmp.mkdir()
        try:
            ov.save_model(ov_model, str(tmp / f"{stem}.xml"), compress_to_fp16=compress)
        except Exception as exc:
            raise ExportFailedError(f"openvino.save_model failed for {stem}: {exc}") from exc
    return Artifact(NAME, final, request.precision, spec, flavour, tuple(buckets), details)
