"""int8 ONNX: ONNX Runtime static quantisation (QDQ, per-channel weights) of Conv only, calibrated on frames of
the generated scene with the states the fp32 PyTorch model really produces; resize/ratio arithmetic stays float."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from rvm_export.core.errors import ExportFailedError
from rvm_export.core.request import ExportRequest
from rvm_export.core.spec import IOSpec

__all__ = ["quantize_int8", "FLOAT_SCOPES"]


# Convs kept in float in int8 models: the output projection and the refiner write alpha and foreground directly,
# where one 8-bit step of their activation range is a visible error (pha MAD 0.026 -> 0.007 on the golden model);
# together they are well under 1 % of the multiply-adds.
FLOAT_SCOPES = ("/project_mat/", "/refiner/")


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
                    op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=float_heads)
    return onnx.load(str(out))
