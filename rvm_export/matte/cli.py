"""``rvm-export matte``: the arguments, and the run with its exit codes.

    rvm-export matte clip.mp4 --model exports/ --composite out.mp4 --alpha alpha/ --rgba out.webm
    rvm-export matte clip.mp4 --model exports/ --compare exports_int8/ --compare-video side.mp4 --compare-plot d.png

``build_matte_parser(parser)`` adds every option to a parser the caller owns (a subcommand's); ``run_matte(args)``
runs and returns the exit code: 0 ok, 2 bad arguments or input (nothing written), 3 a runtime is not installed,
4 the run failed after it started (nothing left under the requested names), 130 interrupted (likewise).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from rvm_export.core.args import OneLineParser, bounded_int, input_path, one_line
from rvm_export.core.args import output_file_or_folder as _output  # a video file or a PNG folder
from rvm_export.core.args import output_path, positive_int, threads
from rvm_export.core.errors import ExitCode, RvmExportError, UsageError

from .cuts import DEFAULT_THRESHOLD
from .encode import PRESETS, EncodeOptions
from .fit import FIT_MODES

__all__ = ["build_matte_parser", "run_matte", "request_from_args", "main"]

INTERRUPTED = 130
MAX_QUEUE = 64  # frames between two stages, each a few full-size float32 planes (about 100 MB a frame at 3840x2160)


def _ratio(text: str) -> float | None:
    if text == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1] or auto, got {text!r}") from None


def _bitrate(text: str) -> int:
    """``8M``, ``2500k`` or ``800000`` -> bits per second."""
    units = {"k": 1_000, "m": 1_000_000}
    try:
        if text[-1:].lower() in units:
            return int(float(text[:-1]) * units[text[-1].lower()])
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be bits/s like 8M, 2500k or 800000, got {text!r}") from None


def build_matte_parser(parser: argparse.ArgumentParser) -> None:
    """Add every ``matte`` argument to ``parser`` (the lead mounts it as the ``matte`` subcommand)."""
    parser.description = ("Matte a video, an image folder or an image with an exported model (or a checkpoint): "
                          "composite, alpha, foreground and RGBA outputs; decoding, inference and encoding overlap.")
    parser.add_argument("input", type=input_path,
                        help="video file (anything PyAV decodes), folder of images, or one image")
    parser.add_argument("--model", type=input_path, required=True,
                        help="export folder (artifact picked from manifest.json for the frame size), one artifact "
                             "(.onnx, OpenVINO .xml, .tflite) or a checkpoint (.pth/.safetensors, run by PyTorch)")
    parser.add_argument("--artifact", default=None, help="artifact of the export folder to use (its file name)")
    parser.add_argument("--target", default=None, help="pick only artifacts of this target (onnx, openvino, ...)")
    parser.add_argument("--precision", default=None, help="pick only artifacts of this precision (fp32, int8, ...)")
    out = parser.add_argument_group("outputs (any subset; container and codec follow the extension, no extension = "
                                    "a PNG folder)")
    out.add_argument("--composite", type=_output, default=None, help="foreground over --background (.mp4/.mkv/.mov/"
                                                                  ".webm or folder)")
    out.add_argument("--alpha", type=_output, default=None, help="the matte as grey (a folder keeps it lossless)")
    out.add_argument("--foreground", type=_output, default=None, help="the predicted foreground colour, RGB")
    out.add_argument("--rgba", type=_output, default=None,
                     help="foreground with its alpha (straight): .mov (ProRes 4444), .webm (VP9) or a PNG folder")
    out.add_argument("--background", default="green",
                     help="green (default), black, white, blue, #RRGGBB, R,G,B, blur[:RADIUS], an image or a video")
    out.add_argument("--overwrite", action="store_true", help="replace existing outputs (only once the run succeeds)")
    model = parser.add_argument_group("model")
    model.add_argument("--downsample-ratio", type=_ratio, default=None, metavar="auto|R",
                       help="auto (default): the recommended ratio per frame size (a static artifact: its own)")
    model.add_argument("--fit", choices=FIT_MODES, default="letterbox",
                       help="frames of another size than a static artifact's: letterbox (default, keeps proportions), "
                            "resize (stretch) or exact (refuse)")
    model.add_argument("--no-scene-cuts", dest="scene_cuts", action="store_false",
                       help="do not reset the recurrent states at detected scene cuts")
    model.add_argument("--scene-cut-threshold", type=float, default=DEFAULT_THRESHOLD,
                       help=f"mean abs difference of sampled pixels (0..1) that marks a cut "
                            f"(default {DEFAULT_THRESHOLD})")
    model.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    model.add_argument("--threads", type=threads, default=None, help="runtime intra-op threads")
    enc = parser.add_argument_group("encoding")
    enc.add_argument("--crf", type=int, default=None, help="H.264/VP9 constant quality (default 18 / 32)")
    enc.add_argument("--bitrate", type=_bitrate, default=None, help="H.264/VP9 target bitrate, e.g. 8M")
    enc.add_argument("--preset", choices=PRESETS, default=EncodeOptions.preset,
                     help=f"x264 speed preset; VP9 maps it to cpu-used (default {EncodeOptions.preset})")
    enc.add_argument("--png-compression", type=int, default=EncodeOptions.png_compression, metavar="0-9",
                     help=f"PNG zlib level (default {EncodeOptions.png_compression})")
    enc.add_argument("--no-audio", dest="audio", action="store_false", help="do not copy the input's audio")
    run = parser.add_argument_group("run")
    run.add_argument("--frames", type=positive_int, default=None, help="matte only the first N frames")
    run.add_argument("--fps", type=float, default=25.0, help="frame rate of image inputs (default 25)")
    run.add_argument("--queue", type=bounded_int(1, MAX_QUEUE), default=3,
                     help=f"frames waiting between stages (1 .. {MAX_QUEUE}; default 3)")
    run.add_argument("--pipeline-nice", type=bounded_int(0, 19), default=10, metavar="0-19",
                     help="nice increment of the decode and encode threads, so the model keeps the cores it is "
                          "waited on (Linux; default 10; 0: same priority as the model)")
    run.add_argument("--quiet", action="store_true",
                     help="no progress bar, and no INFO lines of the runtimes (LiteRT, coremltools, TensorFlow)")
    run.add_argument("--summary-json", type=output_path, default=None, help="also write the run's summary here")
    cmp = parser.add_argument_group("compare two models")
    cmp.add_argument("--compare", type=input_path, default=None, help="a second model run on the same frames")
    cmp.add_argument("--compare-artifact", default=None, help="artifact of the second model's export folder")
    cmp.add_argument("--compare-video", type=_output, default=None, help="side-by-side composite: model | --compare")
    cmp.add_argument("--compare-plot", type=output_path, default=None, help="PNG of the per-frame alpha difference")


def _error_last(exc: BaseException, line: str) -> None:
    """Print the final error line last: the exception's frames (and the runtimes they hold) are released first, so
    that nothing a runtime prints when it is torn down comes after it, then every buffer is flushed."""
    import gc

    from ..quiet import flush_all

    exc.__traceback__ = None
    gc.collect()
    flush_all()
    print(line, file=sys.stderr, flush=True)


def request_from_args(args: argparse.Namespace):
    """The :class:`~rvm_export.matte.request.MatteRequest` the parsed arguments describe (UsageError for
    values no run can take)."""
    from .request import MatteRequest

    encode = EncodeOptions(crf=args.crf, bitrate=args.bitrate, preset=args.preset,
                           png_compression=args.png_compression)
    return MatteRequest(
        input=args.input, model=args.model, composite=args.composite, alpha=args.alpha, foreground=args.foreground,
        rgba=args.rgba, background=args.background, artifact=args.artifact, target=args.target,
        precision=args.precision, fit=args.fit, downsample_ratio=args.downsample_ratio, scene_cuts=args.scene_cuts,
        scene_cut_threshold=args.scene_cut_threshold, encode=encode, audio=args.audio, fps=args.fps,
        max_frames=args.frames, compare=args.compare, compare_artifact=args.compare_artifact,
        compare_video=args.compare_video, compare_plot=args.compare_plot, overwrite=args.overwrite,
        threads=args.threads, device=args.device, queue_depth=args.queue,
        pipeline_nice=args.pipeline_nice, progress=not args.quiet)


def _report(summary) -> str:
    lines = [f"matted {summary.frames} frame(s) {summary.width}x{summary.height} with {summary.model} at "
             f"{summary.geometry}: {summary.fps:.1f} frames/s end to end"]
    lines += [f"  {kind}: {path}" + (f" (audio {summary.audio[path]})" if path in summary.audio else "")
              for kind, path in summary.outputs.items()]
    if summary.resets:
        lines.append(f"  states reset at frame(s) {', '.join(map(str, summary.resets[:20]))}"
                     + (" ..." if len(summary.resets) > 20 else ""))
    if summary.compare_model:
        worst = max(summary.alpha_diff_max, default=0.0)
        mean = sum(summary.alpha_diff_mean) / max(1, len(summary.alpha_diff_mean))
        lines.append(f"  vs {summary.compare_model}: alpha |diff| mean {mean:.2e}, max {worst:.2e}")
    return "\n".join(lines)


def run_matte(args: argparse.Namespace) -> int:
    """Run from parsed arguments; print a short report; return the exit code (errors: one line on stderr)."""
    from ..quiet import native_output_filtered, quiet_third_party
    from .job import run

    if args.quiet:
        quiet_third_party()
    try:
        if args.summary_json is not None and args.summary_json.exists() and not args.overwrite:
            raise UsageError(f"{args.summary_json} exists: pass --overwrite to replace it")
        with native_output_filtered(args.quiet):
            summary = run(request_from_args(args))
    except RvmExportError as exc:
        _error_last(exc, f"rvm-export matte: error: {one_line(exc)}")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        _error_last(exc, "rvm-export matte: interrupted; nothing was written under the requested names")
        return INTERRUPTED
    print(_report(summary))
    if args.summary_json is not None:
        from rvm_export.core.atomic import write_json_atomic

        write_json_atomic(args.summary_json, summary.to_dict())
    return ExitCode.OK


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m rvm_export.matte ...``: the same as ``rvm-export matte ...``."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = OneLineParser(prog="rvm-export matte")
    build_matte_parser(parser)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help exits 0, bad arguments exit 2
        return int(exc.code or 0)
    return run_matte(args)
