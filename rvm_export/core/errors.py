"""Typed errors, the exit codes the CLI maps them to, and typed parity failures.

Exit codes (the README's table): 0 success; 1 an artifact does not match PyTorch; 2 bad arguments or input,
nothing written; 3 a requested runtime is not installed (the message has the ``pip install`` line); 4 a converter
failed on a valid request (no file left). A programming error is none of these: it propagates with its traceback.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Literal

__all__ = [
    "ExitCode", "RvmExportError", "UsageError", "InputError", "MissingRuntimeError", "ExportFailedError",
    "ParityError", "OutputMatchError", "ShapeError", "ToleranceError", "ParityFailure", "FailureKind",
    "PROGRAMMING_ERRORS",
]


class ExitCode(IntEnum):
    """Process exit codes of the CLI (the README's table)."""
    OK = 0
    PARITY_FAILED = 1  # every requested artifact was written, at least one does not match PyTorch
    USAGE = 2  # bad arguments or bad input (checkpoint, resolution, ratio): nothing was exported
    MISSING_RUNTIME = 3  # a requested target's converter or runtime is not installed, or this machine cannot run
    # an artifact it wrote (kept, status "exported, not checked here")
    EXPORT_FAILED = 4  # a converter failed on a valid request
    INTERRUPTED = 130  # Ctrl-C (SIGINT): nothing half-written is left, the output folder is as it was
    TERMINATED = 143  # SIGTERM (128 + 15), handled like Ctrl-C


class RvmExportError(Exception):
    """Base of every error a target or the pipeline raises on purpose; ``exit_code`` says how the CLI ends."""

    exit_code = ExitCode.EXPORT_FAILED


class UsageError(RvmExportError):
    """Arguments a target cannot take, or that contradict each other."""

    exit_code = ExitCode.USAGE


class InputError(RvmExportError):
    """A file or value given by the user is wrong (checkpoint, artifact, resolution, frame)."""

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


FailureKind = Literal["missing_output", "shape", "tolerance", "runtime"]


@dataclass(frozen=True)
class ParityFailure:
    """One reason an artifact does not compute what PyTorch computes.

    ``kind``: ``missing_output`` (an output of the contract is absent), ``shape`` (an output has another shape),
    ``tolerance`` (an error above its bound; ``value`` and ``bound`` are absolute errors in the output's units, [0, 1]
    for frames), ``runtime`` (the runtime raised while stepping). ``frame`` is 0-based within the rollout; ``statistic``
    says which figure was judged (``max abs``, ``mean abs``, ``mean abs where alpha > 0``)."""

    kind: FailureKind
    output: str | None = None  # contract name (fgr, pha, r1o..r4o), None for a runtime failure
    value: float | None = None
    bound: float | None = None
    frame: int | None = None
    statistic: str = "max abs"
    detail: str = ""  # shape: "<got> at frame k, PyTorch gives <want>"; runtime: its message; mean: " over N frames"

    def __str__(self) -> str:
        if self.kind == "missing_output":
            return f"{self.output}: missing from the artifact's outputs"
        if self.kind == "shape":
            return f"{self.output}: shape {self.detail}"
        if self.kind == "runtime":
            return f"runtime error at frame {self.frame}: {self.detail}"
        if self.statistic == "max abs":
            return f"{self.output}: max abs error {self.value:.3g} at frame {self.frame} exceeds {self.bound:g}"
        where = self.statistic[len("mean abs"):]  # "" or " where alpha > 0"
        return f"{self.output}: mean abs error{where} {self.value:.3g}{self.detail} exceeds {self.bound:g}"

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "output": self.output, "value": self.value, "bound": self.bound,
                "frame": self.frame, "statistic": self.statistic, "message": str(self)}


class ParityError(RvmExportError):
    """An exported artifact does not compute what PyTorch computes; ``failures`` lists every reason."""

    exit_code = ExitCode.PARITY_FAILED

    def __init__(self, message: str, failures: tuple[ParityFailure, ...] = ()) -> None:
        super().__init__(message)
        self.failures = failures


class OutputMatchError(ParityError):
    """The artifact's output names differ from the contract."""


class ShapeError(ParityError):
    """An output has the wrong shape."""


class ToleranceError(ParityError):
    """An output differs from PyTorch by more than the tolerance; names the output and the worst frame."""


# Exceptions that can only mean a bug in our code (or a target's), never a converter or runtime refusing a model:
# the pipeline lets these propagate with their traceback instead of recording them as a failed artifact.
PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (TypeError, AttributeError, NameError, KeyError, IndexError,
                                                       AssertionError, NotImplementedError, UnboundLocalError)
