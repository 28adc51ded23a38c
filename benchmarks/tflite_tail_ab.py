"""A/B timing of export folders that hold files of the same names (e.g. TFLite before and after a graph change),
side by side with the original-style ONNX stand-in on ONNX Runtime, in one run (rvm_export.bench: one frame each in
turn, settle pause, medians). ``rvm-export bench`` names rows by file name, so two folders of one export collide;
here each row is prefixed with the label of its folder.

    python benchmarks/tflite_tail_ab.py --set before=DIR --set after=DIR [--set ...] --foreign original_style.onnx \
        --resolution 1920x1080@0.25 --resolution 3840x2160@0.125 [--frames 20] [--threads 2] [--json OUT]

Timings on a shared machine are noisy: read the ratios within one run; the load average is printed and saved.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _cpu_side_by_side(entries, bucket, frames: int, warmup: int):
    """Like rvm_export.bench.bench_side_by_side (frame interleave, order reversed every other step), with the median
    process CPU time of a step in ``mean_ms``'s place (``median_ms`` stays wall time)."""
    import time

    import numpy as np

    from rvm_export.bench import BenchResult
    from rvm_export.core.rollout import MovingScene

    scene = MovingScene(bucket.width, bucket.height, 4, seed=7)
    clip = [scene.frame(t) for t in range(4)]
    loaded = []
    for entry in entries:
        runner = entry.load()
        stream = runner.stream(bucket)
        for i in range(warmup + 1):
            stream.step(clip[i % 4])
        loaded.append((entry, runner, stream, [], []))
    for i in range(frames):
        for _, _, stream, walls, cpus in (loaded if i % 2 == 0 else loaded[::-1]):
            time.sleep(0.025)
            wall, cpu = time.perf_counter(), time.process_time()
            stream.step(clip[i % 4])
            cpus.append((time.process_time() - cpu) * 1e3)
            walls.append((time.perf_counter() - wall) * 1e3)
    results = []
    for entry, runner, _, walls, cpus in loaded:
        wall, cpu = float(np.median(walls)), float(np.median(cpus))
        print(f"{entry.name}: wall median {wall:.1f} ms, CPU median {cpu:.1f} ms", flush=True)
        results.append(BenchResult(entry.name, (runner.label or "") + " [mean_ms = median CPU ms]", bucket.label,
                                   len(walls), 0.0, 0.0, wall, float(np.percentile(walls, 90)), cpu, 1e3 / wall, 0.0))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", required=True, metavar="LABEL=DIR",
                        help="an export folder (manifest.json) or a folder of them, under a row label")
    parser.add_argument("--foreign", type=Path, default=None, help="the baseline ONNX (original I/O names)")
    parser.add_argument("--resolution", action="append", required=True, help="WxH@R (repeatable)")
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cpu-time", action="store_true",
                        help="also record the process CPU time of each step (with --threads 1: the work done, "
                             "much less sensitive to other tenants than wall time)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from rvm_export.bench import BenchEntry, bench_side_by_side, format_table, machine_info
    from rvm_export.core.atomic import write_json_atomic
    from rvm_export.core.bucket import parse_bucket
    from rvm_export.folder import artifacts_from_manifest, read_manifest
    from rvm_export.core.request import RuntimeOptions
    from targets import get_target
    from targets.onnx import load_foreign

    torch.set_num_threads(args.threads)
    options = RuntimeOptions(threads=args.threads)
    sets = []
    for item in args.set:
        label, _, folder = item.partition("=")
        folders = [Path(folder)] if (Path(folder) / "manifest.json").is_file() else sorted(
            p.parent for p in Path(folder).glob("*/manifest.json"))
        for path in folders:
            sets += [(label, a) for a in artifacts_from_manifest(path, read_manifest(path))]
    load_before = os.getloadavg()
    results = []
    for text in args.resolution:
        bucket = parse_bucket(text)
        entries = [BenchEntry(f"foreign:{args.foreign.name}", lambda: load_foreign(args.foreign, options),
                              args.foreign)] if args.foreign else []
        entries += [BenchEntry(f"{label}:{a.name}", (lambda a=a: get_target(a.target).load(a, options)), a.path)
                    for label, a in sets if a.spec.bucket == bucket]
        if args.cpu_time:
            results += _cpu_side_by_side(entries, bucket, args.frames, args.warmup)
        else:
            results += bench_side_by_side(entries, bucket, frames=args.frames, warmup=args.warmup, progress=True)
    baseline = f"foreign:{args.foreign.name}" if args.foreign else None
    load_after = os.getloadavg()
    print(format_table(results, baseline))
    print(f"load average before {load_before}, after {load_after} ({os.cpu_count()} CPUs)")
    if args.json:
        write_json_atomic(args.json, {"machine": machine_info(), "threads": args.threads, "baseline": baseline,
                                      "load_average_before": load_before, "load_average_after": load_after,
                                      "sets": args.set, "results": [r.to_dict() for r in results]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
