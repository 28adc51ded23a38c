"""Integer-only post-passes of ``int8_mode=full`` (issue 17): the recurrent states' quantisation ranges and the
integer output tail.

- :func:`bound_state_ranges` sets the calibration ranges of the ConvGRU state path to the range the network
  guarantees, ``[-1, 1]``, before AI Edge Quantizer computes scales. A ConvGRU's state ``h' = (1 - z) * h + z * c``
  is a convex blend of the previous state and ``c = tanh(.)``, so ``|h'| <= 1`` on every frame, and so are the
  products ``r * h``, ``(1 - z) * h`` and ``z * c``. Calibration alone sets those ranges too narrow: AI Edge
  Quantizer 0.10 keeps an exponential moving average (factor 0.95) of each frame's min/max, and each calibration
  rollout starts with all-zero states, so the state inputs came out at about +-0.77 while the states reach +-1 from
  the first seconds on (docs/tflite.md: measured). Clipped states fed back every frame made the alpha error grow
  over the rollout.
- :func:`integer_tail` makes the graph outputs float32 through a DEQUANTIZE and nothing else.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from rvm_export.core.errors import ExportFailedError
from rvm_export.core.names import STATE_INPUTS, STATE_OUTPUTS

__all__ = ["STATE_BOUND", "GRU_SCOPE", "bound_state_ranges", "integer_tail"]

STATE_BOUND = 1.0  # |h| <= 1: a convex blend of the previous state and a tanh (model/decoder.py, ConvGRU)
GRU_SCOPE = "ConvGRU_gru"  # litert-torch names a ConvGRU's tensors after its module path
BOUNDED_OPS = ("MUL", "TANH")  # in the ConvGRUs: r * h, (1 - z) * h, z * c and c = tanh(.), all within [-1, 1]
LAYOUT_OPS = ("TRANSPOSE", "RESHAPE")  # NHWC -> NCHW in front of fgr / pha; they move values, compute nothing


def _name(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def bound_state_ranges(fp32: bytes, qsv: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return calibration results (``{tensor name: {"min": array, "max": array}}``, AI Edge Quantizer's form)
    whose recurrent-state tensors span ``[-STATE_BOUND, STATE_BOUND]``: the state inputs ``r1i..r4i`` (their
    QUANTIZE), the state outputs ``r1o..r4o`` (the blend's ADD) and every MUL and TANH output inside the ConvGRUs.
    Also the names changed. ``fp32`` is the float flatbuffer that was calibrated. Raises ExportFailedError when a
    state tensor has no calibration result or the graph has no ConvGRU op (the names changed)."""
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(fp32))
    graph = model.subgraphs[0]
    signature = next(s for s in model.signatureDefs if s.subgraphIndex == 0)
    by_key = {_name(m.name): m.tensorIndex for m in (*signature.inputs, *signature.outputs)}
    names = [_name(t.name) for t in graph.tensors]
    states = [names[by_key[key]] for key in (*STATE_INPUTS, *STATE_OUTPUTS) if key in by_key]
    inner = [names[op.outputs[0]] for op in graph.operators
             if GRU_SCOPE in names[op.outputs[0]]
             and flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) in BOUNDED_OPS]
    missing = [n for n in states if n not in qsv]
    if len(states) != len(STATE_INPUTS) * 2 or missing or not inner:
        raise ExportFailedError(f"cannot bound the recurrent-state ranges: state tensors {states} (uncalibrated: "
                                f"{missing}), {len(inner)} ConvGRU MUL/TANH ops")
    changed = [*states, *(n for n in inner if n in qsv)]
    bounded = dict(qsv)
    for name in changed:
        low, high = (np.asarray(qsv[name][k], np.float32) for k in ("min", "max"))
        bounded[name] = {**qsv[name], "min": np.full_like(low, -STATE_BOUND), "max": np.full_like(high, STATE_BOUND)}
    return bounded, changed


def integer_tail(content: bytes) -> tuple[bytes, list[str]]:
    """Make an integer-only flatbuffer's graph outputs float32 through a DEQUANTIZE and nothing else.

    AI Edge Quantizer 0.10 has no MINIMUM: the upper clamp of ``fgr`` and ``pha`` (``clamp(x, 0, 1)`` lowers to
    MAXIMUM then MINIMUM) stays a float op behind a DEQUANTIZE. Here it is rewritten to run on the quantised tensor
    (TFLite's MINIMUM compares raw values, so input, constant and output share the input's scale and zero point;
    the constant is rounded to that grid) followed by the DEQUANTIZE. Also, where a state output is written by a
    quantised op, the SignatureDef and the subgraph outputs are pointed at the float DEQUANTIZE copy AI Edge
    Quantizer made of it (it names the int8 tensor), a DEQUANTIZE read only by QUANTIZEs (where 8- and 16-bit
    groups meet) becomes one requantising QUANTIZE, and where AI Edge Quantizer requantised the 16-bit head to int8
    for the NCHW layout op in front of ``fgr`` / ``pha`` (the layout op is outside the head's scope), the layout op
    reads the int16 tensor instead (before this, ``pha`` of the integer-only file had 256 levels). Returns the
    flatbuffer and what was changed (names).
    """
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    graph = model.subgraphs[0]
    signature = next(s for s in model.signatureDefs if s.subgraphIndex == 0)
    quantised = {schema.TensorType.INT8, schema.TensorType.INT16}
    names = {i: flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) for i, op in enumerate(graph.operators)}
    dequant = next((k for k, code in enumerate(model.operatorCodes)
                    if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.DEQUANTIZE), None)
    changed: list[str] = []

    def producer(tensor: int) -> int | None:
        return next((k for k, op in enumerate(graph.operators) if tensor in list(op.outputs)), None)

    # 1. state outputs written by a quantised op: use the float DEQUANTIZE copy
    for entry in signature.outputs:
        t = graph.tensors[entry.tensorIndex]
        if t.type not in quantised:
            continue
        copy = next((op.outputs[0] for k, op in enumerate(graph.operators) if names[k] == "DEQUANTIZE"
                     and list(op.inputs) == [entry.tensorIndex]), None)
        if copy is None:
            raise ExportFailedError(f"graph output {_name(entry.name)} is quantised and has no float copy")
        entry.tensorIndex = copy
        changed.append(f"{_name(entry.name)}: output is the DEQUANTIZE of the quantised state")
    # 2. float MINIMUM/MAXIMUM (clamp) on a DEQUANTIZE and a constant: run it on the quantised tensor
    new_ops = []
    for k, op in enumerate(graph.operators):
        new_ops.append(op)
        if names[k] not in ("MINIMUM", "MAXIMUM") or graph.tensors[op.outputs[0]].type != schema.TensorType.FLOAT32:
            continue
        data, const = list(op.inputs)
        src = producer(data)
        if src is None or names[src] != "DEQUANTIZE" or graph.tensors[const].buffer <= 0:
            continue
        q = graph.operators[src].inputs[0]
        qt = graph.tensors[q]
        buf = model.buffers[graph.tensors[const].buffer].data
        value = np.frombuffer(np.asarray(buf, np.uint8).tobytes(), np.float32)
        scale, zero = float(qt.quantization.scale[0]), int(qt.quantization.zeroPoint[0])
        dtype = np.int8 if qt.type == schema.TensorType.INT8 else np.int16
        info = np.iinfo(dtype)
        qvalue = np.clip(np.round(value / scale) + zero, info.min, info.max).astype(dtype)
        buffer = schema.BufferT()
        buffer.data = np.frombuffer(qvalue.tobytes(), np.uint8)
        model.buffers.append(buffer)
        ct = _quantised_tensor(schema, graph.tensors[const], qt, len(model.buffers) - 1, "_quantized")
        graph.tensors.append(ct)
        out = graph.tensors[op.outputs[0]]
        ot = _quantised_tensor(schema, out, qt, 0, "_quantized")
        graph.tensors.append(ot)
        float_out = op.outputs[0]
        op.inputs = [q, len(graph.tensors) - 2]
        op.outputs = [len(graph.tensors) - 1]
        if dequant is None:
            code = schema.OperatorCodeT()
            code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
            code.version = 1
            model.operatorCodes.append(code)
            dequant = len(model.operatorCodes) - 1
        tail = schema.OperatorT()
        tail.opcodeIndex, tail.inputs, tail.outputs = dequant, [len(graph.tensors) - 1], [float_out]
        new_ops.append(tail)
        changed.append(f"{_name(out.name)}: {names[k]} runs on {'int8' if dtype is np.int8 else 'int16'}")
    # 3. a DEQUANTIZE read only by QUANTIZEs (int8 <-> int16 where the 16-bit groups meet): one requantising QUANTIZE
    graph.operators = new_ops
    sig_outputs = {e.tensorIndex for e in signature.outputs}
    for op in list(graph.operators):
        if flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) != "DEQUANTIZE" or op.outputs[0] in sig_outputs:
            continue
        readers = [r for r in graph.operators if op.outputs[0] in list(r.inputs)]
        if readers and all(flatbuffer_utils.opcode_to_name(model, r.opcodeIndex) == "QUANTIZE" for r in readers):
            for r in readers:
                r.inputs = [op.inputs[0]]
            changed.append(f"{_name(graph.tensors[op.outputs[0]].name)}: DEQUANTIZE + QUANTIZE -> QUANTIZE")
    # 4. fgr / pha written as int16 -> QUANTIZE int8 -> TRANSPOSE/RESHAPE (layout) -> DEQUANTIZE: the layout op reads
    # the int16 tensor, so the output keeps the 16-bit head's grid rather than 1/255 steps
    def made_by(tensor: int):  # producer() as the op itself (graph.operators is new_ops by now)
        k = producer(tensor)
        return None if k is None else graph.operators[k]

    for entry in signature.outputs:
        tail = made_by(entry.tensorIndex)
        if tail is None or flatbuffer_utils.opcode_to_name(model, tail.opcodeIndex) != "DEQUANTIZE":
            continue
        layout = made_by(tail.inputs[0])
        if layout is None or flatbuffer_utils.opcode_to_name(model, layout.opcodeIndex) not in LAYOUT_OPS:
            continue
        narrow = made_by(layout.inputs[0])
        if narrow is None or flatbuffer_utils.opcode_to_name(model, narrow.opcodeIndex) != "QUANTIZE" or \
                graph.tensors[narrow.inputs[0]].type != schema.TensorType.INT16 or \
                graph.tensors[narrow.outputs[0]].type != schema.TensorType.INT8 or \
                sum(narrow.outputs[0] in list(op.inputs) for op in graph.operators) != 1:
            continue
        wide, mid = graph.tensors[narrow.inputs[0]], graph.tensors[layout.outputs[0]]
        mid.type = wide.type
        mid.quantization.scale = list(wide.quantization.scale)
        mid.quantization.zeroPoint = list(wide.quantization.zeroPoint)
        layout.inputs[0] = narrow.inputs[0]
        graph.operators.remove(narrow)
        changed.append(f"{_name(entry.name)}: the layout op before the output reads the 16-bit head (no int8 step)")
    # drop DEQUANTIZEs nothing reads any more
    read = {i for op in graph.operators for i in op.inputs} | {e.tensorIndex for e in signature.outputs}
    graph.operators = [op for op in graph.operators
                       if not (flatbuffer_utils.opcode_to_name(model, op.opcodeIndex) == "DEQUANTIZE"
                               and op.outputs[0] not in read)]
    graph.outputs = [e.tensorIndex for e in signature.outputs]
    if not changed:
        return content, []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), changed


def _quantised_tensor(schema, like, quant_like, buffer: int, suffix: str):
    tensor = schema.TensorT()
    tensor.shape, tensor.type, tensor.buffer = like.shape, quant_like.type, buffer
    tensor.name = _name(like.name) + suffix
    tensor.quantization = schema.QuantizationParametersT()
    tensor.quantization.scale = list(quant_like.quantization.scale)
    tensor.quantization.zeroPoint = list(quant_like.quantization.zeroPoint)
    return tensor
