"""int8 OpenVINO IR through NNCF post-training quantisation (``nncf.quantize`` on the fp32 ``ov.Model``).

Calibration data: frames of the generated scene at each bucket the IR serves, each paired with the states the fp32
PyTorch model really produces over that rollout (:func:`rvm_export.reference.calibration_feeds`). Random states make
the activation ranges meaningless (TOOLCHAIN.md measured an error of about 1 that way).

Kept in float (NNCF ignored scope); the first three found from the graph's structure, the last by module scope
(the state-dict names, a public contract: the export refuses to quantise if a scope is missing):
- the ratio/size arithmetic: every node computed from ``downsample_ratio`` alone (sampling taps, the ratio == 1
  refiner gate). A quantised ratio changes floor(H*r) and the gate;
- the input stem: everything between the inputs and the backbone's first convolution, and that convolution (the
  ratio downsample, however built, and the input normalisation; see input_stem_nodes);
- the head: every node that no recurrent state depends on (``project_mat``, the whole refiner, the composition),
  except the output block's 3x3 convolutions (``decode0``, about a fifth of the multiply-adds), which stay int8.
  The refiner's variances are differences of nearly equal box means, which 8 bits destroy; ``project_mat`` (the
  16 -> 4 output convolution, ~0.05 % of the multiply-adds) quantised alone gave pha MAD 8.6e-3 and fgr MAD 2.5e-2
  on the golden weights at 512x288 @ 0.5, where everything else quantised together gave 3.8e-3 and 6.4e-3;
- FLOAT_SCOPES: the ConvGRUs and MobileNetV3's first four blocks (measured: see FLOAT_SCOPES, docs/openvino.md).

NNCF options (measured at 256x144 @ 1 on the smoke-trained weights, docs/openvino.md "int8 at ratio 1"): bias
correction off (BIAS_CORRECTION), NNCF's default overflow fix (OVERFLOW_FIX).
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from rvm_export.core.errors import ExportFailedError
from rvm_export.core.names import RATIO, SRC, STATE_OUTPUTS
from rvm_export.core.spec import IOSpec

from .graph import ancestors, descendants, stem_convolution

__all__ = ["quantize", "float_nodes", "float_node_reasons", "not_int8", "ratio_path_nodes", "input_stem_nodes",
           "scope_nodes", "FLOAT_SCOPES"]

_NOT_COMPUTE = ("Parameter", "Constant", "Result")
# Module scopes kept float (measured on the smoke-trained checkpoint; docs/openvino.md): the ConvGRUs (quantised, the
# recurrent states drift: pha MAD 0.039 -> 0.017 without them, 512x288 @ 0.5, 60 frames) and, for MobileNetV3, the
# first three blocks, whose /2 and /4 outputs are the decoder's finest skips (0.017 -> 0.008), and block 4, the
# strided block that opens the /8 stage (over 1000 frames at 256x144 @ 1 the scene's error rose by 9.4e-3 per 1000
# frames with it int8, 3.1e-3 float; decision 60).
FLOAT_SCOPES = {"mobilenetv3": ("/gru/", "/backbone/features.1/", "/backbone/features.2/", "/backbone/features.3/",
                                 "/backbone/features.4/"),
                "resnet50": ("/gru/",)}
PRESET = "mixed"  # symmetric weights, asymmetric activations: most activations here are one-sided (ReLU, sigmoid)
# Bias correction off: NNCF's fast bias correction shifts each int8 layer's bias so that the calibration frames' mean
# output matches float; on the smoke weights at 256x144 @ 1 it doubled the alpha error (scene 5.4e-3 -> 1.07e-2,
# growing over the rollout). OVERFLOW_FIX "first_layer_only" (NNCF's default: 7-bit weights only where the first
# quantised layers read the input): "enable" (7-bit weights everywhere, so the u8 x s8 pair sums of AVX2 without
# VNNI cannot saturate) removed the kernel's share of the error but cost more in weight precision (5.4e-3 -> 6.5e-3).
BIAS_CORRECTION = False
OVERFLOW_FIX = "first_layer_only"
_STOP_AT = ("Interpolate", "Select")  # the ratio's influence ends in these (they are kept float themselves)


def quantize(ov_model, torch_model, spec: IOSpec, request) -> tuple[Any, dict[str, Any]]:
    """Return the quantised model and the details for the manifest."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

    from rvm_export.core.rollout import calibration_set, calibration_sources

    buckets = (spec.bucket,) if spec.bucket is not None else tuple(request.buckets)
    feeds = calibration_set(torch_model, buckets, request.calibration_frames)
    names = [p.get_any_name() for p in ov_model.inputs]
    dataset = nncf.Dataset(feeds, lambda item: {name: item[name] for name in names})
    reasons = float_node_reasons(ov_model, spec.variant)
    kept = sorted(reasons)
    advanced = AdvancedQuantizationParameters(overflow_fix=OverflowFix(OVERFLOW_FIX),
                                              disable_bias_correction=not BIAS_CORRECTION)
    try:
        quantized = nncf.quantize(ov_model, dataset, subset_size=len(feeds), preset=nncf.QuantizationPreset.MIXED,
                                  fast_bias_correction=True,
                                  ignored_scope=nncf.IgnoredScope(names=kept, validate=False),
                                  advanced_parameters=advanced)
    except Exception as exc:
        raise ExportFailedError(f"NNCF quantisation failed: {exc}") from exc
    counts = Counter(op.get_type_name() for op in quantized.get_ordered_ops())
    if not counts["FakeQuantize"]:
        raise ExportFailedError("NNCF inserted no FakeQuantize: the int8 IR would be a float IR")
    return quantized, {
        "quantizer": f"NNCF {nncf.__version__} post-training, preset {PRESET}, overflow fix {OVERFLOW_FIX}, "
                     f"bias correction {'on' if BIAS_CORRECTION else 'off'}",
        "calibration": f"{len(feeds)} frames at {', '.join(b.label for b in buckets)}: {calibration_sources()}",
        "float_scope": "ratio/size arithmetic, input stem to the first conv, ConvGRUs, "
                       f"{', '.join(FLOAT_SCOPES[spec.variant])}, and after the last state everything but "
                       "decode0's 3x3 convs",
        "fake_quantize_nodes": counts["FakeQuantize"],
        "float_nodes": len(kept),
        "recipe": f"NNCF post-training {PRESET} (int8 weights and activations) with an ignored scope",
        "not_int8": not_int8(quantized, reasons),
    }


def float_nodes(ov_model, variant: str = "mobilenetv3") -> list[str]:
    """Friendly names of every node NNCF must leave in float (see the module docstring): the keys of
    :func:`float_node_reasons`."""
    return sorted(float_node_reasons(ov_model, variant))

WHY = {"head": "after the last recurrent state (project_mat, the refiner, the composition): differences of "
                "nearly equal box means and the alpha head lose too much at 8 bits (module docstring)",
       "stem": "input stem: ratio downsample, normalisation and the first conv (int8 form measured 20x worse in the "
               "dynamic IR)",
       "ratio": "computed from downsample_ratio (a quantised ratio changes floor(H*r) and the refiner gate)",
       "nncf": "NNCF placed no FakeQuantize on its input (it reads a concatenation with a float ConvGRU output), "
               "so it runs in float",
       "scope": "recipe (measured): FLOAT_SCOPES, the ConvGRUs (recurrent states drift: 3.9e-2 -> 1.7e-2) and "
                "MobileNetV3 blocks 1-3 (the finest skips: 1.7e-2 -> 8e-3) and block 4 (opens the /8 stage: the smoke "
                "weights' error rose by 9.4e-3 per 1000 frames with it int8, 3.1e-3 float)"}
_WEIGHTED = ("Convolution", "GroupConvolution", "MatMul")


def float_node_reasons(ov_model, variant: str = "mobilenetv3") -> dict[str, str]:
    """Friendly name -> reason key of :data:`WHY` for every node NNCF must leave in float: the head after the last
    state but the output block's 3x3 convolutions, the FLOAT_SCOPES, the ratio path and the input stem (a node in
    several takes the last of these). Raises ExportFailedError when the four state outputs or those convolutions
    cannot be found."""
    state_inputs = set(STATE_OUTPUTS)
    results = [r for r in ov_model.get_results() if r.get_input_tensor(0).get_any_name() in state_inputs]
    if len(results) != 4:
        raise ExportFailedError("cannot find the four state outputs r1o..r4o in the OpenVINO model")
    core = set(ancestors(results))  # unique names (get_name) of the nodes some state output depends on
    head = [op for op in ov_model.get_ordered_ops()
            if op.get_name() not in core and op.get_type_name() not in _NOT_COMPUTE]
    if not any(_is_spatial_conv(op) for op in head):
        raise ExportFailedError("cannot find the output block's 3x3 convolutions after the last state")
    reasons = {op.get_friendly_name(): "head" for op in head if not _is_spatial_conv(op)}
    reasons.update({n: "scope" for n in scope_nodes(ov_model, FLOAT_SCOPES[variant])})
    reasons.update({n: "ratio" for n in ratio_path_nodes(ov_model)})
    reasons.update({n: "stem" for n in input_stem_nodes(ov_model)})
    return reasons

def not_int8(quantized, reasons: dict[str, str]) -> list[dict[str, str]]:
    """``{layer, op, kept_as, reason}`` for each convolution / MatMul of the quantised model whose activation input
    has no FakeQuantize (named: the ignored scope's reason, or NNCF's own choice), and one entry per other op type
    of the ignored scope (counted)."""
    types = {op.get_friendly_name(): op.get_type_name() for op in quantized.get_ordered_ops()}
    entries, others = [], Counter()
    for op in quantized.get_ordered_ops():
        if op.get_type_name() not in _WEIGHTED or op.input_value(0).get_node().get_type_name() == "FakeQuantize":
            continue
        name = op.get_friendly_name()
        entries.append({"layer": name, "op": op.get_type_name(), "kept_as": "float32",
                        "reason": WHY[reasons[name]] if name in reasons else WHY["nncf"]})
    for name, key in reasons.items():
        if name in types and types[name] not in _WEIGHTED:
            others[(types[name], key)] += 1
    for (op, key), count in sorted(others.items(), key=lambda kv: -kv[1]):
        entries.append({"layer": f"{count} {op} node(s)", "op": op, "kept_as": "float32", "reason": WHY[key]})
    return entries


def scope_nodes(ov_model, scopes: tuple[str, ...]) -> list[str]:
    """Compute nodes whose ONNX name lies under one of ``scopes`` (module paths = the state-dict names)."""
    names = [op.get_friendly_name() for op in ov_model.get_ordered_ops() if op.get_type_name() not in _NOT_COMPUTE]
    found = {scope: [n for n in names if scope in n] for scope in scopes}
    absent = [scope for scope, hits in found.items() if not hits]
    if absent:
        raise ExportFailedError(f"no OpenVINO node under {absent}: the ONNX node names changed; refusing to "
                                "quantise layers that must stay float")
    return [n for hits in found.values() for n in hits]


def input_stem_nodes(ov_model) -> list[str]:
    """Every node between the inputs (``src``, ``downsample_ratio``) and the backbone's first convolution, and that
    convolution: the ratio downsample (a Resize, or PyTorch's taps as Gather/Multiply), the input normalisation and
    the 3 -> N convolution. Kept float: the convolution's int8 form measured 20x worse in the dynamic IR (pha MAD
    4.1e-2 vs 1.9e-3 static with only it quantised, 256x144 @ 0.5): the CPU plugin runs that FakeQuantize (with the
    fused per-channel shift) differently there. It is ~0.3 % of the multiply-adds."""
    stem = stem_convolution(ov_model)
    inputs = [p for p in ov_model.get_parameters()
              if p.get_output_tensor(0).get_any_name() in (SRC, RATIO)]
    between = set(descendants(inputs)) & set(ancestors([stem]))
    names = [op.get_friendly_name() for op in ov_model.get_ordered_ops()
             if op.get_name() in between and op.get_type_name() not in _NOT_COMPUTE]
    return [*names, stem.get_friendly_name()]


def _is_spatial_conv(op) -> bool:
    """A dense convolution with a kernel larger than 1x1 (in the head: decode0's two 3x3 convolutions)."""
    if op.get_type_name() != "Convolution":
        return False
    kernel = op.input_value(1).get_partial_shape()
    return kernel.is_static and any(int(d.get_length()) > 1 for d in list(kernel)[2:])


def ratio_path_nodes(ov_model) -> list[str]:
    """Nodes computed from ``downsample_ratio`` outside the input stem (the refiner gate): walk forward, stopping at
    (and keeping) Interpolate/Select, and at anything that also reads an activation (a Multiply of taps and pixels)."""
    params = [p for p in ov_model.get_parameters() if p.get_output_tensor(0).get_any_name() == RATIO]
    src = [p for p in ov_model.get_parameters() if p.get_output_tensor(0).get_any_name() == SRC]
    pixels = set(descendants(src))
    seen: dict[str, None] = {}
    frontier = list(params)
    while frontier:
        node = frontier.pop()
        for output in node.outputs():
            for target in output.get_target_inputs():
                consumer = target.get_node()
                name = consumer.get_friendly_name()
                if name in seen or consumer.get_type_name() == "Result":
                    continue
                seen[name] = None
                if consumer.get_type_name() not in _STOP_AT and consumer.get_name() not in pixels:
                    frontier.append(consumer)
    return list(seen)
