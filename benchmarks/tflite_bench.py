"""TFLite target: parity over a rollout and throughput beside ONNX Runtime, per bucket, in one run.

For each bucket: export the TFLite variants (fp32, fp16 weights, int8 dynamic-range, full int8) and our static fp32
ONNX; run PyTorch fp32 and every artifact in lockstep over a ``--frames`` rollout of the generated scene (states
fed back on each side); then time them side by side in interleaved rounds (rvm_export.bench) on the same threads.
Optionally adds a baseline ONNX (``--baseline-onnx FILE``, or ``--original-style`` to build the stand-in of
benchmarks/original_style_onnx.py) on ONNX Runtime. Prints a markdown table and writes JSON.

    python benchmarks/tflite_bench.py --bucket 1280x720@0.375 --bucket 1920x1080@0.25 --frames 100 \
        --out benchmarks/results/tflite.json [--checkpoint runs/smoke/checkpoint_last.pth] [--original-style]

Timings on a shared machine are noisy: compare ratios within one run (the table's speed-up column), not numbers
across runs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS = {  # name -> (precision, options)
    "fp32": ("fp32", {}),
    "fp16": ("fp16", {}),
    "int8-dynamic": ("int8", {"int8_mode": "dynamic"}),
    "int8-full": ("int8", {"int8_mode": "full"}),
}
ORT_NAME = "onnx fp32 (ORT, static)"


def _load_model(checkpoint: Path | None):
    from model import load_checkpoint

    if checkpoint is None:
        path = ROOT.parent / "shared" / "golden" / "golden_mobilenetv3.pth"
        return load_checkpoint(path), f"golden seeded weights ({path.name}, untrained)", None
    from rvm_export.core.metadata import sha256_file

    return load_checkpoint(checkpoint), str(checkpoint), sha256_file(checkpoint)


def run_bucket(model, bucket, args, work: Path, label: str, sha: str | None) -> dict[str, Any]:
    from rvm_export.bench import BenchEntry, bench_side_by_side
    from rvm_export.parity import ParityReport, compare_many
    from rvm_export.core.rollout import TorchStream
    from rvm_export.core.rollout import MovingScene
    from rvm_export.core.spec import Layout, Precision
    from rvm_export.tolerances import tolerance_for
    from targets import onnx as onnx_target
    from targets import tflite
    from rvm_export.core.request import ExportRequest, RuntimeOptions

    options = RuntimeOptions(threads=args.threads)
    artifacts: list[tuple[str, Any, Any]] = []  # (row name, artifact, module)
    exports: dict[str, float] = {}
    for layout in args.layouts:
        for variant in args.variants:
            precision, opts = VARIANTS[variant]
            request = ExportRequest(model.variant, model.refiner_name, (bucket,), False, Precision(precision),
                                    Layout(layout), options=tflite.TfliteOptions.parse("tflite", opts),
                                    calibration_frames=args.calibration_frames,
                                    checkpoint_sha256=sha, checkpoint_label=label)
            start = time.perf_counter()
            (artifact,) = tflite.export(model, request, work / "tflite")
            name = f"tflite {variant} {layout}"
            exports[name] = time.perf_counter() - start
            artifacts.append((name, artifact, tflite))
            print(f"  exported {artifact.name} in {exports[name]:.0f} s", file=sys.stderr, flush=True)
    onnx_request = ExportRequest(model.variant, model.refiner_name, (bucket,), False, Precision.FP32)
    (onnx_artifact,) = onnx_target.export(model, onnx_request, work / "onnx")
    artifacts.append((ORT_NAME, onnx_artifact, onnx_target))
    entries = [BenchEntry(name, (lambda a=a, m=m: m.load(a, options)), a.path) for name, a, m in artifacts]
    if args.baseline_onnx:
        baseline_label = f"baseline ONNX {args.baseline_onnx.name} (ORT)"
        entries.append(BenchEntry(baseline_label, lambda: onnx_target.load_foreign(args.baseline_onnx, options),
                                  args.baseline_onnx))

    parity: dict[str, Any] = {}
    if args.frames:
        candidates, names = [], []
        for name, artifact, module in artifacts:
            runner = module.load(artifact, options)
            report = ParityReport(artifact.target, artifact.name, artifact.precision.value, bucket, runner.label,
                                  tolerance_for(artifact.target, artifact.precision.value))
            candidates.append((report, runner.stream(bucket)))
            names.append(name)
        print(f"  parity: {len(candidates)} artifacts x {args.frames} frames vs PyTorch fp32", file=sys.stderr)
        scene = MovingScene(bucket.width, bucket.height, args.frames, seed=0)
        errors = compare_many(TorchStream(model, bucket), candidates, scene, progress=True)
        for index, (name, (report, _)) in enumerate(zip(names, candidates)):
            parity[name] = {**report.to_dict(per_frame=True), **({"error": errors[index]} if index in errors else {})}
        del candidates
    results = bench_side_by_side(entries, bucket, frames=args.bench_frames, rounds=args.rounds, progress=True)
    details = {name: {k: v for k, v in a.details.items() if k != "ops"} | {"ops": a.details.get("ops")}
               for name, a, _ in artifacts}
    return {"bucket": bucket.label, "parity": parity, "bench": [r.to_dict() for r in results],
            "export_seconds": exports, "artifacts": details}


def _parity_table(buckets: list[dict[str, Any]]) -> str:
    lines = ["| artifact | bucket | frames | max abs (any output) | pha max abs | pha MAD | fgr MAD | state max | "
             "drift (pha max, slope/frame) | passed |", "|---|---|---|---|---|---|---|---|---|---|"]
    for b in buckets:
        for name, p in b["parity"].items():
            out = p["outputs"]
            state = max((out[k]["max_abs"] for k in ("r1o", "r2o", "r3o", "r4o") if k in out), default=float("nan"))
            pha = out.get("pha", {})
            slope = pha.get("drift", {}).get("slope_per_frame", float("nan"))
            lines.append(f"| {name} | {b['bucket']} | {p['frames']} | {p['max_abs']:.2e} | {pha.get('max_abs', 0):.2e} "
                         f"| {p['pha_mad']:.2e} | {p['fgr_mad']:.2e} | {state:.2e} | {slope:.1e} | {p['passed']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", action="append", default=None, help="WxH@RATIO (repeatable)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--layouts", nargs="+", default=["NHWC"], choices=["NHWC", "NCHW"])
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the golden seeded weights")
    parser.add_argument("--frames", type=int, default=100, help="parity rollout length (0: skip parity)")
    parser.add_argument("--bench-frames", type=int, default=30, help="timed frames per artifact")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-frames", type=int, default=32)
    parser.add_argument("--baseline-onnx", type=Path, default=None, help="an ONNX with the original I/O names")
    parser.add_argument("--original-style", action="store_true",
                        help="build benchmarks/original_style_onnx.py's stand-in and time it as the baseline")
    parser.add_argument("--work", type=Path, default=None, help="keep the artifacts here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "tflite.json")
    args = parser.parse_args(argv)

    import torch

    from rvm_export.core.atomic import write_json_atomic
    from rvm_export.bench import BenchResult, format_table, machine_info
    from rvm_export.core.bucket import parse_bucket

    torch.set_num_threads(args.threads)
    buckets = [parse_bucket(text) for text in (args.bucket or ["1280x720@0.375", "1920x1080@0.25"])]
    model, label, sha = _load_model(args.checkpoint)
    with tempfile.TemporaryDirectory(prefix="tflite_bench.") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.original_style:
            from benchmarks.original_style_onnx import LABEL, build

            args.baseline_onnx = build(work / "original_style.onnx", model)
            print(f"baseline: {LABEL}", file=sys.stderr)
        results = []
        for bucket in buckets:
            print(f"{bucket.label}:", file=sys.stderr, flush=True)
            results.append(run_bucket(model, bucket, args, work, label, sha))
    report = {"weights": label, "threads": args.threads, "machine": machine_info(),
              "note": "shared 2-core machine (other jobs running): compare ratios within this run only",
              "buckets": results}
    write_json_atomic(args.out, report)
    bench = [BenchResult(**r) for b in results for r in b["bench"]]
    print(f"\nweights: {label}; {args.threads} threads; machine: {report['machine'].get('cpu', '?')}, "
          f"load {report['machine'].get('load_average')}\n")
    if args.frames:
        print(_parity_table(results) + "\n")
    print(format_table(bench, baseline=ORT_NAME))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
