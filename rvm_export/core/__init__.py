"""The core of the export package: what targets and the orchestrator share, importing nothing above ``model``.

Contract names (names), buckets (bucket), the I/O spec (spec), request/artifact records (request), target options
(options), the runner/stream protocols with the one state-feedback loop (runner), the target description (target),
errors and exit codes (errors), artifact metadata (metadata), atomic writes (atomic), and the rollout: generated
scene, PyTorch reference and calibration sets (rollout). See docs/architecture.md.
"""
from __future__ import annotations

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("rvm-export")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.1.0"

__all__ = ["__version__"]
