"""Matte real footage with any exported model (or a checkpoint): composite, alpha, foreground, RGBA outputs."""
from __future__ import annotations

import argparse

from ..matte.cli import build_matte_parser, run_matte

__all__ = ["add_arguments", "run", "HELP"]

HELP = "matte a video, an image folder or an image with an exported model (docs/matte.md)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Every option of ``rvm-export matte`` (rvm_export/matte/cli.py defines them)."""
    build_matte_parser(p)


def run(args: argparse.Namespace) -> int:
    """Run the matte job; returns its exit code."""
    return run_matte(args)
