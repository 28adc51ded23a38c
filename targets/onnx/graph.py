"""Graph edits of an exported ONNX model: the fp16 conversion and the walks it needs."""
from __future__ import annotations

from typing import Any

from rvm_export.core.errors import ExportFailedError
from rvm_export.core.names import RATIO, SRC, STATE_INPUTS

__all__ = ["to_fp16", "ratio_path_nodes", "skip_round_trips", "rounded_reads", "toposort"]


def ratio_path_nodes(graph) -> list[str]:
    """Names of the nodes of the ratio arithmetic: those that compute from ``downsample_ratio`` and from no pixel or
    state value (the low-res size, the sampling taps of targets/traced/exact_taps.py, the ratio == 1 refiner gate),
    and the shape arithmetic they read (the frame's height and width cast to float32). They must stay float32: a
    float16 ratio changes ``floor(H*r)``, a float16 coordinate near 1000 px moves in steps of 0.5 px, and float16
    holds no whole number above 2048 exactly.

    A ``Shape`` output carries no value of its input, so taps computed from ``src``'s shape and the ratio belong
    here, while the Gathers and multiply-adds that apply them to pixels do not (they run in float16, as a float16
    Resize would). ``Constant`` nodes read only by these nodes belong here too (the converter would otherwise store
    2**40 as float16, 65504); :func:`own_constants` copies those they share. Walks ``graph.graph.node`` in order,
    which ONNX requires to be topological."""
    ratio, data = {RATIO}, {SRC, *STATE_INPUTS}
    readers: dict[str, list[str]] = {}
    for node in graph.graph.node:
        inputs = [name for name in node.input if name]
        for name in inputs:
            readers.setdefault(name, []).append(node.name)
        if node.op_type != "Shape" and any(name in data for name in inputs):
            data.update(node.output)
        elif any(name in ratio for name in inputs):
            ratio.update(node.output)
    keep: set[str] = set()
    for node in reversed(graph.graph.node):  # readers before the nodes they read
        if node.op_type == "Constant" or any(out in data for out in node.output):
            continue
        if any(out in ratio for out in node.output) or any(r in keep for out in node.output
                                                            for r in readers.get(out, [])):
            keep.add(node.name)
    keep.update(node.name for node in graph.graph.node if node.op_type == "Constant"
                and all(r in keep for out in node.output for r in readers.get(out, [None])))
    return [node.name for node in graph.graph.node if node.name in keep]


def to_fp16(graph):
    """float16 weights and activations with float32 I/O; the ratio/size arithmetic stays float32.

    onnxruntime's converter keeps a blocked node float32 but hands it float16 values: with ``keep_io_types`` it casts
    ``downsample_ratio`` to float16 at the input for every reader, and it casts every blocked node's output to float16
    and back before the next blocked node reads it (so 0.35 became 0.3501 and 2**40 became 65504 on the way).
    :func:`skip_round_trips` then lets every node read the float32 value itself; :func:`rounded_reads` checks that
    no node of the ratio path is left reading a float16 rounding. Raises ExportFailedError if one is."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    for i, node in enumerate(graph.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    blocked = ratio_path_nodes(graph)
    blocked += own_constants(graph.graph, blocked)
    converted = convert_float_to_float16(graph, keep_io_types=True, node_block_list=blocked)
    skip_round_trips(converted.graph)
    toposort(converted.graph)  # the converter appends its Cast nodes at the end
    rounded = rounded_reads(converted.graph, blocked)
    if rounded:
        raise ExportFailedError(f"fp16 conversion left the ratio arithmetic reading float16 values: {rounded[:5]}")
    return converted


def own_constants(graph, names: list[str]) -> list[str]:
    """Give the nodes ``names`` their own copy of every float constant (``Constant`` node or initializer) they share
    with other nodes, so that the converter stores one copy in float16 and leaves theirs float32. Returns the names
    of the new ``Constant`` nodes. ``graph``: a GraphProto, edited in place."""
    from onnx import TensorProto, helper

    wanted = set(names)
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    tensors = {t.name: t for t in graph.initializer if t.data_type == TensorProto.FLOAT}
    tensors.update({n.output[0]: n.attribute[0].t for n in graph.node
                    if n.op_type == "Constant" and n.attribute[0].name == "value"
                    and n.attribute[0].t.data_type == TensorProto.FLOAT})
    added = []
    for name, tensor in tensors.items():
        mine = [n for n in readers.get(name, []) if n.name in wanted]
        if not mine or len(mine) == len(readers[name]):
            continue
        copy = helper.make_node("Constant", [], [f"{name}_float32"], name=f"{name}_float32", value=tensor)
        graph.node.insert(0, copy)
        added.append(copy.name)
        for node in mine:
            node.input[:] = [f"{name}_float32" if i == name else i for i in node.input]
    return added


def _casts(graph) -> tuple[dict[str, Any], dict[str, int]]:
    """(producer node of each value, element type of each typed value) of ``graph`` (a GraphProto)."""
    producers = {out: node for node in graph.node for out in node.output}
    types = {v.name: v.type.tensor_type.elem_type for v in (*graph.input, *graph.output, *graph.value_info)}
    types.update({t.name: t.data_type for t in graph.initializer})
    return producers, types


def _cast_to(node, dtype: int) -> bool:
    return node is not None and node.op_type == "Cast" and any(a.name == "to" and a.i == dtype for a in node.attribute)


def skip_round_trips(graph) -> None:
    """Where a node reads ``Cast(to=float32)(Cast(to=float16)(x))`` of a float32 ``x``, let it read ``x``; then drop
    the Casts nobody reads any more. ``graph``: a GraphProto, edited in place."""
    from onnx import TensorProto

    producers, types = _casts(graph)
    for node in graph.node:
        for i, name in enumerate(node.input):
            up = producers.get(name)
            down = producers.get(up.input[0]) if _cast_to(up, TensorProto.FLOAT) else None
            if _cast_to(down, TensorProto.FLOAT16) and types.get(down.input[0]) == TensorProto.FLOAT:
                node.input[i] = down.input[0]
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in graph.node for name in node.input} | outputs
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in read for o in n.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    kept = {out for node in graph.node for out in node.output} | {i.name for i in graph.input} | outputs
    for value in [v for v in graph.value_info if v.name not in kept]:
        graph.value_info.remove(value)


def rounded_reads(graph, names: list[str]) -> list[str]:
    """``node: input`` for every input of the nodes ``names`` that is a float16 value or a float16 value cast back
    to float32 (empty when the ratio path computes in float32 throughout). ``graph``: a GraphProto."""
    from onnx import TensorProto

    producers, types = _casts(graph)
    wanted = set(names)
    found = []
    for node in graph.node:
        if node.name not in wanted:
            continue
        for name in node.input:
            up = producers.get(name)
            back = _cast_to(up, TensorProto.FLOAT) and types.get(up.input[0]) == TensorProto.FLOAT16
            if types.get(name) == TensorProto.FLOAT16 or back:
                found.append(f"{node.name}: {name}")
    return found


def toposort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (Kahn's algorithm)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ExportFailedError("ONNX graph has a cycle or an undefined input after fp16 conversion")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
