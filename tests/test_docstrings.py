"""Every public function and class of the export package and the targets has a docstring (STYLE.md: shapes, units,
dtypes and the errors raised belong there)."""
from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest


def _public(package: str):
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if info.name.endswith("__main__"):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError as exc:  # an optional runtime's module: its own tests cover it
            pytest.skip(f"{info.name}: {exc}")
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module.__name__:
                yield f"{module.__name__}.{name}", obj


@pytest.mark.parametrize("package", ["rvm_export", "targets"])
def test_public_names_have_docstrings(package):
    missing = []
    for qualified, obj in _public(package):
        doc = (obj.__doc__ or "").strip()
        generated = inspect.isclass(obj) and doc.startswith(obj.__name__ + "(")  # a dataclass's default
        if not doc or generated:
            missing.append(qualified)
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)
