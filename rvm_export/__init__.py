"""rvm-export: export Robust Video Matting to edge runtimes, prove parity over a recurrent rollout, measure speed."""
from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("rvm-export")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["__version__"]
