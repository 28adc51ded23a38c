"""Arguments every command shares."""
from __future__ import annotations

import argparse

__all__ = ["add_common", "positive_int", "seed", "threads"]

from rvm_export.core.args import positive_int, seed, threads  # noqa: E402  (re-exported for the commands)


def add_common(parser: argparse.ArgumentParser) -> None:
    """--threads and --quiet, which every command takes."""
    parser.add_argument("--threads", type=threads, default=None,
                        help="intra-op threads for every runtime and PyTorch (default: the runtime's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
