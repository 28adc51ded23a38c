"""int8 ONNX: ONNX Runtime static quantisation (QDQ, per-channel int8 weights, int8 activations) of the Convs outside
FLOAT_SCOPES, calibrated on rollouts of generated and real footage with the states the fp32 PyTorch model really
produces (rvm_export.core.rollout.calibration_set); resize/ratio arithmetic stays float."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rvm_export.core.errors import ExportFailedError
from rvm_export.core.request import ExportRequest
from rvm_export.core.spec import IOSpec

__all__ = ["quantize_int8", "not_int8", "float_convs", "FLOAT_SCOPES", "QUANTISED_OPS", "ACTIVATION_TYPE"]


# Convs kept in float in int8 models, per backbone (module scopes = the state-dict names, a public contract; the
# export refuses to quantise when one matches no Conv). The output projection and the refiner write alpha and
# foreground directly, where one 8-bit step of their activation range is a visible error (pha MAD 0.026 -> 0.007 on
# the golden model); the ConvGRUs and MobileNetV3's stem + blocks 1-4, as TFLite's `mixed` recipe (measured here,
# smoke-trained weights, 256x144 @ 1, 80 frames + 40 of carphone: docs/onnx.md "int8 recipe").
FLOAT_SCOPES = {"mobilenetv3": ("/project_mat/", "/refiner/", "/gru/", "/backbone/features.0/",
                                "/backbone/features.1/", "/backbone/features.2/", "/backbone/features.3/",
                                "/backbone/features.4/"),
                "resnet50": ("/project_mat/", "/refiner/", "/gru/")}
WHY_FLOAT = {"/project_mat/": "recipe: the 16->4 output head writes alpha directly (pha MAD 2.6e-2 -> 7e-3 on the "
                              "golden weights with it float)",
             "/refiner/": "recipe: the deep guided filter writes full-resolution alpha/foreground; its box-filter "
                          "variances are differences of nearly equal means",
             "/gru/": "recipe: the ConvGRUs' states are requantised and fed back every frame (measured: docs/onnx.md)",
             "/backbone/features.0/": "recipe: MobileNetV3's stem and blocks 1-4 (the decoder's finest skips, "
                                      "3.4 % of the multiply-adds): their int8 weights carry most of the smoke "
                                      "checkpoint's error (docs/onnx.md)"}
for _block in (1, 2, 3, 4):
    WHY_FLOAT[f"/backbone/features.{_block}/"] = WHY_FLOAT["/backbone/features.0/"]
# int8 activations (S8S8), not uint8: with uint8 activations and int8 weights (U8S8) ONNX Runtime's AVX2 kernels use
# VPMADDUBSW, whose 16-bit pair sums saturate (ONNX Runtime's quantisation guide; CPUs without VNNI). Measured on
# this AVX2 machine, same ranges and scopes: smoke pha MAD 3.8e-2 (U8S8) -> 2.3e-2 (S8S8) on the scene.
ACTIVATION_TYPE = "QInt8"
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
    float_heads = float_convs(onnx.load(str(pre)), spec.variant)
    quantize_static(str(pre), str(out), _FeedReader(feeds, spec.input_names), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(QUANTISED_OPS), per_channel=True,
                    activation_type=getattr(QuantType, ACTIVATION_TYPE), weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=float_heads)
    return onnx.load(str(out))


def float_convs(graph, variant: str) -> list[str]:
    """Names of the Conv nodes under this variant's FLOAT_SCOPES. Raises ExportFailedError when a scope other than
    the refiner (absent at ratio 1 static graphs) matches no Conv: renamed modules must not silently become int8."""
    scopes = FLOAT_SCOPES.get(variant, FLOAT_SCOPES["resnet50"])
    convs = [n.name for n in graph.graph.node if n.op_type == "Conv"]
    missing = [s for s in scopes if s != "/refiner/" and not any(s in c for c in convs)]
    if missing:
        raise ExportFailedError(f"no Conv under {missing} in the ONNX graph: the node names changed; refusing to "
                                "quantise layers that must stay float")
    return [c for c in convs if any(s in c for s in scopes)]


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
            scope = next((s for s in WHY_FLOAT if s in node.name), None)
            entries.append({"layer": node.name, "op": "Conv", "kept_as": "float32",
                            "reason": WHY_FLOAT.get(scope, "excluded from quantisation") if scope else
                            "no calibration range for its input"})
        elif node.op_type not in _NOT_COMPUTE:
            others[node.op_type] += 1
    for op, count in others.most_common():
        entries.append({"layer": f"all {op} nodes ({count})", "op": op, "kept_as": "float32", "reason": OTHER_OPS})
    return entries
