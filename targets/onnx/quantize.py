"""int8 ONNX: ONNX Runtime static quantisation (QDQ, per-channel weights) of Conv only, calibrated on frames of
the generated scene with the states the fp32 PyTorch model really produces; resize/ratio arithmetic stays float."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rvm_export.core.errors import ExportFailedError
from rvm_export.core.request import ExportRequest
from rvm_export.core.spec import IOSpec

__all__ = ["quantize_int8", "not_int8", "FLOAT_SCOPES", "QUANTISED_OPS"]


# Convs kept in float in int8 models: the output projection and the refiner write alpha and foreground directly,
# where one 8-bit step of their activation range is a visible error (pha MAD 0.026 -> 0.007 on the golden model);
# together they are well under 1 % of the multiply-adds.
FLOAT_SCOPES = ("/project_mat/", "/refiner/")
WHY_FLOAT = {"/project_mat/": "recipe: the 16->4 output head writes alpha directly (pha MAD 2.6e-2 -> 7e-3 on the "
                              "golden weights with it float)",
             "/refiner/": "recipe: the deep guided filter writes full-resolution alpha/foreground; its box-filter "
                          "variances are differences of nearly equal means"}
QUANTISED_OPS = ("Conv",)  # ONNX Runtime's op_types_to_quantize: QDQ pairs around Conv only
OTHER_OPS = ("ONNX Runtime QDQ here quantises Conv only (op_types_to_quantize): this op runs in float between "
             "DequantizeLinear/QuantizeLinear; an int8-only accelerator fuses or falls back per its own rules")
_NOT_COMPUTE = {"QuantizeLinear", "DequantizeLinear", "Constant", "Shape", "Gather", "Unsqueeze", "Concat",
                "Reshape", "Slice", "Split", "Identity", "Cast"}


class _FeedReader:
    """onnxruntime CalibrationDataReader over precomputed rollout feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], names: tuple[str, ...]) -> None:
        self._items = iter([{k: v for k, v in f.items() if k in names} for f in feeds])

    def get_next(self):
        return next(self._items, None)


def quantize_int8(model, spec: IOSpec, graph, work: Path, request: ExportRequest):
    """ONNX Runtime static quantisation (QDQ) of the Convs outside FLOAT_SCOPES, calibrated on a rollout with real
    states (:func:`rvm_export.core.rollout.calibration_set`). Returns the quantised ModelProto."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from rvm_export.core.rollout import calibration_set

    if request is None:
        raise ExportFailedError("int8 needs the export request (its buckets calibrate the model)")
    buckets = (spec.bucket,) if spec.bucket else request.buckets
    feeds = calibration_set(model, buckets, request.calibration_frames)
    fp32 = work / "fp32.onnx"
    pre = work / "pre.onnx"
    out = work / "int8.onnx"
    onnx.save(graph, str(fp32))
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    float_heads = [n.name for n in onnx.load(str(pre)).graph.node
                   if n.op_type == "Conv" and any(k in n.name for k in FLOAT_SCOPES)]
    quantize_static(str(pre), str(out), _FeedReader(feeds, spec.input_names), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTISED_OPS), per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=float_heads)
    return onnx.load(str(out))


def not_int8(graph) -> list[dict[str, str]]:
    """The layers of a QDQ ModelProto that do not run in int8, as ``{layer, op, kept_as, reason}``: each Conv
    without a DequantizeLinear weight (the FLOAT_SCOPES heads, named), then one entry per other op type that carries
    data (element-wise, activations, resizes, pools: float by the recipe, counted)."""
    from collections import Counter

    dequantised = {o for n in graph.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    entries: list[dict[str, str]] = []
    others: Counter[str] = Counter()
    for node in graph.graph.node:
        if node.op_type == "Conv":
            if len(node.input) > 1 and node.input[1] in dequantised:
                continue
            scope = next((s for s in FLOAT_SCOPES if s in node.name), None)
            entries.append({"layer": node.name, "op": "Conv", "kept_as": "float32",
                            "reason": WHY_FLOAT.get(scope, "excluded from quantisation") if scope else
                            "no calibration range for its input"})
        elif node.op_type not in _NOT_COMPUTE:
            others[node.op_type] += 1
    for op, count in others.most_common():
        entries.append({"layer": f"all {op} nodes ({count})", "op": op, "kept_as": "float32", "reason": OTHER_OPS})
    return entries
