"""rvm-export: export Robust Video Matting to edge runtimes, prove parity over a recurrent rollout, measure speed.

Layers (docs/architecture.md): ``model`` <- ``rvm_export.core`` <- ``targets`` <- the orchestrator
(``rvm_export.pipeline``, ``parity``, ``bench``, ``report``, ``verify``) <- ``rvm_export.cli``.
"""
from __future__ import annotations

from .core import __version__

__all__ = ["__version__"]
