"""Graph edits of an exported ONNX model: the fp16 conversion and the walks it needs."""
from __future__ import annotations

from typing import Any

from rvm_export.core.errors import ExportFailedError
from rvm_export.core.names import RATIO

__all__ = ["to_fp16", "ratio_path_nodes", "toposort"]


def ratio_path_nodes(graph) -> list[str]:
    """Names of the nodes that compute from ``downsample_ratio`` (scales, the ratio==1 test), which must stay
    float32: walk forward from the input, stopping after a Resize and before a Where (bool condition in)."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    keep, frontier = [], [RATIO]
    seen: set[str] = set()
    while frontier:
        value = frontier.pop()
        for node in consumers.get(value, []):
            if node.name in seen or node.op_type == "Where":
                continue
            seen.add(node.name)
            keep.append(node.name)
            if node.op_type != "Resize":
                frontier.extend(node.output)
    return keep


def to_fp16(graph):
    """float16 weights and activations with float32 I/O; the ratio/size arithmetic stays float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    for i, node in enumerate(graph.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    blocked = ratio_path_nodes(graph)
    converted = convert_float_to_float16(graph, keep_io_types=True, node_block_list=blocked)
    toposort(converted.graph)  # the converter appends its Cast nodes at the end
    return converted


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
