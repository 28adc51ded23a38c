"""Export a checkpoint to one or more targets, check parity over a rollout and benchmark (the default command)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from rvm_export.core.bucket import Bucket, parse_bucket
from rvm_export.core.errors import UsageError
from rvm_export.core.names import DEFAULT_OPSET
from rvm_export.core.spec import Layout, Precision

from ..pipeline import RunConfig, resolve_targets, run_export
from rvm_export.core.args import MAX_FRAMES, MAX_GOLDEN_FRAMES, bounded_int, input_path

from .common import add_common, add_temporal, frame_count, output_folder, seed, temporal_clips

__all__ = ["add_arguments", "run", "parse_options", "parse_buckets", "DEFAULT_RESOLUTION", "HELP"]

HELP = "export, check parity, benchmark (the default command)"
DEFAULT_RESOLUTION = "1280x720"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """This command's arguments, added to its sub-parser."""
    p.add_argument("--target", action="append", required=True, metavar="NAME",
                   help="onnx, openvino, tflite, coreml, cuda, web, or all (= the file formats); repeatable or "
                        "comma-separated")
    p.add_argument("--checkpoint", type=input_path, default=None,
                   help=".pth or .safetensors; without it a seeded, UNTRAINED default model is exported")
    p.add_argument("--variant", choices=("mobilenetv3", "resnet50"), default=None,
                   help="default: what the checkpoint looks like (mobilenetv3 for the default model)")
    p.add_argument("--refiner", choices=("deep_guided_filter", "fast_guided_filter"), default=None,
                   help="default: what the checkpoint looks like (deep_guided_filter for the default model)")
    p.add_argument("--resolution", action="append", default=None, metavar="WxH[@R]",
                   help=f"frame size (and ratio) to build or validate; repeatable (default {DEFAULT_RESOLUTION}). "
                        "Without @R the ratio is --downsample-ratio or the recommended one for that size")
    p.add_argument("--downsample-ratio", default="auto", metavar="R|dynamic|auto",
                   help="a number: static models at that ratio; dynamic: one model with a runtime ratio input "
                        "(targets that cannot are refused); auto (default): dynamic where the target can be, "
                        "static per resolution elsewhere")
    p.add_argument("--precision", action="append", default=None, choices=[x.value for x in Precision],
                   help="repeatable; default: each target's default (fp16 for coreml and cuda, fp32 elsewhere)")
    p.add_argument("--layout", choices=[x.value for x in Layout], default="NCHW",
                   help="tensor layout at the model boundary, for targets that offer it (tflite)")
    p.add_argument("--opset", type=int, default=None, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--out", type=output_folder, default=Path("exports"), help="output folder (default: exports)")
    p.add_argument("--frames", type=frame_count, default=30,
                   help=f"parity rollout length in frames (1 .. {MAX_FRAMES}; default 30)")
    p.add_argument("--skip-bench", action="store_true", help="skip the throughput measurement")
    p.add_argument("--bench-frames", type=frame_count, default=30,
                   help=f"timed frames per artifact (1 .. {MAX_FRAMES}; default 30)")
    p.add_argument("--device", default="cpu", help="where the artifacts run: cpu (default), cuda, tensorrt, GPU...")
    p.add_argument("--golden-frames", type=bounded_int(1, MAX_GOLDEN_FRAMES, zero_means="none"), default=0,
                   metavar="N", help=f"also write N (at most {MAX_GOLDEN_FRAMES}) frames of inputs and PyTorch's "
                                     "outputs per bucket under golden/ for an app's own tests (docs/web.md, "
                                     "rvm_export/golden.py; default 0: none)")
    add_temporal(p)
    p.add_argument("--seed", type=seed, default=0, help="seed of the default model and of the generated scene")
    p.add_argument("--option", action="append", default=[], metavar="TARGET.KEY=VALUE",
                   help="target-specific option, e.g. coreml.deployment_target=iOS17 (see docs/<target>.md)")
    add_common(p)


def _known_keys(target: str) -> str:
    """``"onnx option keys: ort, mobile, ..."`` for a registered target (its options dataclass)."""
    from targets import get_target

    keys = ", ".join(get_target(target).DESCRIPTION.options.help()) or "none"
    return f"{target} option keys: {keys}"


def parse_options(items: Sequence[str]) -> dict[str, dict[str, str]]:
    """``["coreml.stateful=true", ...]`` -> ``{"coreml": {"stateful": "true"}}`` (values stay strings: each target's
    options dataclass converts them by type).

    Raises UsageError naming the expected form TARGET.KEY=VALUE (and the target's known keys) for an item without
    ``=VALUE`` or a target that is not registered (target names are lower case), and for a key given twice with
    different values (the same value twice is accepted)."""
    from targets import REGISTRY

    options: dict[str, dict[str, str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        target, dot, name = key.partition(".")
        form = f"--option {item!r} is not TARGET.KEY=VALUE (e.g. onnx.ort=true)"
        if target not in REGISTRY:
            known = target.lower() if target.lower() in REGISTRY else None
            hint = (f"targets are written in lower case: {known}; {_known_keys(known)}" if known else
                    f"TARGET is one of {', '.join(REGISTRY)}")
            raise UsageError(f"{form}; {hint}")
        if not sep or not dot or not name:
            missing = "the =VALUE" if dot and name else "the .KEY"
            raise UsageError(f"{form}; {missing} is missing; {_known_keys(target)}")
        previous = options.get(target, {}).get(name)
        if previous is not None and previous != value:
            raise UsageError(f"--option {target}.{name} is given twice with different values ({previous!r} and "
                             f"{value!r}): give it once")
        options.setdefault(target, {})[name] = value
    return options


def parse_buckets(resolutions: Sequence[str] | None, ratio_text: str) -> tuple[tuple[Bucket, ...], str]:
    """The buckets of ``--resolution`` values and the ratio mode of ``--downsample-ratio`` (auto|dynamic|fixed)."""
    ratio: float | None = None
    if ratio_text not in ("auto", "dynamic"):
        try:
            if not ratio_text.isascii() or "_" in ratio_text:
                raise ValueError(ratio_text)
            ratio = float(ratio_text)
        except ValueError:
            raise UsageError(f"--downsample-ratio must be a number in (0, 1], 'dynamic' or 'auto', got {ratio_text!r}")
        if not 0.0 < ratio <= 1.0:
            raise UsageError(f"--downsample-ratio must be in (0, 1], got {ratio}")
    buckets: list[Bucket] = []
    for text in resolutions or [DEFAULT_RESOLUTION]:
        bucket = parse_bucket(text, ratio)
        if bucket not in buckets:
            buckets.append(bucket)
    mode = "fixed" if ratio is not None else ratio_text
    return tuple(buckets), mode


def run(args: argparse.Namespace) -> int:
    """Run the command from parsed arguments; returns the exit code (errors are raised as RvmExportError)."""
    targets = resolve_targets(args.target)
    buckets, mode = parse_buckets(args.resolution, args.downsample_ratio)
    config = RunConfig(targets=targets, out_dir=args.out, buckets=buckets, ratio_mode=mode,
                       checkpoint=args.checkpoint, variant=args.variant, refiner=args.refiner,
                       precisions=tuple(dict.fromkeys(args.precision)) if args.precision else None,
                       layout=Layout(args.layout), opset=args.opset, frames=args.frames, bench=not args.skip_bench,
                       bench_frames=args.bench_frames, threads=args.threads, device=args.device,
                       options=parse_options(args.option), seed=args.seed, progress=not args.quiet,
                       golden_frames=args.golden_frames, temporal=args.temporal,
                       temporal_clips=temporal_clips(args), temporal_window=args.temporal_window)
    return run_export(config).exit_code
