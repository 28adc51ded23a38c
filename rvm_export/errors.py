"""Typed errors and the exit codes the CLI maps them to."""
from __future__ import annotations

__all__ = [
    "ExitCode", "RvmExportError", "UsageError", "InputError", "MissingRuntimeError", "ExportFailedError",
    "ParityError", "OutputMatchError", "ShapeError", "ToleranceError",
]


class ExitCode:
    OK = 0
    PARITY_FAILED = 1  # every requested artifact was written, at least one does not match PyTorch
    USAGE = 2  # bad arguments or bad input (checkpoint, resolution, ratio): nothing was exported
    MISSING_RUNTIME = 3  # a requested target's converter or runtime is not installed
    EXPORT_FAILED = 4  # a converter failed on a valid request


class RvmExportError(Exception):
    exit_code = ExitCode.EXPORT_FAILED


class UsageError(RvmExportError):
    """Arguments a target cannot take, or that contradict each other."""

    exit_code = ExitCode.USAGE


class InputError(RvmExportError):
    """A file or value given by the user is wrong (checkpoint, artifact, resolution)."""

    exit_code = ExitCode.USAGE


class MissingRuntimeError(RvmExportError):
    """An optional package is not installed; the message carries the install command."""

    exit_code = ExitCode.MISSING_RUNTIME

    def __init__(self, what: str, extra: str | None = None, packages: str = "") -> None:
        if extra is None:  # the message already says what is missing and how to get it
            super().__init__(what)
        else:
            hint = f"pip install 'rvm-export[{extra}]'" + (f" (or: pip install {packages})" if packages else "")
            super().__init__(f"{what} is not installed: {hint}")
        self.what = what
        self.extra = extra


class ExportFailedError(RvmExportError):
    """A converter raised on a request that passed validation."""


class ParityError(RvmExportError):
    """An exported artifact does not compute what PyTorch computes."""

    exit_code = ExitCode.PARITY_FAILED


class OutputMatchError(ParityError):
    """The artifact's output names differ from the contract."""


class ShapeError(ParityError):
    """An output has the wrong shape."""


class ToleranceError(ParityError):
    """An output differs from PyTorch by more than the tolerance; names the output and the worst frame."""
