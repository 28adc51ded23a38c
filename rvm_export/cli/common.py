"""Arguments every command shares."""
from __future__ import annotations

import argparse

__all__ = ["add_common", "positive_int", "seed"]


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def seed(text: str) -> int:
    """argparse type: a seed NumPy and PyTorch both take, 0 <= seed < 2**32."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 2**32 - 1, got {value}")
    return value


def add_common(parser: argparse.ArgumentParser) -> None:
    """--threads and --quiet, which every command takes."""
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="intra-op threads for every runtime and PyTorch (default: the runtime's default)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
