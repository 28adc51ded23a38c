"""Re-check parity of every artifact listed in an export folder's manifest against PyTorch (a CI gate): exit 1
when an artifact fails or is missing or changed, 2 when the folder or the checkpoint is not the right input, 3 when
this machine cannot run an artifact (e.g. OpenVINO bf16 without AMX/AVX512-BF16: "not checked here")."""
from __future__ import annotations

import argparse
import sys

from ..verify import verify_folder
from rvm_export.core.args import input_path

from .common import add_common, add_temporal, frame_count, seed, temporal_clips

__all__ = ["add_arguments", "run", "HELP"]

HELP = ("re-check an export folder against PyTorch; exit 1 when an artifact fails, 2 for bad input, 3 when this "
        "machine cannot run one")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """This command's arguments, added to its sub-parser."""
    p.add_argument("folder", type=input_path)
    p.add_argument("--checkpoint", type=input_path, default=None,
                   help="the weights the folder was exported from (default: the seeded default model)")
    p.add_argument("--frames", type=frame_count, default=30, help="parity rollout length (1 .. 10000; default 30)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=seed, default=0)
    add_temporal(p)
    add_common(p)


def run(args: argparse.Namespace) -> int:
    """Run the command from parsed arguments; returns the exit code (errors are raised as RvmExportError)."""
    result = verify_folder(args.folder, args.checkpoint, args.frames, args.seed, args.threads, args.device,
                           progress=not args.quiet, temporal=args.temporal, temporal_clips=temporal_clips(args),
                           temporal_window=args.temporal_window)
    for record in result.records:
        print(f"{record.artifact.path}: {record.status}"
              + "".join(f"\n  {p.bucket.label}: max abs {p.max_abs:.2e}" for p in record.parity)
              + "".join(f"\n  {_temporal_line(t)}" for t in record.temporal)
              + "".join(f"\n  {e}" for e in record.errors)
              + (f"\n  not checked here: {record.unchecked}" if record.unchecked else ""))
    unchecked = [r for r in result.records if r.unchecked and not r.errors]
    if unchecked and result.exit_code == 3:
        print(f"rvm-export: error: {len(unchecked)} artifact(s) not checked against PyTorch here: "
              + "; ".join(f"{r.artifact.name}: {r.unchecked}" for r in unchecked), file=sys.stderr)
    return result.exit_code


def _temporal_line(report) -> str:
    from ..temporal import summary_line

    return f"{report.bucket.label} temporal, {report.source}: {summary_line(report)}"
