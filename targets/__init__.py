"""Export targets: one package per runtime, registered here by name; packages are imported only when used.

Each package ``targets/<name>/`` exposes the same surface (:class:`rvm_export.core.target.TargetModule`):
``DESCRIPTION`` (a :class:`~rvm_export.core.target.TargetDescription`), ``missing()``, ``check_request()``,
``export()`` and ``load()``. Torch-side graph code every exporter traces lives in ``targets/traced/``.
Adding a target: one package, one line below, its rows in rvm_export/tolerances.py, its page in docs/.
"""
from __future__ import annotations

import importlib
from types import ModuleType

from rvm_export.core.errors import UsageError

__all__ = ["REGISTRY", "get_target", "target_names", "all_targets"]

# registry key -> package. The key is the package's name and its DESCRIPTION.name.
REGISTRY: dict[str, str] = {
    "onnx": "targets.onnx",
    "openvino": "targets.openvino",
    "tflite": "targets.tflite",
    "coreml": "targets.coreml",
    "cuda": "targets.cuda",
    "web": "targets.web",
}


def target_names() -> list[str]:
    """Every registered target, in registry order."""
    return list(REGISTRY)


def get_target(name: str) -> ModuleType:
    """The target package ``name``; raises UsageError naming the known targets for an unknown name."""
    if name not in REGISTRY:
        raise UsageError(f"unknown target {name!r}; expected one of {', '.join([*REGISTRY, 'all'])}")
    return importlib.import_module(REGISTRY[name])


def all_targets() -> tuple[str, ...]:
    """What ``--target all`` means: every target whose description says ``in_all`` (the file formats)."""
    return tuple(name for name in REGISTRY if get_target(name).DESCRIPTION.in_all)
