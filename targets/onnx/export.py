"""ONNX export: trace the contract module, simplify, declare the contract's shapes, change precision, embed the
contract as metadata, save atomically. Other targets call :func:`export_graph` for an fp32 ONNX intermediate."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from rvm_export.core.atomic import atomic_path, staging_dir
from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import ExportFailedError
from rvm_export.core.metadata import artifact_metadata
from rvm_export.core.names import DEFAULT_OPSET, OUTPUT_NAMES, artifact_name, shape_label
from rvm_export.core.request import Artifact, ExportRequest
from rvm_export.core.rollout import calibration_sources
from rvm_export.core.spec import IOSpec, Precision
from targets.traced.contract import tail_description
from targets.traced.resample import describe_downsample

from .cpu_layout import cpu_layout
from .graph import to_fp16
from .mobile import fill_optional_inputs, write_ort
from .quantize import not_int8, quantize_int8

__all__ = ["NAME", "export", "export_graph"]

NAME = "onnx"


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """Write one dynamic model, or one static model per bucket, into ``out_dir`` (each written atomically).

    Static graphs are made for mobile providers (``mobile``; see :func:`export_graph`). With the ``ort`` option each
    model also gets its ORT-format twin (``.ort``, its own Artifact: same contract, its own parity). Returns one
    :class:`Artifact` per file; raises ExportFailedError when the exporter, simplifier, a precision step or the ORT
    conversion fails."""
    artifacts = []
    for spec in request.specs:
        path = Path(out_dir) / artifact_name(spec.variant, spec.refiner, shape_label(spec.bucket),
                                             str(request.precision), suffix=".onnx")
        details = export_graph(model, spec, path, request, tail="grouped_sum", ort_cpu=True,
                               mobile=not spec.dynamic)
        buckets = request.buckets if spec.dynamic else (spec.bucket,)
        flavour = "dynamic" if spec.dynamic else "static"
        artifacts.append(Artifact(NAME, path, request.precision, spec, flavour, tuple(buckets), details))
        if request.options.ort:
            ort_path = path.with_suffix(".ort")
            with atomic_path(ort_path) as tmp:
                write_ort(path, tmp)
            ort_details = {**details, "format": "ORT (convert_onnx_models_to_ort, optimization style Runtime, "
                                                "target platform arm)", "converted_from": path.name}
            artifacts.append(Artifact(NAME, ort_path, request.precision, spec, flavour, tuple(buckets), ort_details))
    return artifacts


def export_graph(model, spec: IOSpec, path: Path, request: ExportRequest | None = None,
                 precision: Precision = Precision.FP32, opset: int = DEFAULT_OPSET,
                 tail: str = "grouped", ort_cpu: bool = False, mobile: bool = False) -> dict[str, Any]:
    """Trace ``model`` behind the contract ``spec``, simplify, convert precision, embed metadata, save atomically.

    Other targets call this for an fp32 ONNX intermediate (``request=None``). ``tail``: the refiner tail's layout
    (targets/refiner_tail.py); ONNX Runtime runs grouped_sum fastest, OpenVINO asks for phases. ``ort_cpu``: the
    layout edits of targets/onnx/cpu_layout.py for ONNX Runtime's CPU provider (the channel padding in fp32 and
    int8, whose padded convolutions stay float).
    ``mobile``: trace under ``targets.traced.rewrites.mobile_friendly`` (hardswish, hardsigmoid and the channel mean
    as PyTorch's own elementary ops) and give Resize nodes explicit empty optional inputs (mobile.py), so NNAPI and
    both CoreML providers list every op; the ONNX target asks for it for its static graphs.
    Returns the details for the manifest.
    """
    import onnx

    if request is not None:
        precision, opset = request.precision, request.opset
    with staging_dir(path.parent) as work:
        raw = work / "traced.onnx"
        _trace(model, spec, raw, opset, tail, mobile)
        graph = _simplify(onnx.load(str(raw)), spec)
        _declare_shapes(graph, spec)
        layout = cpu_layout(graph, pad_channels=precision in (Precision.FP32, Precision.INT8)) if ort_cpu else None
        details: dict[str, Any] = {"opset": opset, "exporter": "torch.onnx (TorchScript-based, dynamo=False)",
                                   "simplifier": "onnxsim", "nodes": len(graph.graph.node),
                                   "io_dtype": "float32", "downsample": (
                                       describe_downsample(spec.bucket) if spec.bucket else
                                       "PyTorch's low-res size and taps for the float32 ratio input, computed "
                                       "exactly in float32 (targets/traced/exact_taps.py)"),
                                   "refiner_tail": tail_description(spec, tail),
                                   "mobile_ops": (
                                       "hardswish/hardsigmoid as Add, Clip, Mul, Div; channel means as Split, Add, "
                                       "Div; Resize optional inputs explicit" if mobile else "no")}
        if layout is not None:
            details["cpu_layout"] = layout
        if precision == Precision.FP16:
            graph = to_fp16(graph)
            details["compute"] = "float16 (ratio/size arithmetic float32)"
        elif precision == Precision.INT8:
            graph, kept = quantize_int8(model, spec, graph, work, request)
            details["compute"] = ("int8 QDQ Conv (U8S8, per-channel 7-bit weights); stem, first three blocks, "
                                  "ConvGRUs, decoder image-concat convs, output block, output projection, refiner and "
                                  "all non-Conv ops float32")
            details["recipe"] = ("ONNX Runtime quantize_static, QDQ, per-channel int8 weights in 7 bits "
                                 "(reduce_range), uint8 activations (U8S8), MinMax")
            details["calibration"] = calibration_sources()
            details["not_int8"] = not_int8(graph, kept)
        else:
            details["compute"] = "float32"
        if mobile:  # after the precision steps: the empty inputs must stay float32 initializers
            fill_optional_inputs(graph)
        shape_ops = sum(node.op_type == "Shape" for node in graph.graph.node)
        if not spec.dynamic and shape_ops:
            raise ExportFailedError(f"static ONNX still has {shape_ops} Shape node(s) after simplification")
        details["shape_ops"] = shape_ops
        meta = artifact_metadata(spec, precision.value,
                                 request.checkpoint_sha256 if request else None,
                                 request.checkpoint_label if request else "intermediate", opset=opset,
                                 io_dtype="float32", compute=details["compute"])
        del graph.metadata_props[:]
        for key, value in meta.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        graph.producer_name = "rvm-export"
        onnx.checker.check_model(graph)
        with atomic_path(path) as tmp:
            onnx.save(graph, str(tmp))
    return details


def _trace(model, spec: IOSpec, out: Path, opset: int, tail: str, mobile: bool = False) -> None:
    import contextlib

    import torch

    from targets.traced.contract import contract_module, example_inputs
    from targets.traced.rewrites import mobile_friendly

    wrapper = contract_module(model, spec, tail=tail).eval()
    bucket = spec.bucket or Bucket(256, 144, 0.5)  # tracing example for the dynamic graph: exercises the refiner
    inputs = example_inputs(spec, bucket)
    with torch.no_grad(), warnings.catch_warnings(), mobile_friendly() if mobile else contextlib.nullcontext():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapper, inputs, str(out), input_names=list(spec.input_names),
                              output_names=list(OUTPUT_NAMES), dynamic_axes=spec.dynamic_axes or None,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        except Exception as exc:  # the exporter raises many types; keep the message, name the stage
            raise ExportFailedError(f"torch.onnx.export failed for {spec.bucket.label if spec.bucket else 'dynamic'}"
                                    f": {exc}") from exc


def _simplify(graph, spec: IOSpec):
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(graph)
    except Exception as exc:
        raise ExportFailedError(f"onnxsim failed: {exc}") from exc
    if not ok:
        raise ExportFailedError("onnxsim could not validate the simplified graph")
    return simplified


def _declare_shapes(graph, spec: IOSpec) -> None:
    """Write the contract's shapes on the graph inputs and outputs: fixed sizes as values, dynamic axes under their
    per-tensor names (the exporter may leave a channel count it could not infer as an anonymous dimension)."""
    declared = {t.name: t.shape for t in (*spec.inputs, *spec.outputs)}
    for value in (*graph.graph.input, *graph.graph.output):
        shape = declared.get(value.name)
        if shape is None:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ExportFailedError(f"{value.name}: the graph has rank {len(dims)}, the contract {len(shape)}")
        for dim, want in zip(dims, shape):
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want
