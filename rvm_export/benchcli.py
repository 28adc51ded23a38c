"""``rvm-export bench`` and ``rvm-export verify``: work on folders an earlier export left (via manifest.json)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .bench import BenchEntry, bench_side_by_side, format_table, machine_info
from .errors import ExitCode, InputError, UsageError
from .metadata import sha256_path
from .spec import Bucket, IOSpec, Layout, Precision, parse_bucket

__all__ = ["run_bench", "run_verify", "read_manifest", "artifacts_from_manifest"]


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "manifest.json"
    if not path.is_file():
        raise InputError(f"{folder} has no manifest.json (is it an rvm-export output folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON: {exc}") from exc


def artifacts_from_manifest(folder: Path, manifest: dict[str, Any]):
    """Rebuild :class:`targets.base.Artifact` records from a manifest (skipping entries that failed to export)."""
    from targets.base import Artifact

    model = manifest["model"]
    artifacts = []
    for entry in manifest["artifacts"]:
        bucket = None
        if entry["resolution"] is not None:
            width, height = entry["resolution"]
            bucket = Bucket(width, height, float(entry["downsample_ratio"]))
        spec = IOSpec(model["variant"], model["refiner"], bucket, Layout(entry["layout"]),
                      io_dtype=entry["inputs"][0]["dtype"])
        artifacts.append(Artifact(entry["target"], Path(folder) / entry["path"], Precision(entry["precision"]), spec,
                                  entry["flavour"], tuple(parse_bucket(b) for b in entry["buckets"]),
                                  dict(entry.get("details", {}))))
    return artifacts


def _our_onnx(path: Path):
    from targets.base import Artifact
    from targets.onnx import read_contract

    contract = read_contract(path)
    if contract is None:
        return None
    bucket = None
    if contract["resolution"] is not None:
        bucket = Bucket(*contract["resolution"], float(contract["downsample_ratio"]))
    spec = IOSpec(contract["variant"], contract["refiner"], bucket)
    return Artifact("onnx", path, Precision.FP32, spec, "dynamic" if bucket is None else "static",
                    (bucket,) if bucket else ())


def run_bench(args: argparse.Namespace) -> int:
    import torch

    from targets import get_target
    from targets.base import RuntimeOptions
    from targets.onnx import load_foreign

    if args.threads:
        torch.set_num_threads(args.threads)
    options = RuntimeOptions(threads=args.threads, device=args.device)
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
    buckets = [parse_bucket(text) for text in (args.resolution or ["1280x720"])]
    results = []
    for bucket in buckets:
        entries = [BenchEntry(f"foreign:{p.name}", (lambda p=p: load_foreign(p, options)), p) for p in args.foreign]
        for a in artifacts:
            if a.spec.bucket is None or a.spec.bucket == bucket:
                backend = a.details.get("backend")  # one web model is listed once per browser backend
                threads = f":{a.details['threads']}" if "threads" in a.details else ""
                where = f" [{backend}{threads}]" if backend else ""
                entries.append(BenchEntry(f"{a.target}:{a.name}{where}",
                                          (lambda a=a: get_target(a.target).load(a, options)), a.path))
        if not entries:
            print(f"no artifact runs at {bucket.label}; skipped", file=sys.stderr)
            continue
        results += bench_side_by_side(entries, bucket, frames=args.frames, warmup=args.warmup, rounds=args.rounds,
                                      progress=not args.quiet, interleave=args.interleave,
                                      settle_ms=args.settle_ms)
    baseline = args.baseline or (f"foreign:{args.foreign[0].name}" if args.foreign else None)
    print(format_table(results, baseline))
    if args.json:
        from .atomic import write_json_atomic

        write_json_atomic(args.json, {"machine": machine_info(), "threads": args.threads, "baseline": baseline,
                                      "results": [r.to_dict() for r in results]})
    return ExitCode.OK


def run_verify(args: argparse.Namespace) -> int:
    import torch

    from targets import get_target
    from targets.base import RuntimeOptions

    from .pipeline import _check_parity, load_model
    from .report import ArtifactRecord

    if args.threads:
        torch.set_num_threads(args.threads)
    manifest = read_manifest(args.folder)
    model_info = manifest["model"]
    model, info = load_model(args.checkpoint, model_info["variant"], model_info["refiner"], args.seed)
    if model_info.get("checkpoint_sha256") != info.get("checkpoint_sha256"):
        raise InputError(f"the folder was exported from {model_info['weights']} (sha256 "
                         f"{model_info.get('checkpoint_sha256')}), not from {info['weights']}: pass --checkpoint")
    options = RuntimeOptions(threads=args.threads, device=args.device)
    records, runners = [], {}
    for artifact, entry in zip(artifacts_from_manifest(args.folder, manifest), manifest["artifacts"]):
        record = ArtifactRecord(artifact)
        records.append(record)
        if not artifact.path.exists():
            record.errors.append(f"{artifact.path} is missing")
        elif sha256_path(artifact.path) != entry["sha256"]:
            record.errors.append(f"{artifact.path} changed since export (sha256 differs from the manifest)")
        else:
            runners[id(record)] = get_target(artifact.target).load(artifact, options)

    class _Config:  # the parity step reads only these fields
        frames, seed, progress = args.frames, args.seed, not args.quiet

    _check_parity(model, records, runners, _Config)
    failed = [r for r in records if r.status != "exported"]
    for record in records:
        print(f"{record.artifact.path}: {record.status}"
              + "".join(f"\n  {p.bucket.label}: max abs {p.max_abs:.2e}" for p in record.parity)
              + "".join(f"\n  {e}" for e in record.errors))
    return ExitCode.PARITY_FAILED if failed else ExitCode.OK
