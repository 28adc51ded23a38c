"""What every target package provides: a frozen, typed :class:`TargetDescription` and the :class:`TargetModule`
surface (``DESCRIPTION``, ``missing()``, ``check_request()``, ``export()``, ``load()``, ``where_it_runs()``).

The pipeline and the CLI read the description (precisions, which can be dynamic, layouts, devices, opset, options,
pip extra, whether ``--target all`` includes it) instead of probing a module with ``getattr``. Adding a target means
one package ``targets/<name>/`` with this surface, one registry line, its tolerance rows and its doc page.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import MissingRuntimeError, UsageError
from .options import TargetOptions
from .placement import Placement
from .request import Artifact, ExportRequest, RuntimeOptions
from .runner import Runner
from .spec import Layout, Precision

__all__ = ["TargetDescription", "TargetModule", "missing_modules"]


@dataclass(frozen=True)
class TargetDescription:
    """A target's capabilities, read by the planner, the CLI, the docs and the conformance tests."""

    name: str  # registry key and package name (targets/<name>/)
    summary: str  # one line for `rvm-export targets` and the docs
    precisions: tuple[Precision, ...]  # what it can export
    default_precision: Precision  # what it exports when --precision is not given
    dynamic_precisions: frozenset[Precision]  # precisions it can export as a dynamic model (empty: static only)
    layouts: tuple[Layout, ...]  # boundary layouts it can write
    devices: tuple[str, ...]  # run-time devices it accepts ("cpu" always means "this target's default")
    takes_opset: bool  # whether --opset means anything to it (it converts through ONNX)
    options: type[TargetOptions]  # its options dataclass (--option NAME.KEY=VALUE)
    extra: str  # the pip extra that installs its converter and runtime
    modules: tuple[str, ...]  # importable modules it needs (checked without importing them)
    in_all: bool  # whether `--target all` includes it
    runtime_label: str  # how its parity/bench numbers are obtained, in words
    # why a benchmark on this machine must not time it (what runs here is a numerics check, not the runtime an app
    # uses: coreml's MIL executor off macOS); None: timed. `rvm-export bench` and the export's benchmark skip it.
    untimed_reason: str | None = None

    def __post_init__(self) -> None:
        if self.default_precision not in self.precisions:
            raise ValueError(f"{self.name}: default precision {self.default_precision} not among {self.precisions}")
        if not self.dynamic_precisions <= set(self.precisions):
            raise ValueError(f"{self.name}: dynamic precisions must be a subset of its precisions")
        if "cpu" not in self.devices:
            raise ValueError(f"{self.name}: 'cpu' (the CLI default) must be an accepted device")

    def can_be_dynamic(self, precision: Precision) -> bool:
        return precision in self.dynamic_precisions

    def check_common(self, request: ExportRequest) -> None:
        """The checks every target shares (precision, dynamic, layout); raises UsageError naming the choices."""
        if request.precision not in self.precisions:
            raise UsageError(f"{self.name} cannot export precision {request.precision}; choose one of "
                             f"{', '.join(map(str, self.precisions))}")
        if request.dynamic and not self.can_be_dynamic(request.precision):
            if not self.dynamic_precisions:
                raise UsageError(f"{self.name} exports static models only (resolution and ratio fixed per model): "
                                 f"use --downsample-ratio auto or a number, not dynamic")
            raise UsageError(f"{self.name} cannot export {request.precision} as a dynamic model; dynamic works for "
                             f"{', '.join(sorted(map(str, self.dynamic_precisions)))}")
        if request.layout not in self.layouts:
            raise UsageError(f"{self.name} exports {' or '.join(map(str, self.layouts))} only; drop --layout")

    def check_device(self, device: str) -> None:
        """Raise UsageError unless ``device`` (or its family, "cuda:1" -> "cuda") is one this target runs on."""
        family = device.split(":")[0].split(".")[0].lower()
        if family not in {d.lower() for d in self.devices}:
            raise UsageError(f"{self.name} runs on {', '.join(self.devices)}, not {device!r}")

    def missing(self) -> str | None:
        """None when every needed module can be imported; else what is missing and the install line."""
        absent = missing_modules(self.modules)
        if absent:
            return f"{', '.join(absent)} not installed: pip install 'rvm-export[{self.extra}]'"
        return None

    def require(self) -> None:
        """Raise MissingRuntimeError (exit 3, with the install line) when a needed module is absent."""
        absent = missing_modules(self.modules)
        if absent:
            raise MissingRuntimeError(f"the {self.name} toolchain ({', '.join(absent)})", self.extra,
                                      " ".join(m.replace("_", "-") for m in absent))


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    """The modules among ``modules`` that cannot be imported (found without importing them: fast)."""
    absent = []
    for name in modules:
        try:
            if find_spec(name) is None:
                absent.append(name)
        except (ImportError, ValueError):
            absent.append(name)
    return absent


@runtime_checkable
class TargetModule(Protocol):
    """The surface of a target package (``targets/<name>/__init__.py``)."""

    DESCRIPTION: TargetDescription

    def missing(self, device: str = "cpu") -> str | None:
        """None when the converter and the runtime for ``device`` are installed; else what is missing and how to
        install it (exit 3)."""
        ...

    def check_request(self, request: ExportRequest) -> None:
        """Raise UsageError for anything the target cannot take, before any work."""
        ...

    def export(self, model: Any, request: ExportRequest, out_dir: Path) -> list[Artifact]:
        """Write the artifacts for ``request`` into ``out_dir`` atomically. Raises ExportFailedError."""
        ...

    def load(self, artifact: Artifact, options: RuntimeOptions) -> Runner:
        """Load an artifact this target wrote; raises InputError for a file it cannot read."""
        ...

    def where_it_runs(self, artifact: Artifact, options: RuntimeOptions) -> tuple[Placement, ...]:
        """The accelerator checks this target can make on this machine for ``artifact`` (empty when it has none):
        compiled placement, a provider's static op check, a platform rule. Never raises for a model an accelerator
        refuses: that is a finding (``fully=False``); a check that cannot run here says why in ``skipped``."""
        ...
