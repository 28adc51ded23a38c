"""Export targets. The registry maps a name to its module; modules are imported only when used."""
from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["REGISTRY", "FILE_TARGETS", "get_target", "target_names"]

# name -> module path. Each module follows the surface documented in targets/base.py.
REGISTRY: dict[str, str] = {
    "onnx": "targets.onnx",
    "openvino": "targets.openvino",
    "tflite": "targets.tflite",
    "coreml": "targets.coreml",
    "cuda": "targets.torch_cuda",
    "web": "targets.web",
}
# What `--target all` means: every file format we ship (the CUDA target is PyTorch on a GPU, asked for by name).
FILE_TARGETS: tuple[str, ...] = ("onnx", "openvino", "tflite", "coreml")


def target_names() -> list[str]:
    return list(REGISTRY)


def get_target(name: str) -> ModuleType:
    from rvm_export.errors import UsageError

    if name not in REGISTRY:
        raise UsageError(f"unknown target {name!r}; expected one of {', '.join([*REGISTRY, 'all'])}")
    return importlib.import_module(REGISTRY[name])
