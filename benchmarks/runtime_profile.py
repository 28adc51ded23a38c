"""Where a frame's time goes, by the runtime's own profiler: ONNX Runtime's (``enable_profiling``) for an ``.onnx``,
OpenVINO's per-layer counters (``PERF_COUNT``) for an IR's ``.xml``. (For a ``.tflite``, whose Python interpreter
has no op profiler, see benchmarks/tflite_op_profile.py.)

The model runs ``--frames`` frames of a generated moving scene after ``--warmup`` untimed ones, its recurrent state
fed back, with the product's session options (ONNX Runtime: ORT_ENABLE_ALL, ``--threads`` intra-op threads, no
spinning; OpenVINO: the runner's LATENCY hint, one stream, the artifact's inference precision). Times are summed per
op type (ONNX Runtime: the node's ``op_name`` after graph optimisation, e.g. FusedConv, ReorderInput; OpenVINO: the
layer type with its kernel, e.g. ``Convolution [jit_avx2_FP32]``) and divided by the frame count: milliseconds per
frame and their share of the summed kernel time. The heaviest single nodes follow. Kernel sums leave out the
runtime's own overhead between nodes and count what the profiler attributes to each node (OpenVINO's can come out
a little above the wall clock), so the total is printed beside the wall-clock median per frame.

    python benchmarks/runtime_profile.py FILE.onnx|FILE.xml --resolution 1920x1080@0.25 [--threads 2]
        [--frames 20] [--warmup 3] [--top 15] [--json OUT.json]

On a shared machine the shares are the information; the milliseconds move with the load.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def scene(bucket, count: int) -> list[np.ndarray]:
    """``count`` frames of the generated moving scene (rvm_export.core.rollout.MovingScene) at ``bucket``'s size."""
    from rvm_export.core.rollout import MovingScene

    return list(MovingScene(bucket.width, bucket.height, count))


def profile_onnx(path: Path, bucket, threads: int, frames: list[np.ndarray], warmup: int
                 ) -> tuple[dict[str, float], list[tuple[str, str, float]], list[float]]:
    """(ms per frame by op type, [(node, op type, ms per frame)], wall ms per timed frame) on ONNX Runtime's CPU
    provider with the product's session options and profiling on."""
    import onnxruntime as ort

    from rvm_export.core.errors import InputError
    from rvm_export.core.names import RATIO, SRC, STATE_PAIRS
    from rvm_export.core.request import RuntimeOptions
    from rvm_export.core.spec import IOSpec
    from targets.onnx.runtime import read_contract, session_options

    contract = read_contract(path)  # None: a file made elsewhere with the original I/O names
    spec = IOSpec.from_dict(contract) if contract else IOSpec("mobilenetv3", "deep_guided_filter")
    spec.check_bucket(bucket)  # a static file at another size or ratio: UsageError before anything runs
    so = session_options(RuntimeOptions(device="cpu", threads=threads, spin_wait=False))
    with tempfile.TemporaryDirectory() as tmp:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(tmp) / "ort")
        session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        outputs = [o.name for o in session.get_outputs()]
        states = spec.zero_states(bucket, dtype="float32")
        wall: list[float] = []
        # warm-up frames are profiled too; their events are dropped by run index below
        for index, frame in enumerate(frames):
            feeds = {SRC: frame, **states}
            if RATIO in names:
                feeds[RATIO] = np.array([bucket.ratio], np.float32)
            start = time.perf_counter()
            try:
                values = dict(zip(outputs, session.run(None, {k: v for k, v in feeds.items() if k in names})))
            except Exception as exc:  # ONNX Runtime's own error types (e.g. a foreign file's fixed shapes)
                raise InputError(f"ONNX Runtime cannot run {path} at {bucket.label}: "
                                 f"{str(exc).splitlines()[0]}") from None
            if index >= warmup:
                wall.append((time.perf_counter() - start) * 1e3)
            states = {i: values[o] for o, i in STATE_PAIRS}
        trace = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted(e["ts"] for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run")
    first_timed = runs[warmup] if len(runs) > warmup else 0
    kernels = [(e["name"][: -len("_kernel_time")], e["args"].get("op_name", "?"), e["dur"] / 1e3) for e in trace
               if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= first_timed]
    return (*_per_frame(kernels, len(frames) - warmup), wall)


def profile_openvino(path: Path, bucket, threads: int, frames: list[np.ndarray], warmup: int
                     ) -> tuple[dict[str, float], list[tuple[str, str, float]], list[float]]:
    """The same from OpenVINO's per-layer counters (``PERF_COUNT``), with the runner's compile properties."""
    from rvm_export.core.request import RuntimeOptions
    from targets.openvino.runtime import load_ir

    runner = load_ir(path, RuntimeOptions(device="cpu", threads=threads), config={"PERF_COUNT": True})
    stream = runner.stream(bucket)
    kernels: list[tuple[str, str, float]] = []
    wall: list[float] = []
    for index, frame in enumerate(frames):
        start = time.perf_counter()
        stream.step(frame)
        if index < warmup:
            continue
        wall.append((time.perf_counter() - start) * 1e3)
        kernels += [(info.node_name, f"{info.node_type} [{info.exec_type}]", info.real_time.total_seconds() * 1e3)
                    for info in stream.request.profiling_info if info.status.name == "EXECUTED"]
    return (*_per_frame(kernels, len(frames) - warmup), wall)


def _per_frame(kernels: list[tuple[str, str, float]], frames: int
               ) -> tuple[dict[str, float], list[tuple[str, str, float]]]:
    """(ms per frame by op type, [(node, op type, ms per frame)]) from (node, op type, ms) of ``frames`` frames."""
    by_type: dict[str, float] = defaultdict(float)
    by_node: dict[tuple[str, str], float] = defaultdict(float)
    for node, kind, ms in kernels:
        by_type[kind] += ms
        by_node[(node, kind)] += ms
    return ({k: v / frames for k, v in by_type.items()}, [(n, k, ms / frames) for (n, k), ms in by_node.items()])


def table(by_type: dict[str, float], nodes: list[tuple[str, str, float]], wall: list[float], top: int) -> str:
    total = sum(by_type.values())
    lines = ["| op type | ms per frame | share |", "|---|---|---|"]
    for op, ms in sorted(by_type.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {op} | {ms:.2f} | {100 * ms / total:.1f} % |")
    lines.append(f"| **sum of kernels** | **{total:.2f}** | 100 % |")
    lines.append(f"| wall clock per frame (median) | {statistics.median(wall):.2f} | |")
    lines += ["", f"| heaviest nodes (top {top}) | op type | ms per frame | share |", "|---|---|---|---|"]
    for name, op, ms in sorted(nodes, key=lambda t: -t[2])[:top]:
        lines.append(f"| {name} | {op} | {ms:.2f} | {100 * ms / total:.1f} % |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from rvm_export.bench import machine_info
    from rvm_export.core.args import output_path
    from rvm_export.core.atomic import write_json_atomic
    from rvm_export.core.bucket import parse_bucket
    from rvm_export.core.errors import RvmExportError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help=".onnx (ONNX Runtime) or .xml (OpenVINO IR)")
    parser.add_argument("--resolution", required=True, help="WxH@ratio, e.g. 1920x1080@0.25")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--frames", type=int, default=20, help="timed frames (default 20)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--top", type=int, default=15, help="heaviest nodes listed (>= 1)")
    parser.add_argument("--json", type=output_path, help="also write the profile here (checked before any work)")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0 or args.threads < 1 or args.top < 1:
        parser.error("--frames, --threads and --top must be >= 1, --warmup >= 0")
    suffix = args.model.suffix.lower()
    if suffix not in (".onnx", ".xml"):
        parser.error(f"{args.model}: give an .onnx or an OpenVINO .xml (for .tflite: benchmarks/tflite_op_profile.py)")
    if not args.model.exists():
        parser.error(f"{args.model}: no such file")
    if not args.model.is_file():
        parser.error(f"{args.model} is a folder, not a model file")
    try:
        bucket = parse_bucket(args.resolution)
        frames = scene(bucket, args.warmup + args.frames)
        profile = profile_onnx if suffix == ".onnx" else profile_openvino
        by_type, nodes, wall = profile(args.model, bucket, args.threads, frames, args.warmup)
    except RvmExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    runtime = "ONNX Runtime" if suffix == ".onnx" else "OpenVINO"
    print(f"{args.model} on {runtime}, {bucket.label}, {args.threads} threads, {args.frames} frames")
    print(table(by_type, nodes, wall, args.top))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.json, {
            "model": str(args.model), "runtime": runtime, "bucket": bucket.label, "threads": args.threads,
            "frames": args.frames, "machine": machine_info(), "wall_ms": wall,
            "ms_per_frame_by_type": by_type,
            "nodes": [{"name": n, "type": op, "ms": ms} for n, op, ms in sorted(nodes, key=lambda t: -t[2])],
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
