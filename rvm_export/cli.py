"""``rvm-export``: export, verify and benchmark. ``main(argv=None) -> int`` so tests drive it in-process.

    rvm-export --target onnx --checkpoint rvm_mobilenetv3.pth --resolution 1920x1080 --out exports/
    rvm-export bench exports/ --foreign rvm_mobilenetv3_fp32.onnx --resolution 1920x1080@0.25 --threads 2
    rvm-export verify exports/ --checkpoint rvm_mobilenetv3.pth
    rvm-export targets
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from . import __version__
from .errors import ExitCode, RvmExportError, UsageError
from .spec import Layout, Precision, parse_bucket

__all__ = ["main", "build_parser", "build_bench_parser", "build_verify_parser"]

DEFAULT_RESOLUTION = "1280x720"
SUBCOMMANDS = ("export", "bench", "verify", "targets")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="intra-op threads for every runtime and PyTorch (default: the runtime's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rvm-export", description="Export Robust Video Matting, check parity with PyTorch over a recurrent "
        "rollout and measure throughput. Subcommands: export (default), bench, verify, targets.")
    p.add_argument("--version", action="version", version=f"rvm-export {__version__}")
    p.add_argument("--target", action="append", required=True, metavar="NAME",
                   help="onnx, openvino, tflite, coreml, cuda, web, or all (= the four file formats); repeatable or "
                        "comma-separated")
    p.add_argument("--checkpoint", type=Path, default=None,
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
                   help="repeatable; default: each target's default (fp16 for coreml, fp32 elsewhere)")
    p.add_argument("--layout", choices=[x.value for x in Layout], default="NCHW",
                   help="tensor layout at the model boundary, for targets that offer it (tflite)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--out", type=Path, default=Path("exports"), help="output folder (default: exports)")
    p.add_argument("--frames", type=_positive_int, default=30, help="parity rollout length in frames (default 30)")
    p.add_argument("--skip-bench", action="store_true", help="skip the throughput measurement")
    p.add_argument("--bench-frames", type=_positive_int, default=30, help="timed frames per artifact (default 30)")
    p.add_argument("--device", default="cpu", help="where the artifacts run: cpu (default), cuda, tensorrt, GPU...")
    p.add_argument("--seed", type=int, default=0, help="seed of the default model and of the generated scene")
    p.add_argument("--option", action="append", default=[], metavar="TARGET.KEY=VALUE",
                   help="target-specific option, e.g. coreml.deployment_target=iOS17 (see docs/<target>.md)")
    _common(p)
    return p


def build_bench_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rvm-export bench", description="Time artifacts side by side in one run "
                                "(interleaved; medians). Paths: export folders (with manifest.json), "
                                "or ONNX files exported by rvm-export.")
    p.add_argument("paths", nargs="*", type=Path, help="export folders or .onnx files")
    p.add_argument("--foreign", action="append", type=Path, default=[],
                   help="an ONNX file made elsewhere with the original I/O names (src, r1i..r4i, downsample_ratio)")
    p.add_argument("--resolution", action="append", default=None, metavar="WxH[@R]",
                   help=f"repeatable (default {DEFAULT_RESOLUTION})")
    p.add_argument("--frames", type=_positive_int, default=30, help="timed frames per artifact (default 30)")
    p.add_argument("--interleave", choices=("frame", "block"), default="frame",
                   help="frame (default): one frame of each artifact in turn; block: --rounds rounds of consecutive "
                        "frames per artifact")
    p.add_argument("--rounds", type=_positive_int, default=3, help="rounds with --interleave block (default 3)")
    p.add_argument("--settle-ms", type=float, default=25.0,
                   help="untimed pause before each timed frame, so one runtime's spinning threads do not slow the "
                        "next (default 25)")
    p.add_argument("--warmup", type=int, default=3, help="untimed frames after the first (default 3)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--baseline", default=None, help="row name the speed-up column divides by (default: first foreign)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    _common(p)
    return p


def build_verify_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rvm-export verify", description="Re-check parity of every artifact listed in "
                                "an export folder's manifest against PyTorch (a CI gate); exit 1 on any failure.")
    p.add_argument("folder", type=Path)
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="the weights the folder was exported from (default: the seeded default model)")
    p.add_argument("--frames", type=_positive_int, default=30)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    _common(p)
    return p


def _parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        target, dot, name = key.partition(".")
        if not sep or not dot or not target or not name:
            raise UsageError(f"--option {item!r} is not TARGET.KEY=VALUE (e.g. coreml.deployment_target=iOS17)")
        options.setdefault(target, {})[name] = _parse_value(value)
    return options


def _buckets(resolutions: Sequence[str] | None, ratio_text: str):
    ratio: float | None = None
    if ratio_text not in ("auto", "dynamic"):
        try:
            ratio = float(ratio_text)
        except ValueError:
            raise UsageError(f"--downsample-ratio must be a number in (0, 1], 'dynamic' or 'auto', got {ratio_text!r}")
        if not 0.0 < ratio <= 1.0:
            raise UsageError(f"--downsample-ratio must be in (0, 1], got {ratio}")
    buckets = []
    for text in resolutions or [DEFAULT_RESOLUTION]:
        bucket = parse_bucket(text, ratio)
        if bucket not in buckets:
            buckets.append(bucket)
    mode = "fixed" if ratio is not None else ratio_text
    return tuple(buckets), mode


def _run_export(argv: Sequence[str]) -> int:
    from .pipeline import RunConfig, resolve_targets, run_export

    args = build_parser().parse_args(argv)
    targets = resolve_targets(args.target)
    buckets, mode = _buckets(args.resolution, args.downsample_ratio)
    options = parse_options(args.option)
    unknown = sorted(set(options) - set(targets))
    if unknown:
        raise UsageError(f"--option for {', '.join(unknown)}, which is not among the targets {', '.join(targets)}")
    config = RunConfig(targets=targets, out_dir=args.out, buckets=buckets, ratio_mode=mode,
                       checkpoint=args.checkpoint, variant=args.variant, refiner=args.refiner,
                       precisions=tuple(dict.fromkeys(args.precision)) if args.precision else None,
                       layout=Layout(args.layout), opset=args.opset, frames=args.frames, bench=not args.skip_bench,
                       bench_frames=args.bench_frames, threads=args.threads, device=args.device, options=options,
                       seed=args.seed, progress=not args.quiet)
    result = run_export(config)
    return result.exit_code


def _run_bench(argv: Sequence[str]) -> int:
    from .benchcli import run_bench

    return run_bench(build_bench_parser().parse_args(argv))


def _run_verify(argv: Sequence[str]) -> int:
    from .benchcli import run_verify

    return run_verify(build_verify_parser().parse_args(argv))


def _list_targets() -> int:
    from targets import REGISTRY, get_target

    for name in REGISTRY:
        try:
            module = get_target(name)
            missing = module.missing()
            precisions = ", ".join(module.PRECISIONS)
        except ImportError as exc:
            missing, precisions = f"module not importable: {exc}", "-"
        state = "available" if not missing else f"not available ({missing})"
        print(f"{name:9s} {state}; precisions: {precisions}")
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    command = argv[0] if argv and argv[0] in SUBCOMMANDS else "export"
    rest = argv[1:] if argv and argv[0] in SUBCOMMANDS else argv
    try:
        if command == "bench":
            return _run_bench(rest)
        if command == "verify":
            return _run_verify(rest)
        if command == "targets":
            return _list_targets()
        return _run_export(rest)
    except RvmExportError as exc:
        print(f"rvm-export: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rvm-export: interrupted; artifacts already written are complete, the manifest was not written",
              file=sys.stderr)
        return 130
    except SystemExit as exc:  # argparse: --help exits 0, bad arguments exit 2
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
