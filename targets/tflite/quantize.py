"""Precision conversion of an fp32 ``.tflite`` with AI Edge Quantizer: fp16 weights, dynamic-range int8, full int8.

All three rewrite the fp32 flatbuffer that litert-torch produced (litert-torch's own PT2E dynamic int8 quantises no
convolution of this network, see docs/tflite.md). The signature (contract names, float32 I/O) is kept by every mode,
so ``rKo`` still feeds ``rKi`` without a cast or a transpose.

- ``fp16``: CONV_2D / DEPTHWISE_CONV_2D weights stored as float16 behind a DEQUANTIZE (AI Edge Quantizer's
  float-casting algorithm). XNNPACK on a CPU widens them once at load and computes in float32; the Android GPU
  delegate consumes them as half precision.
- ``int8`` ``dynamic``: per-channel int8 weights on every supported op outside :data:`FLOAT_SCOPES`; activations
  stay float32 in the graph and the kernels quantise them on the fly, per call (no calibration).
- ``int8`` ``full``: **integer-only** (issue 17): every compute op runs on int8 weights and int8 activations, or
  16-bit activations ("16x8") where :data:`FULL` says so; only the QUANTIZE of each graph input and the DEQUANTIZE of
  each graph output are float. Calibrated on rollout frames *with the states the fp32 PyTorch model really
  produces* (``rvm_export.core.rollout.calibration_set``); the recurrent states' ranges are then set to their bound
  ``[-1, 1]`` (:func:`~.integer_only.bound_state_ranges`). ``project_mat`` is exported as a split-precision pair of
  int8 convolutions (split_weights.py) and :func:`~.integer_only.integer_tail` moves the output clamp onto integers.
- ``int8`` ``mixed``: W8A8 with the layer groups of :data:`MIXED` float (not integer-only; faster on CPUs).
- ``int8`` ``16x8``: **integer-only with 16-bit activations everywhere** and int8 weights (TFLite's "16x8"
  quantization; W8A16), for accelerators with 16-bit activation kernels. Same calibration, state ranges and
  integer output tail as ``full``; traced with hardswish as ReLUs (no 16-bit HARD_SWISH recipe:
  targets/traced/rewrites.int16_friendly) and with MobileNetV3's stem and blocks 1-4 as split-precision weights
  (split_weights.EARLY_BACKBONE), whose int8 rounding alone kept the smoke-trained weights over 1e-2. The one
  integer-only recipe measured to hold 1e-2 on both checkpoints (docs/tflite.md "16x8"); LiteRT runs 16-bit
  convolutions on reference kernels, so on a CPU it is ~17x slower than ``full``.

The integer-only post-passes (state ranges, integer output tail) live in integer_only.py.
"""
from __future__ import annotations

import collections
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

from rvm_export.core.errors import ExportFailedError

from .integer_only import _name, bound_state_ranges, integer_tail

__all__ = ["INT8_MODES", "FLOAT_SCOPES", "MIXED", "quantize", "op_counts", "float_ops", "not_int8", "layer_name",
           "align_graph_outputs"]

# First = the default of --precision int8: dynamic kept alpha within 2e-2 MAD on both models measured, full int8 did
# not on the smoke-trained one (docs/tflite.md); full is the choice for int8-only accelerators, checked by parity.
INT8_MODES = ("dynamic", "full", "mixed", "16x8")
INTEGER_ONLY = ("full", "16x8")  # every compute op on integers; the graph I/O stays float32
SIGNATURE_KEY = "serving_default"
# Tensor-name regexes (litert-torch names every tensor after its nn.Module path) whose ops keep float32:
# project_mat, the 1x1 16->4 output head. int8 weights there alone moved alpha by MAD 0.026 on the golden weights
# (0.0055 with it float; docs/tflite.md); it is 64 MACs per low-res pixel. Everything else the quantizer covers is
# int8, the deep guided filter included (keeping it float changed pha MAD by 4e-4 at 256x144). Each scope must match
# an op (checked), so a renamed module cannot silently turn the exception off.
FLOAT_SCOPES: dict[str, tuple[str, ...]] = {"dynamic": ("project_mat",), "full": (), "mixed": ("project_mat",),
                                             "16x8": ()}
WHY_FLOAT = {"project_mat": "recipe: the 16->4 output head writes alpha directly; int8 weights there alone gave "
                            "pha MAD 2.6e-2 on the golden weights (5.5e-3 float); 64 MACs per low-res pixel"}
BOUNDARY = ("float32 I/O contract: this op writes a graph output (fgr, pha or a state rKo), so its inputs are "
            "dequantised and it runs in float; states feed back with no requantisation in the app")
WHY_TAIL = ("recipe: the grouped4 refiner tail's FULLY_CONNECTED 0/1 picks at full resolution stay float; int8 "
            "would make 8-bit copies of src, fgr and pha (decision 52)")
WHY_TAIL16 = ("recipe (integer-only): the grouped4 refiner tail's FULLY_CONNECTED 0/1 picks at full resolution run "
              "with 16-bit activations (exact int8 weights), not 8-bit copies of src, fgr and pha")
UNCOVERED = "AI Edge Quantizer 0.10 has no int8 recipe for this op here: it stays float between DEQUANTIZE/QUANTIZE"


@dataclass(frozen=True)
class Exception_:
    """One layer group of a static recipe that is not W8A8: ``scope`` is a regex on litert-torch's tensor names
    (module paths), ``kept_as`` is ``float32`` or ``int16`` (16-bit activations, 8-bit weights)."""

    scope: str
    kept_as: str
    reason: str


# The mixed recipe: W8A8 everywhere except these two groups, chosen from measurements on the smoke-trained
# checkpoint (256x144, 200 frames of the generated scene, alpha MAD vs PyTorch fp32; docs/tflite.md "int8 recipes"):
# full W8A8 2.1e-2; int8 weights with float activations 1.2e-2 (so weights alone miss 1e-2), of which the backbone's
# 1.0e-2 and, per layer, the stem and blocks 1-4 lead (features.3.block.1.0 5.0e-3, features.2.block.2.0 1.9e-3,
# features.0 1.6e-3, ...). Stem + blocks 1-4 float: 1.35e-2, rising over the clip; with the ConvGRUs at 16-bit
# activations too: 9.5e-3, still rising (7.8e-3 -> 1.1e-2), and 20x slower on CPUs (LiteRT's int16 kernels are
# reference kernels); with the ConvGRUs float: 5.2e-3, flat.
EARLY_BACKBONE = "MobileNetV3LargeEncoder_backbone/model.mobilenetv3.(ConvBNAct_0|InvertedResidual_[1-4])/"
MIXED: tuple[Exception_, ...] = (
    Exception_(EARLY_BACKBONE, "float32",
               "recipe (measured sensitivity): MobileNetV3's stem and blocks 1-4 (1/2 and 1/4 resolution, the "
               "decoder's finest skips); their int8 weights alone moved alpha MAD by up to 5e-3 per layer on the "
               "smoke-trained weights"),
    Exception_("ConvGRU_gru", "float32",
               "recipe (the recurrence): the ConvGRUs' states are requantised every frame and fed back; 8-bit "
               "GRUs gave 1.35e-2 alpha MAD rising over the clip, 16-bit activations 9.5e-3 still rising, float 5.2e-3 "
               "flat (smoke-trained weights, stem float)"),
)


# The full (integer-only) recipe: W8A8 everywhere except these groups, which keep int8 weights with 16-bit
# activations. Measured on the golden and the smoke weights (256x144 @ 1, alpha MAD vs PyTorch fp32;
# docs/tflite.md "int8 recipes"). The output head: project_mat's 4 channels hold alpha's logit before the clamp, and
# an int8 grid over its calibrated range is a step of several hundredths in alpha. Not here: the ConvGRU blend at
# 16 bits made the smoke weights' error flat over 1000 frames (1.26e-2) but lifted the golden scene from 9.68e-3 to
# 1.005e-2, over the bound (docs/tflite.md "The recurrent states' ranges"); the state ranges are bounded instead
# (integer_only.bound_state_ranges).
OUTPUT_HEAD = r"project_mat|MattingNetwork_model;[0-9]+;$"  # project_mat and the ops after it (split, add, clamp)
FULL: tuple[Exception_, ...] = (
    Exception_(OUTPUT_HEAD, "int16",
               "recipe (integer-only): the output head (project_mat, split-precision int8 weights, and the split/"
               "add/clamp after it) writes alpha; 8-bit activations there are a step of ~1e-2 in alpha"),
)
# 16x8: every op 16-bit (one static config), so no layer group is an exception.
SIXTEEN = "16x8: int16 activations, int8 weights on every op (TFLite's 16x8 quantization)"
WHY_16X8 = ("recipe (16x8): every activation is 16-bit; int8 activations moved alpha by up to 1.9e-2 and flickered "
            "(docs/tflite.md, '16x8')")
RECIPES: dict[str, tuple[Exception_, ...]] = {"full": FULL, "mixed": MIXED, "16x8": ()}


def _keep_tail_float(recipe, ops, algo, integer_only: bool = False) -> None:
    """FULLY_CONNECTED stays float: the only ones are the grouped4 refiner tail's 0/1 linear maps at full resolution
    (the network has none), which int8 would turn into 8-bit copies of src, fgr and pha. Integer-only (``full``):
    they run with 16-bit activations instead (0/1 weights are exact in int8)."""
    if integer_only:
        recipe.add_static_config(".*", ops.FULLY_CONNECTED, activation_num_bits=16, weight_num_bits=8)
    else:
        recipe.add_quantization_config(".*", ops.FULLY_CONNECTED, algorithm_key=algo.NO_QUANTIZE)


def quantize(fp32: bytes, precision: str, int8_mode: str = "dynamic",
             calibration: Iterable[Mapping[str, np.ndarray]] | None = None,
             float_scopes: tuple[str, ...] | None = None) -> tuple[bytes, dict[str, Any]]:
    """Return the converted flatbuffer and the details for the manifest (what was quantised, what stayed float)."""
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe_manager

    algo = algorithm_manager.AlgorithmName
    ops = qtyping.TFLOperationName
    q = recipe_manager.RecipeManager()  # the recipe; the Quantizer is built from it below
    details: dict[str, Any] = {"quantizer": _version("ai-edge-quantizer")}
    if precision == "fp16":
        fp16 = qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT)
        config = qtyping.OpQuantizationConfig(weight_tensor_config=fp16, explicit_dequantize=True,
                                              compute_precision=qtyping.ComputePrecision.FLOAT)
        for op in (ops.CONV_2D, ops.DEPTHWISE_CONV_2D):
            q.add_quantization_config(".*", op, config, algorithm_key=algo.FLOAT_CASTING)
        details["recipe"] = "float-casting: CONV_2D/DEPTHWISE_CONV_2D weights float16, explicit DEQUANTIZE"
    elif precision == "int8" and int8_mode == "dynamic":
        float_scopes = FLOAT_SCOPES["dynamic"] if float_scopes is None else float_scopes
        q.add_dynamic_config(".*", ops.ALL_SUPPORTED, num_bits=8)
        _keep_tail_float(q, ops, algo)
        for scope in float_scopes:
            q.add_quantization_config(scope, ops.ALL_SUPPORTED, algorithm_key=algo.NO_QUANTIZE)
        details.update(recipe="dynamic_wi8_afp32: per-channel int8 weights, activations quantised at run time",
                       float_scopes=list(float_scopes))
    elif precision == "int8" and int8_mode in ("full", "mixed", "16x8"):
        if calibration is None:
            raise ExportFailedError("full int8 needs calibration feeds (rollout frames with their real states)")
        float_scopes = FLOAT_SCOPES[int8_mode] if float_scopes is None else float_scopes
        exceptions = RECIPES[int8_mode]
        q.add_static_config(".*", ops.ALL_SUPPORTED, activation_num_bits=16 if int8_mode == "16x8" else 8,
                            weight_num_bits=8)
        _keep_tail_float(q, ops, algo, integer_only=int8_mode in INTEGER_ONLY)
        for rule in exceptions:  # later configs win in AI Edge Quantizer's recipe
            if rule.kept_as == "int16":
                q.add_static_config(rule.scope, ops.ALL_SUPPORTED, activation_num_bits=16, weight_num_bits=8)
            else:
                q.add_quantization_config(rule.scope, ops.ALL_SUPPORTED, algorithm_key=algo.NO_QUANTIZE)
        for scope in float_scopes:
            q.add_quantization_config(scope, ops.ALL_SUPPORTED, algorithm_key=algo.NO_QUANTIZE)
        # float32 I/O, so rKo feeds rKi with no requantisation in the app: the graph inputs stay float (the first
        # consumers quantise), and the ops that write a graph output stay float (their inputs are dequantised).
        for boundary in (ops.INPUT, ops.OUTPUT):
            q.add_quantization_config(".*", boundary, algorithm_key=algo.NO_QUANTIZE)
        # mixed: the ops that write a graph output stay float too; full (integer-only): they are integer and a
        # DEQUANTIZE writes each output (integer_tail below).
        for name in output_tensor_names(fp32) if int8_mode == "mixed" else ():
            q.add_quantization_config(f"(^|;){re.escape(name)};", ops.ALL_SUPPORTED, algorithm_key=algo.NO_QUANTIZE)
        details.update(recipe=("integer-only: per-channel int8 weights, int8 activations (min/max), 16-bit "
                               f"activations on {len([r for r in exceptions if r.kept_as == 'int16'])} layer group(s)"
                               if int8_mode == "full" else SIXTEEN if int8_mode == "16x8" else
                               f"static_wi8_ai8, mixed: {len(exceptions)} layer group(s) kept float"),
                       float_scopes=list(float_scopes))
    else:
        raise ExportFailedError(f"no TFLite conversion for precision {precision!r} (int8 mode {int8_mode!r})")
    scopes = [*details.get("float_scopes", []), *(r.scope for r in RECIPES.get(int8_mode, ()))]
    unmatched = [scope for scope in scopes if precision == "int8" and not _scope_matches(fp32, scope)]
    if unmatched:
        raise ExportFailedError(f"float scope(s) {unmatched} match no op of the model: the module names in its "
                                "tensor names changed; update targets/tflite_quant.FLOAT_SCOPES")
    engine = quantizer.Quantizer(bytearray(fp32), q.get_quantization_recipe())
    qsv = None
    if engine.need_calibration:
        feeds = [dict(f) for f in calibration or ()]
        try:
            with _quiet():
                qsv = engine.calibrate({SIGNATURE_KEY: feeds}, num_threads=1)
        except Exception as exc:
            raise ExportFailedError(f"int8 calibration failed: {exc}") from exc
        details["calibration_frames"] = len(feeds)
        if int8_mode in INTEGER_ONLY:  # the ConvGRU state path spans [-1, 1] (integer_only.py)
            qsv, bounded = bound_state_ranges(fp32, qsv)
            details["state_ranges"] = f"[-1, 1] on {len(bounded)} recurrent-state tensors (r1i..r4o, ConvGRU MUL/TANH)"
        from rvm_export.core.rollout import calibration_sources

        details["calibration"] = calibration_sources()
    try:
        with _quiet():
            result = engine.quantize(qsv, enable_progress_report=False)
    except Exception as exc:
        raise ExportFailedError(f"AI Edge Quantizer failed for {precision}: {exc}") from exc
    out = bytes(result.quantized_model)
    if precision == "int8" and int8_mode in INTEGER_ONLY:
        out, tail = integer_tail(out)
        details["integer_tail"] = tail
    out, repaired = align_graph_outputs(out)
    if repaired:
        details["repaired_outputs"] = repaired
    details["ops"] = op_counts(out)
    details["float_ops"] = float_ops(out)
    if precision == "int8":
        rules = [*RECIPES.get(int8_mode, ()),
                 *(Exception_(scope, "float32", WHY_FLOAT.get(scope, "recipe: kept float (float_scopes)"))
                   for scope in details.get("float_scopes", []))]
        details["not_int8"] = not_int8(out, rules, dynamic=int8_mode == "dynamic", sixteen=int8_mode == "16x8")
    return out, details


@contextmanager
def _quiet():
    """The quantizer runs interpreters with preserve_all_tensors (calibration, checks) and warns each time."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
        yield


def _version(dist: str) -> str:
    from importlib.metadata import version

    return f"{dist} {version(dist)}"


def _model_ops(content: bytes):
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    graph = model.subgraphs[0]
    return model, graph


def align_graph_outputs(content: bytes) -> tuple[bytes, list[str]]:
    """Make the subgraph's outputs the tensors its SignatureDef names.

    When a graph output also feeds quantised ops, AI Edge Quantizer 0.10 adds a QUANTIZE after it and moves the
    subgraph output to that int8 copy, while the SignatureDef still names the float tensor. XNNPACK then treats the
    float tensor as an internal value and never materialises it ("Tensor data is null" on every call). Pointing the
    subgraph outputs back at the signature's tensors fixes that and keeps the float32 outputs of the contract.
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    graph = model.subgraphs[0]
    signature = next(s for s in model.signatureDefs if s.subgraphIndex == 0)
    wanted = [m.tensorIndex for m in signature.outputs]
    if list(graph.outputs) == wanted:
        return content, []
    repaired = [_name(m.name) for m in signature.outputs if m.tensorIndex not in list(graph.outputs)]
    graph.outputs = wanted
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), repaired


def _scope_matches(content: bytes, scope: str) -> bool:
    _, graph = _model_ops(content)
    return any(re.search(scope, _name(graph.tensors[i].name)) for op in graph.operators for i in op.outputs)


def output_tensor_names(content: bytes) -> list[str]:
    model, graph = _model_ops(content)
    return [_name(graph.tensors[i].name) for i in graph.outputs]


def op_counts(content: bytes) -> dict[str, int]:
    """Op type -> count in the main subgraph."""
    from ai_edge_litert.tools import flatbuffer_utils

    model, graph = _model_ops(content)
    counts = collections.Counter(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for op in graph.operators)
    return dict(counts.most_common())


def float_ops(content: bytes) -> dict[str, int]:
    """Compute ops that touch no quantised tensor (int8/uint8/int16; int32 shape and axis operands do not count):
    for an int8 model, what stayed float. A dynamic-range conv (int8 weights, float activations) is not float."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model, graph = _model_ops(content)
    quantised = {schema.TensorType.INT8, schema.TensorType.UINT8, schema.TensorType.INT16}  # int32 = shapes/axes
    counts: collections.Counter[str] = collections.Counter()
    for op in graph.operators:
        name = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        if name in ("DEQUANTIZE", "QUANTIZE"):
            continue
        tensors = [graph.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
        if not any(t.type in quantised for t in tensors):
            counts[name] += 1
    return dict(counts.most_common())


def layer_name(tensor_name: str) -> str:
    """The module path (state-dict style, Sequential indices without the container's own name) in a litert-torch
    tensor name: ``model.mobilenetv3.MobileNetV3LargeEncoder_backbone/model.mobilenetv3.InvertedResidual_3/
    torch.nn.modules.container.Sequential_block/...Conv2d_0;1`` -> ``backbone.3.block.1.0``."""
    first = tensor_name.split(";")[0].split("MattingNetwork_model/")[-1]
    parts = []
    for segment in first.split("/"):
        leaf = segment.rsplit(".", 1)[-1]
        if "_" in leaf:
            parts.append(leaf.split("_", 1)[1])
    while parts and parts[0] in ("contract", "model"):  # the export wrappers (StaticContract, MattingNetwork)
        parts.pop(0)
    return ".".join(parts) or first


def not_int8(content: bytes, rules: Iterable[Exception_] = (), dynamic: bool = False,
             sixteen: bool = False) -> list[dict[str, str]]:
    """Every compute op of a quantised flatbuffer whose activations are not int8, as ``{layer, op, kept_as,
    reason}``; ``kept_as`` is ``float32`` or ``int16`` (16-bit activations). The reason is the first rule whose
    scope matches the op's output tensor name, else the graph-output boundary, else "not covered". For a
    dynamic-range model every activation is float by design, and in a 16x8 model every one is 16-bit: one summary
    entry instead (plus, for 16x8, any op that is float)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    if sixteen:
        floats = [e for e in not_int8(content, rules) if e["kept_as"] == "float32"]
        return [{"layer": "*", "op": "*", "kept_as": "int16 activations, int8 weights", "reason": WHY_16X8}, *floats]
    if dynamic:
        return [{"layer": "*", "op": "*", "kept_as": "float32 activations, int8 weights",
                 "reason": "dynamic range: activations are quantised per call inside the kernels, not in the graph"}]
    model, graph = _model_ops(content)
    outputs = set(graph.outputs)
    int8 = {schema.TensorType.INT8, schema.TensorType.UINT8}
    rules = list(rules)
    entries = []
    for op in graph.operators:
        kind = flatbuffer_utils.opcode_to_name(model, op.opcodeIndex)
        if kind in ("DEQUANTIZE", "QUANTIZE"):
            continue
        tensors = [graph.tensors[i] for i in (*op.inputs, *op.outputs) if i >= 0]
        types = {t.type for t in tensors}
        if schema.TensorType.INT16 in types:
            kept_as = "int16"
        elif not types & (int8 | {schema.TensorType.INT16}):
            kept_as = "float32"
        else:
            continue
        name = _name(graph.tensors[op.outputs[0]].name)
        rule = next((r for r in rules if re.search(r.scope, name)), None)
        if rule is not None:
            reason = rule.reason
        elif kind == "FULLY_CONNECTED":
            reason = WHY_TAIL16 if kept_as == "int16" else WHY_TAIL
        elif any(i in outputs for i in op.outputs) or any(_feeds_output_only(graph, i, outputs) for i in op.outputs):
            reason = BOUNDARY
        else:
            reason = UNCOVERED
        entries.append({"layer": layer_name(name), "op": kind, "kept_as": kept_as, "reason": reason})
    return entries


def _feeds_output_only(graph, tensor: int, outputs: set[int]) -> bool:
    """The tensor only feeds ops whose outputs are graph outputs (the float tail in front of fgr / pha)."""
    consumers = [op for op in graph.operators if tensor in list(op.inputs)]
    return bool(consumers) and all(any(o in outputs for o in op.outputs) for op in consumers)
