"""argparse value types shared by every command line of the project (rvm-export and its sub-commands): each one
refuses a bad value with a message that names it, and argparse turns that into exit 2."""
from __future__ import annotations

import argparse

__all__ = ["positive_int", "seed", "threads", "OneLineParser"]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (and exit 2), like every other error of the CLI: the
    usage block stays behind --help."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


def threads(text: str) -> int:
    """argparse type: a thread count from 1 to 8 x this machine's cores (thousands of threads only thrash it)."""
    import os

    value = positive_int(text)
    limit = 8 * (os.cpu_count() or 1)
    if value > limit:
        raise argparse.ArgumentTypeError(f"{value} is more than this machine's {os.cpu_count()} cores can use "
                                         f"(at most {limit})")
    return value
