"""Per-op time of a .tflite on the LiteRT interpreter (XNNPACK), by running each op of the main subgraph alone.

ai-edge-litert's Python interpreter has no op profiler (the C++ benchmark tool's ``--enable_op_profiling`` is not
shipped in the wheel), so this cuts the model into one-op models: the same tensors, weights and options, the op's
non-constant inputs as model inputs (random values), its outputs as model outputs, and times each on the
interpreter with XNNPACK (median of ``--runs`` invokes after one warm-up). An op alone misses what XNNPACK fuses or
elides inside a whole graph and what stays in cache between ops; the sum is printed beside the whole model's median
so the gap is visible. Ops are also grouped by type and by whether they write a full-resolution tensor.

    python benchmarks/tflite_op_profile.py FILE.tflite [--threads 2] [--runs 5] [--json OUT.json] [--top 25]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _one_op_models(content: bytes):
    """Yield (index, op name, output shapes, one-op model bytes) for every op of subgraph 0."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils as fb

    model = fb.convert_bytearray_to_object(bytearray(content))
    graph = model.subgraphs[0]
    names = {v: k for k, v in schema.BuiltinOperator.__dict__.items() if not k.startswith("_")}
    empty = schema.BufferT()
    for index, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        name = names.get(fb.get_builtin_code_from_operator_code(code), "?")
        used = [t for t in op.inputs if t >= 0]
        constant = {t for t in used if graph.tensors[t].buffer > 0 and model.buffers[graph.tensors[t].buffer].data
                    is not None and len(model.buffers[graph.tensors[t].buffer].data) > 0}
        keep = {graph.tensors[t].buffer for t in constant}
        sub = schema.SubGraphT()
        sub.tensors, sub.operators, sub.name = graph.tensors, [op], "op"
        sub.inputs = [t for t in dict.fromkeys(used) if t not in constant]
        sub.outputs = list(op.outputs)
        one = schema.ModelT()
        one.version, one.operatorCodes, one.description = model.version, model.operatorCodes, b"op"
        one.subgraphs = [sub]
        one.buffers = [b if i in keep or i == 0 else empty for i, b in enumerate(model.buffers)]
        one.signatureDefs, one.metadata = [], []
        shapes = [[int(v) for v in graph.tensors[t].shape] for t in op.outputs]
        yield index, name, shapes, bytes(fb.convert_object_to_bytearray(one))


def _is_full_res(shape, pixels: int) -> bool:
    """Whether a tensor of ``shape`` holds frame-sized planes: one axis, or two adjacent ones (H, W), span the frame's
    H * W pixels (a low-res tensor with as many values spreads them over three axes)."""
    dims = [int(v) for v in shape]
    return pixels in dims or any(dims[i] * dims[i + 1] == pixels for i in range(len(dims) - 1))


def _input_sizes(content: bytes) -> list[int]:
    from ai_edge_litert.interpreter import Interpreter

    return [int(np.prod(d["shape"])) for d in Interpreter(model_content=content).get_input_details()]


def _time(content: bytes, threads: int, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=threads)
    interpreter.allocate_tensors()
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        shape, dtype = detail["shape"], np.dtype(detail["dtype"])
        value = rng.random(shape).astype(dtype) if dtype.kind == "f" else np.zeros(shape, dtype)
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def profile(path: Path, threads: int = 2, runs: int = 5) -> dict:
    content = Path(path).read_bytes()
    whole = _time(content, threads, max(runs, 5))
    graph_inputs = _input_sizes(content)
    pixels = max(graph_inputs) // 3  # the frame: src is the largest input, 3 x H x W
    rows = []
    for index, name, shapes, one in _one_op_models(content):
        rows.append({"index": index, "op": name, "out": shapes, "ms": _time(one, threads, runs),
                     "full_res": any(_is_full_res(s, pixels) for s in shapes)})
    by_op: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_op[("full-res " if row["full_res"] else "") + row["op"]].append(row["ms"])
    return {"file": str(path), "threads": threads, "pixels": pixels, "whole_model_ms": whole,
            "sum_of_ops_ms": sum(r["ms"] for r in rows), "ops": rows,
            "by_op": {k: {"count": len(v), "ms": sum(v)} for k, v in sorted(by_op.items(), key=lambda kv: -sum(kv[1]))}}


def table(report: dict, top: int) -> str:
    lines = [f"{report['file']}: whole model {report['whole_model_ms']:.1f} ms; sum of ops alone "
             f"{report['sum_of_ops_ms']:.1f} ms ({report['threads']} threads)", "",
             "| op (full-res: writes a frame-sized tensor) | count | ms | share of sum |", "|---|---|---|---|"]
    total = report["sum_of_ops_ms"]
    for name, v in report["by_op"].items():
        lines.append(f"| {name} | {v['count']} | {v['ms']:.1f} | {100 * v['ms'] / total:.1f} % |")
    lines += ["", "| # | op | output | ms |", "|---|---|---|---|"]
    for row in sorted(report["ops"], key=lambda r: -r["ms"])[:top]:
        lines.append(f"| {row['index']} | {row['op']} | {' '.join(map(str, row['out']))} | {row['ms']:.2f} |")
    return "\n".join(lines)


def regroup(report: dict) -> dict:
    """Recompute ``full_res`` and ``by_op`` of a saved report (from the src input's size, in ``pixels``)."""
    pixels = report["pixels"]
    by_op: dict[str, list[float]] = defaultdict(list)
    for row in report["ops"]:
        row["full_res"] = any(_is_full_res(s, pixels) for s in row["out"])
        by_op[("full-res " if row["full_res"] else "") + row["op"]].append(row["ms"])
    report["by_op"] = {k: {"count": len(v), "ms": sum(v)} for k, v in sorted(by_op.items(), key=lambda kv: -sum(kv[1]))}
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    reports = []
    for path in args.files:
        reports.append(profile(path, args.threads, args.runs))
        print(table(reports[-1], args.top) + "\n", flush=True)
    if args.json:
        args.json.write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
