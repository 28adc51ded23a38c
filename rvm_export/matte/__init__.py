"""``rvm-export matte``: matte real footage with any exported model (or a checkpoint), end to end.

    from rvm_export.matte import matte
    summary = matte("clip.mp4", "exports/", composite="out.mp4", alpha="alpha/", rgba="out.webm")

Decoding (PyAV), inference and compositing/encoding run as overlapping stages; see docs/matte.md. The CLI pieces
(``build_matte_parser``, ``run_matte``) are imported from :mod:`rvm_export.matte.cli`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["matte", "MatteRequest", "MatteSummary", "EncodeOptions", "build_matte_parser", "run_matte"]


def matte(input: str | Path, model: str | Path, **options: Any):
    """Matte ``input`` with ``model`` and write the outputs named in ``options`` (the fields of
    :class:`MatteRequest`: ``composite=``, ``alpha=``, ``foreground=``, ``rgba=``, ``background=``, ...).
    Returns a :class:`MatteSummary`. Raises UsageError/InputError before writing anything, MissingRuntimeError,
    MatteFailed, or KeyboardInterrupt; after any of them no file exists under the requested names."""
    from .job import run
    from .request import MatteRequest

    return run(MatteRequest(input=Path(input), model=Path(model), **options))


def __getattr__(name: str):
    if name == "MatteRequest":
        from .request import MatteRequest

        return MatteRequest
    if name == "MatteSummary":
        from .job import MatteSummary

        return MatteSummary
    if name == "EncodeOptions":
        from .encode import EncodeOptions

        return EncodeOptions
    if name in ("build_matte_parser", "run_matte"):
        from . import cli

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
