"""int8 ONNX: ONNX Runtime static quantisation (QDQ, per-channel 7-bit weights, uint8 activations: U8S8 with
``reduce_range``) of Conv only, calibrated on rollouts of the generated scene and a real clip with the states the fp32
PyTorch model really produces (:func:`rvm_export.core.rollout.calibration_set`); resize/ratio arithmetic stays float.

Why U8S8 with 7-bit weights (decision 59): ONNX Runtime's x64 CPU provider has no int8-activation (S8S8) convolution
kernel; its optimiser rewrites int8 Q/DQ pairs to uint8 where it can and leaves every Conv whose input and output
types then disagree unfused: DequantizeLinear -> float Conv (NCHW, not even the blocked kernel) -> QuantizeLinear,
no faster than the fp32 file (the earlier S8S8 file at 1080p: 28 of 55 int8 Convs fused, 0.86x-1.02x of fp32). U8S8
fuses all of them into QLinearConv. Its AVX2 kernel (no VNNI) sums u8 x s8 products pairwise in int16
(``VPMADDUBSW``), which saturates with full-range weights (alpha MAD 3.5e-2 on the smoke weights); 7-bit weights
bound a pair sum by 2 x 255 x 64 = 32640 < 32767, the remedy ONNX Runtime's quantisation guide gives for CPUs
without VNNI. On a VNNI CPU or an NPU the file is the same and loses one bit of weight precision.

Convs kept in float (:func:`float_convs`), the recipe OpenVINO's int8 IR uses (targets/openvino/quantize.py),
found from the graph's structure and the module scopes in the node names:
- the head: every Conv that no recurrent state output depends on: the output block ``decode0``, ``project_mat`` and
  the whole refiner (its box filters average the guide and its variances are differences of nearly equal means,
  which 8 bits destroy). decode0 was int8 until measured over 1000 frames at 256x144 @ 1 (golden weights): its one
  int8 convolution was alpha MAD 1.17e-2 of the file's error, 9.4e-5 with it float;
- the stem: the backbone's first Conv (it reads the frame itself);
- FLOAT_SCOPES: the ConvGRUs (quantised, the recurrent states drift) and MobileNetV3's first three blocks (the
  decoder's finest skips).
Node names alone did not find the refiner before: the traced wrapper calls it outside the ``/refiner/`` scope, so its
convolutions (``/box_filter/Conv``, ``/conv/conv.0/Conv``...) were quantised.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rvm_export.core.errors import ExportFailedError
from rvm_export.core.request import ExportRequest
from rvm_export.core.spec import IOSpec

from .cpu_layout import PAD_SUFFIX

__all__ = ["quantize_int8", "float_convs", "not_int8", "FLOAT_SCOPES", "OTHER_OPS"]

# Module scopes whose Convs stay float (node-name substrings), as for OpenVINO's int8 IR.
FLOAT_SCOPES = {"mobilenetv3": ("/gru/", "/backbone/features.1/", "/backbone/features.2/", "/backbone/features.3/"),
                "resnet50": ("/gru/",)}


def float_convs(graph, variant: str = "mobilenetv3") -> dict[str, str]:
    """``{node name: why}`` for every Conv of the fp32 ModelProto ``graph`` that stays float (module docstring).

    Raises ExportFailedError when the graph lacks the state outputs r1o..r4o (the head cannot be found)."""
    from rvm_export.core.names import STATE_OUTPUTS

    producers = {out: node for node in graph.graph.node for out in node.output}
    if not all(name in producers for name in STATE_OUTPUTS):
        raise ExportFailedError("cannot find the state outputs r1o..r4o in the ONNX graph to keep its head float")
    feeds_a_state: set[str] = set()  # nodes by their first output's name (unique; protobuf wrappers are not)
    pending = [producers[name] for name in STATE_OUTPUTS]
    while pending:
        node = pending.pop()
        if node.output[0] in feeds_a_state:
            continue
        feeds_a_state.add(node.output[0])
        pending.extend(producers[name] for name in node.input if name in producers)
    convs = [node for node in graph.graph.node if node.op_type == "Conv"]
    kept: dict[str, str] = {}
    if convs:
        kept[convs[0].name] = "stem: the backbone's first convolution reads the frame"
    scopes = FLOAT_SCOPES.get(variant, FLOAT_SCOPES["mobilenetv3"])
    padded = {n.output[0] for n in convs if n.name.endswith(PAD_SUFFIX)}
    concat_of = {out: n for n in graph.graph.node if n.op_type == "Concat" for out in n.output}
    for node in convs:
        scope = next((s for s in scopes if s in node.name), None)
        source = concat_of.get(node.input[0])
        if node.name.endswith(PAD_SUFFIX) or (source is not None and padded & set(source.input)):
            kept[node.name] = ("speed: a decoder convolution over concat([x, skip, image]), zero-padded to a "
                               "multiple of 8 channels, runs faster in ONNX Runtime's float NCHWc kernel than int8")
        elif node.output[0] not in feeds_a_state:
            kept[node.name] = ("head: writes alpha/foreground after the last state (decode0, project_mat, refiner); "
                               "decode0's int8 convolution alone was alpha MAD 1.2e-2 on the golden weights")
        elif scope is not None:
            kept[node.name] = f"scope {scope}: " + ("recurrent state drift" if scope == "/gru/" else
                                                    "the decoder's finest skip")
    return kept


class _FeedReader:
    """onnxruntime CalibrationDataReader over precomputed rollout feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], names: tuple[str, ...]) -> None:
        self._items = iter([{k: v for k, v in f.items() if k in names} for f in feeds])

    def get_next(self):
        return next(self._items, None)


def quantize_int8(model, spec: IOSpec, graph, work: Path, request: ExportRequest):
    """ONNX Runtime static quantisation (QDQ, U8S8, 7-bit per-channel weights) of every Conv not in
    :func:`float_convs`, calibrated on rollouts with real states (:func:`rvm_export.core.rollout.calibration_set`).
    Returns ``(quantised ModelProto, {float Conv name: why})``. Raises ExportFailedError without a request."""
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
    kept = float_convs(onnx.load(str(pre)), spec.variant)
    quantize_static(str(pre), str(out), _FeedReader(feeds, spec.input_names), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, reduce_range=True, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=list(kept))
    return onnx.load(str(out)), kept


OTHER_OPS = ("ONNX Runtime QDQ here quantises Conv only (op_types_to_quantize): this op runs in float between "
             "DequantizeLinear/QuantizeLinear; an int8-only accelerator fuses or falls back per its own rules")
_NOT_COMPUTE = {"QuantizeLinear", "DequantizeLinear", "Constant", "Shape", "Gather", "Unsqueeze", "Concat",
                "Reshape", "Slice", "Split", "Identity", "Cast"}


def not_int8(graph, kept: dict[str, str]) -> list[dict[str, str]]:
    """The layers of the QDQ ModelProto ``graph`` that do not run in int8, as ``{layer, op, kept_as, reason}``: each
    Conv without a DequantizeLinear weight, with its reason from ``kept`` (:func:`float_convs` of the fp32 graph),
    then one entry per other op type that carries data (element-wise, activations, resizes, pools: float by the
    recipe, counted)."""
    from collections import Counter

    dequantised = {o for n in graph.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    entries: list[dict[str, str]] = []
    others: Counter[str] = Counter()
    for node in graph.graph.node:
        if node.op_type == "Conv":
            if len(node.input) > 1 and node.input[1] in dequantised:
                continue
            entries.append({"layer": node.name, "op": "Conv", "kept_as": "float32",
                            "reason": kept.get(node.name, "no calibration range for its input")})
        elif node.op_type not in _NOT_COMPUTE:
            others[node.op_type] += 1
    for op, count in others.most_common():
        entries.append({"layer": f"all {op} nodes ({count})", "op": op, "kept_as": "float32", "reason": OTHER_OPS})
    return entries
