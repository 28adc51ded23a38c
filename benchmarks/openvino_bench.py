"""OpenVINO target: quality and throughput beside ONNX Runtime, per bucket, in one run on the same threads.

For each bucket: export the OpenVINO IRs (dynamic fp32; static fp32, fp16-weights/bf16 and int8; the stateful
static fp32), run PyTorch fp32 and every configuration in lockstep over a ``--frames`` rollout of the generated
scene (states fed back on each side), then time every configuration and the ONNX Runtime baselines side by side,
one frame of each in turn, alternating order (rvm_export.bench; ``--interleave block`` for rounds instead).
Baselines: any ONNX with the original I/O names (``--baseline-onnx``, repeatable), the original-style stand-in of
benchmarks/original_style_onnx.py (on unless ``--no-original-style``) and our own dynamic fp32 ONNX. Prints a
markdown table and writes JSON.

    python benchmarks/openvino_bench.py --bucket 1920x1080@0.25 --bucket 3840x2160@0.125 --frames 100 \\
        --out benchmarks/results/openvino.json [--checkpoint runs/smoke/checkpoint_last.pth]

Every row states the inference precision it ran with. Timings on a shared machine are noisy: compare the speed-up
column (ratios within one run), not numbers across runs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@dataclass(frozen=True)
class Config:
    name: str  # row label
    precision: str  # artifact precision
    flavour: str  # "dynamic" | "static" | "stateful"
    inference: str  # OpenVINO INFERENCE_PRECISION_HINT
    compile: dict[str, Any] = field(default_factory=dict)  # extra compile properties
    reshape: bool = False  # dynamic IR reshaped to the bucket at load


CONFIGS = {c.name: c for c in (
    Config("ov dynamic fp32 (f32)", "fp32", "dynamic", "f32"),
    Config("ov dynamic fp32 reshaped (f32)", "fp32", "dynamic", "f32", reshape=True),
    Config("ov static fp32 (f32)", "fp32", "static", "f32"),
    Config("ov static fp32 pinned (f32)", "fp32", "static", "f32", {"ENABLE_CPU_PINNING": True}),
    Config("ov stateful fp32 (f32)", "fp32", "stateful", "f32"),
    Config("ov static bf16 (bf16)", "bf16", "static", "bf16"),
    Config("ov static int8 (f32)", "int8", "static", "f32"),
    Config("ov static int8 (bf16)", "int8", "static", "bf16"),
)}
DEFAULT_CONFIGS = [n for n in CONFIGS if "pinned" not in n]


def _load_model(checkpoint: Path | None):
    from model import load_checkpoint

    if checkpoint is None:
        path = ROOT.parent / "shared" / "golden" / "golden_mobilenetv3.pth"
        return load_checkpoint(path), f"golden seeded weights ({path.name}, untrained)", None
    from rvm_export.core.metadata import sha256_file

    return load_checkpoint(checkpoint), str(checkpoint), sha256_file(checkpoint)


def _export_all(model, bucket, configs: list[Config], args, work: Path, label: str, sha: str | None):
    """{(precision, flavour): artifact} for what the configs need."""
    from rvm_export.core.spec import Precision
    from targets import openvino
    from rvm_export.core.request import ExportRequest

    wanted = {(c.precision, "static" if c.flavour == "stateful" else c.flavour) for c in configs}
    stateful = {c.precision for c in configs if c.flavour == "stateful"}
    artifacts: dict[tuple[str, str], Any] = {}
    for precision, flavour in sorted(wanted):
        request = ExportRequest(model.variant, model.refiner_name, (bucket,), flavour == "dynamic",
                                Precision(precision),
                                options=openvino.OpenVinoOptions(stateful=precision in stateful),
                                calibration_frames=args.calibration_frames, checkpoint_sha256=sha,
                                checkpoint_label=label)
        start = time.perf_counter()
        for artifact in openvino.export(model, request, work / f"{bucket.label}_{precision}_{flavour}"):
            artifacts[(precision, artifact.flavour)] = artifact
        print(f"  exported {precision} {flavour} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return artifacts


def _baselines(model, args, work: Path) -> list[tuple[str, Path]]:
    from rvm_export.core.spec import IOSpec
    from targets.onnx import export_graph

    paths = [(f"ORT {p.name}", p) for p in args.baseline_onnx]
    if args.original_style:
        from benchmarks.original_style_onnx import LABEL, build

        paths.append((f"ORT {LABEL.split(' (')[0]}", build(work / "original_style.onnx", model)))
    ours = work / "rvm_export_dynamic_fp32.onnx"
    export_graph(model, IOSpec(model.variant, model.refiner_name), ours)
    paths.append(("ORT rvm-export dynamic fp32", ours))
    return paths


def run_bucket(model, bucket, args, work: Path, label: str, sha: str | None) -> dict[str, Any]:
    from rvm_export.bench import BenchEntry, bench_side_by_side, format_table
    from rvm_export.parity import ParityReport, compare_many
    from rvm_export.core.rollout import TorchStream
    from rvm_export.core.rollout import MovingScene
    from rvm_export.tolerances import tolerance_for
    from targets import onnx as onnx_target
    from targets import openvino
    from rvm_export.core.request import RuntimeOptions

    configs = [CONFIGS[n] for n in args.configs]
    artifacts = _export_all(model, bucket, configs, args, work, label, sha)

    def loader(config: Config):
        artifact = artifacts[(config.precision, config.flavour)]
        options = RuntimeOptions(threads=args.threads, inference_precision=config.inference)
        from targets.openvino.runtime import xml_path

        return lambda: openvino.OpenVinoRunner(
            xml_path(artifact.path), artifact.spec, options, artifact, artifact.precision,
            config=config.compile, reshape=bucket if config.reshape else None)

    entries = [BenchEntry(c.name, loader(c), artifacts[(c.precision, c.flavour)].path) for c in configs]
    baselines = _baselines(model, args, work)
    ort_options = RuntimeOptions(threads=args.threads)
    entries += [BenchEntry(name, (lambda p=path: onnx_target.load_foreign(p, ort_options, model.variant)), path)
                for name, path in baselines]
    quality: dict[str, Any] = {}
    if args.frames:
        reports = []
        for config, entry in zip(configs, entries):
            runner = entry.load()
            report = ParityReport("openvino", config.name, config.precision, bucket, runner.label,
                                  tolerance_for("openvino", config.precision))
            reports.append((report, runner.stream(bucket)))
        errors = compare_many(TorchStream(model, bucket), reports, MovingScene(bucket.width, bucket.height,
                                                                                 args.frames, seed=0), progress=True)
        for index, (report, _) in enumerate(reports):
            quality[report.artifact] = {**report.to_dict(), "runtime_error": errors.get(index)}
    results = bench_side_by_side(entries, bucket, frames=args.bench_frames, rounds=args.rounds,
                                 interleave=args.interleave)
    baseline = baselines[0][0]
    table = format_table(results, baseline=baseline)
    details = {f"{k[0]} {k[1]}": a.details for k, a in artifacts.items()}
    return {"bucket": bucket.label, "baseline": baseline, "results": [r.to_dict() for r in results],
            "quality": quality, "table": table, "artifacts": details}


def _quality_table(buckets: list[dict[str, Any]]) -> str:
    lines = ["| configuration | bucket | frames | max abs | pha MAD | fgr MAD | checked with | pass |",
             "|---|---|---|---|---|---|---|---|"]
    for entry in buckets:
        for name, q in entry["quality"].items():
            lines.append(f"| {name} | {entry['bucket']} | {q['frames']} | {q['max_abs']:.2e} | {q['pha_mad']:.2e} "
                         f"| {q['fgr_mad']:.2e} | {q['checked_with']} | {'yes' if q['passed'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bucket", action="append", default=None, help="WxH@RATIO (repeatable)")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, choices=list(CONFIGS), metavar="NAME",
                        help=f"which configurations (default: all but pinned); choices: {list(CONFIGS)}")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the golden seeded weights")
    parser.add_argument("--frames", type=int, default=100, help="quality rollout length (0: skip)")
    parser.add_argument("--bench-frames", type=int, default=30, help="timed frames per configuration")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds (--interleave block)")
    parser.add_argument("--interleave", choices=["frame", "block"], default="frame",
                        help="frame: one frame of each entry per round, order alternating (default; robust to load "
                             "changes); block: rvm_export.bench's rounds of consecutive frames per entry")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calibration-frames", type=int, default=32)
    parser.add_argument("--baseline-onnx", type=Path, action="append", default=[],
                        help="an ONNX with the original I/O names, run on ONNX Runtime (repeatable)")
    parser.add_argument("--no-original-style", dest="original_style", action="store_false",
                        help="skip the original-style ONNX stand-in (benchmarks/original_style_onnx.py)")
    parser.add_argument("--work", type=Path, default=None, help="keep the artifacts here (default: a temp dir)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "openvino.json")
    args = parser.parse_args(argv)

    import torch

    from rvm_export.core.atomic import write_json_atomic
    from rvm_export.bench import machine_info
    from rvm_export.core.bucket import parse_bucket

    torch.set_num_threads(args.threads)
    for path in args.baseline_onnx:
        if not path.is_file():
            parser.error(f"--baseline-onnx {path}: no such file")
    buckets = [parse_bucket(b) for b in (args.bucket or ["1920x1080@0.25"])]
    model, label, sha = _load_model(args.checkpoint)
    machine_before = machine_info()
    results = []
    with tempfile.TemporaryDirectory(prefix="ov_bench_") as tmp:
        work = args.work or Path(tmp)
        for bucket in buckets:
            print(f"== {bucket.label}", file=sys.stderr)
            results.append(run_bucket(model, bucket, args, work, label, sha))
    report = {"weights": label, "checkpoint_sha256": sha, "threads": args.threads, "frames": args.frames,
              "bench_frames": args.bench_frames, "rounds": args.rounds, "interleave": args.interleave,
              "machine_before": machine_before,
              "machine_after": machine_info(), "buckets": results,
              "note": "shared machine: compare speed-ups within one run; the baseline is the first ORT row"}
    write_json_atomic(args.out, report)
    for entry in results:
        print(f"\n### {entry['bucket']} (speed-up vs {entry['baseline']})\n\n{entry['table']}")
    if args.frames:
        print(f"\n### quality vs PyTorch fp32 over the rollout ({label})\n\n{_quality_table(results)}")
    print(f"\nload average before/after: {machine_before.get('load_average')} / "
          f"{report['machine_after'].get('load_average')}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
