"""argparse value types shared by every command line of the project (rvm-export and its sub-commands): each one
refuses a bad value with a message that names it, and argparse turns that into exit 2 before any work.

Bounds (docs/bad_inputs.md, docs/decisions.md): frame counts are capped by :data:`MAX_FRAMES` (parity, benchmark,
golden and temporal rollouts) so that a typo such as ``--frames 3000000`` is refused instead of running for days;
output paths must be non-empty and their nearest existing folder a writable folder (:func:`output_path_problem`).
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

__all__ = ["positive_int", "seed", "threads", "OneLineParser", "bounded_int", "non_negative_float", "output_path",
           "output_folder", "output_file_or_folder", "input_path", "output_path_problem", "one_line", "MAX_FRAMES",
           "MAX_TEMPORAL_FRAMES", "MAX_GOLDEN_FRAMES", "MAX_SETTLE_MS"]

# Parity, benchmark and golden rollouts: 10 000 frames is 6:40 of 25 fps video; parity at 1280x720 steps PyTorch and
# each artifact (about 0.2-0.5 s a frame on 2 cores), so 10 000 frames is already hours of work.
MAX_FRAMES = 10_000
# Temporal figures (docs/temporal.md): the README uses 1000; 20 000 frames (13 min of 25 fps video) bounds a run that
# steps PyTorch twice per frame to a day on 2 cores.
MAX_TEMPORAL_FRAMES = 20_000
# Golden frames (docs/web.md) are raw float32 inputs and outputs, about 60 MB a frame at 1920x1080: "a few frames" for
# an app's tests; 100 is 6 GB there.
MAX_GOLDEN_FRAMES = 100
MAX_SETTLE_MS = 10_000.0  # bench --settle-ms: a pause longer than 10 s per frame measures nothing more


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (and exit 2), like every other error of the CLI: the
    usage block stays behind --help."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def one_line(message: object, limit: int = 600) -> str:
    """``message`` as one line: its lines joined with ``" | "`` (blank ones dropped, runs of spaces collapsed), cut
    to ``limit`` characters with ``...``. Runtimes (OpenVINO, LiteRT) raise exceptions whose text spans many lines;
    the CLI's final error must stay one line."""
    parts = [" ".join(line.split()) for line in str(message).splitlines()]
    text = " | ".join(p for p in parts if p)
    return text if len(text) <= limit else text[:limit - 3].rstrip() + "..."


def _ascii_int(text: str) -> int:
    """``int(text)`` for ASCII digits only (Python's int() also takes '９６' and '1_000')."""
    stripped = text.strip()
    digits = stripped[1:] if stripped[:1] in "+-" else stripped
    if not (digits.isascii() and digits.isdigit()):
        raise argparse.ArgumentTypeError(f"must be an integer (ASCII digits), got {text!r}")
    return int(stripped)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _ascii_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def bounded_int(low: int, high: int, zero_means: str | None = None):
    """argparse type factory: an integer in ``low .. high`` (``zero_means``: 0 is also accepted and means that)."""

    def parse(text: str) -> int:
        value = _ascii_int(text)
        if value == 0 and zero_means is not None:
            return 0
        off = f" (or 0: {zero_means})" if zero_means is not None else ""
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}: {low} .. {high}{off}, got {value}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be in {low} .. {high}{off}, got {value}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its fallback message
    return parse


def non_negative_float(high: float):
    """argparse type factory: a finite number in ``0 .. high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not math.isfinite(value) or not 0.0 <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in 0 .. {high:g}, got {text!r}")
        return value

    parse.__name__ = "number"
    return parse


def seed(text: str) -> int:
    """argparse type: a seed NumPy and PyTorch both take, 0 <= seed < 2**32."""
    value = _ascii_int(text)
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be in 0 .. 2**32 - 1, got {value}")
    return value


def threads(text: str) -> int:
    """argparse type: a thread count from 1 to 8 x this machine's cores (thousands of threads only thrash it)."""
    value = positive_int(text)
    limit = 8 * (os.cpu_count() or 1)
    if value > limit:
        raise argparse.ArgumentTypeError(f"{value} is more than this machine's {os.cpu_count()} cores can use "
                                         f"(at most {limit})")
    return value


def output_path_problem(path: Path | str, kind: str | None = None) -> str | None:
    """Why ``path`` cannot be written (None when it can): empty; with ``kind`` "file" an existing folder, with "folder"
    an existing file; or a nearest existing folder on the way that is a file or not writable. Creates nothing."""
    if not str(path).strip():
        return "an empty path: name a file or folder ('.' for the current folder)"
    path = Path(path)
    if path.exists():
        if kind == "folder" and not path.is_dir():
            return f"{path} is a file, not a folder"
        if kind == "file" and path.is_dir():
            return f"{path} is a folder, not a file"
    probe = path.absolute() if path.is_dir() else path.absolute().parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


def input_path(text: str) -> Path:
    """argparse type: a file or folder to read; refuses an empty path (``Path("")`` would be the current folder)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: name a file or folder")
    return Path(text)


def _writable(text: str, kind: str | None) -> Path:
    problem = output_path_problem(text, kind)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def output_path(text: str) -> Path:
    """argparse type: a file to write (see :func:`output_path_problem`)."""
    return _writable(text, "file")


def output_file_or_folder(text: str) -> Path:
    """argparse type: a file or a folder to write (e.g. a video, or a PNG folder); see :func:`output_path_problem`."""
    return _writable(text, None)


def output_folder(text: str) -> Path:
    """argparse type of ``--out``: a non-empty path (the folder itself is checked by ``rvm_export.outdir``, which names
    a file on the way or a read-only file system before any work)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(output_path_problem(text))
    return Path(text)
