"""Time artifacts side by side in one run (interleaved; medians): export folders, our ONNX files, foreign ONNX."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rvm_export.core.args import MAX_FRAMES, MAX_SETTLE_MS, bounded_int, input_path, non_negative_float
from rvm_export.core.atomic import write_json_atomic
from rvm_export.core.bucket import Bucket, parse_bucket
from rvm_export.core.errors import ExitCode, InputError, MissingRuntimeError, UsageError
from rvm_export.core.request import Artifact, RuntimeOptions
from rvm_export.core.spec import IOSpec, Precision
from targets import get_target

from ..bench import BenchEntry, bench_side_by_side, format_table, machine_info
from ..folder import artifacts_from_manifest, read_manifest
from .common import add_common, frame_count, output_path

__all__ = ["add_arguments", "run", "HELP"]

HELP = "time artifacts side by side (interleaved, medians)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """This command's arguments, added to its sub-parser."""
    p.add_argument("paths", nargs="*", type=input_path, help="export folders (with manifest.json) or .onnx files")
    p.add_argument("--foreign", action="append", type=input_path, default=[],
                   help="an ONNX file made elsewhere with the original I/O names (src, r1i..r4i, downsample_ratio)")
    p.add_argument("--resolution", action="append", default=None, metavar="WxH[@R]",
                   help="repeatable (default 1280x720)")
    p.add_argument("--frames", type=frame_count, default=30,
                   help=f"timed frames per artifact (1 .. {MAX_FRAMES}; default 30)")
    p.add_argument("--interleave", choices=("frame", "block"), default="frame",
                   help="frame (default): one frame of each artifact in turn; block: --rounds rounds of consecutive "
                        "frames per artifact")
    p.add_argument("--rounds", type=bounded_int(1, MAX_FRAMES), default=3,
                   help="rounds with --interleave block (default 3)")
    p.add_argument("--settle-ms", type=non_negative_float(MAX_SETTLE_MS), default=25.0,
                   help="untimed pause before each timed frame, so one runtime's spinning threads do not slow the "
                        f"next (0 .. {MAX_SETTLE_MS:g}; default 25)")
    p.add_argument("--warmup", type=bounded_int(0, MAX_FRAMES), default=3,
                   help=f"untimed frames after the first (0 .. {MAX_FRAMES}; default 3)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--baseline", default=None,
                   help="row name the speed-up column divides by (default: first foreign); must be one of the rows")
    p.add_argument("--json", type=output_path, default=None, help="write the results here")
    add_common(p)


def _where(artifact: Artifact) -> str:
    """`` [wasm:2]`` for an artifact listed once per backend (the web target), else ``""``."""
    backend = artifact.details.get("backend")
    threads = f":{artifact.details['threads']}" if "threads" in artifact.details else ""
    return f" [{backend}{threads}]" if backend else ""


def _our_onnx(path: Path) -> Artifact | None:
    """An ONNX file written by rvm-export (its contract embedded), or None for a foreign one."""
    from targets.onnx import read_contract

    contract = read_contract(path)
    if contract is None:
        return None
    spec = IOSpec.from_dict(contract)
    return Artifact("onnx", path, Precision.FP32, spec, "dynamic" if spec.dynamic else "static",
                    (spec.bucket,) if spec.bucket else ())


def _rows(artifacts: list[Artifact], foreign: list[Path], bucket: Bucket, options: RuntimeOptions,
          skipped: dict[str, str]) -> list[BenchEntry]:
    """The rows timed at ``bucket``: every foreign file, then every artifact valid there, except those whose target
    says it must not be timed here (``skipped``: row name -> why; coreml's MIL executor off macOS, decision in
    docs/decisions.md)."""
    from targets.onnx import load_foreign

    entries = [BenchEntry(f"foreign:{p.name}", (lambda p=p: load_foreign(p, options)), p) for p in foreign]
    for a in artifacts:
        if a.spec.bucket is not None and a.spec.bucket != bucket:
            continue
        name = f"{a.target}:{a.name}{_where(a)}"
        why = get_target(a.target).DESCRIPTION.untimed_reason
        if why:
            skipped[name] = why
            continue
        entries.append(BenchEntry(name, (lambda a=a: get_target(a.target).load(a, options)), a.path))
    return entries


def run(args: argparse.Namespace) -> int:
    """Run the command from parsed arguments; returns the exit code (errors are raised as RvmExportError).

    Everything is checked before the first artifact is loaded: the paths, the resolutions, the rows each resolution
    will have and ``--baseline`` against them (``--json``'s folder is checked by its argparse type)."""
    import torch

    buckets = [parse_bucket(text) for text in (args.resolution or ["1280x720"])]
    for path in args.foreign:
        if not path.is_file():
            raise InputError(f"--foreign {path}: no such file")
    artifacts = []
    for path in args.paths:
        if path.is_dir() and (path / "manifest.json").is_file():
            artifacts += artifacts_from_manifest(path, read_manifest(path))
        elif path.suffix == ".onnx" and path.is_file():
            artifact = _our_onnx(path)
            if artifact is None:
                raise InputError(f"{path} carries no rvm-export contract: pass it with --foreign")
            artifacts.append(artifact)
        else:
            raise InputError(f"{path} is neither an export folder with manifest.json nor an .onnx file")
    if not artifacts and not args.foreign:
        raise UsageError("nothing to benchmark: give export folders, .onnx files or --foreign files")
    options = RuntimeOptions(threads=args.threads, device=args.device)
    skipped: dict[str, str] = {}
    plan = [(bucket, _rows(artifacts, args.foreign, bucket, options, skipped)) for bucket in buckets]
    names = list(dict.fromkeys(e.name for _, entries in plan for e in entries))
    baseline = args.baseline or (f"foreign:{args.foreign[0].name}" if args.foreign else None)
    if args.baseline is not None and args.baseline not in names:
        why = f" ({args.baseline} is not timed here: {skipped[args.baseline]})" if args.baseline in skipped else ""
        raise UsageError(f"--baseline {args.baseline!r} is not a row of this run{why}; rows: "
                         f"{', '.join(names) or 'none'}")
    for name, why in skipped.items():
        print(f"{name}: skipped, not timed: {why}", file=sys.stderr)
    if args.threads:
        torch.set_num_threads(args.threads)
    results, cannot_run = [], {}
    for bucket, entries in plan:
        if not entries:
            print(f"no artifact runs at {bucket.label}; skipped", file=sys.stderr)
            continue
        unrunnable: dict[str, str] = {}
        results += bench_side_by_side(entries, bucket, frames=args.frames, warmup=args.warmup, rounds=args.rounds,
                                      progress=not args.quiet, interleave=args.interleave,
                                      settle_ms=args.settle_ms, skipped=unrunnable)
        for name, why in unrunnable.items():
            print(f"{name}: skipped at {bucket.label}, this machine cannot run it: {why}", file=sys.stderr)
            skipped[name] = f"this machine cannot run it at {bucket.label}: {why}"
            cannot_run[name] = why
    if not results and cannot_run:  # nothing written: no results file that looks complete
        raise MissingRuntimeError("nothing was timed: this machine cannot run "
                                  + "; ".join(f"{name} ({why})" for name, why in cannot_run.items()))
    if baseline in skipped:
        print(f"--baseline {baseline} was not timed ({skipped[baseline]}): no speed-up column", file=sys.stderr)
    print(format_table(results, baseline))
    if args.json:
        write_json_atomic(args.json, {"machine": machine_info(), "threads": args.threads, "baseline": baseline,
                                      "skipped": skipped, "results": [r.to_dict() for r in results]})
    return ExitCode.OK
