"""One direction of imports, and no import cycle: model <- rvm_export.core <- targets <- the orchestrator <- the CLI.

Every ``import`` statement counts, including those inside functions (grimp reads them all), so a lazy import cannot
hide an upward dependency. training depends on model only.
"""
from __future__ import annotations

import pytest

grimp = pytest.importorskip("grimp")

PACKAGES = ("model", "rvm_export", "targets", "training")
# Layer of each module, lowest first; a module may import its own layer and the layers below it.
ORDER = ("model", "core", "targets", "orchestrator", "cli")


def layer_of(module: str) -> str:
    top = module.split(".")[0]
    if top in ("model", "targets", "training"):
        return top
    if module in ("rvm_export", "rvm_export.core") or module.startswith("rvm_export.core."):
        return "core"  # the root package's __init__ only re-exports the version from core
    if module == "rvm_export.cli" or module.startswith("rvm_export.cli."):
        return "cli"
    return "orchestrator"


def allowed(importer: str, imported: str) -> bool:
    a, b = layer_of(importer), layer_of(imported)
    if a == "training" or b == "training":
        return a == "training" and b in ("training", "model")
    return ORDER.index(b) <= ORDER.index(a)


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph(*PACKAGES, cache_dir=None)


def _imports(graph):
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            yield importer, imported


def test_every_package_is_seen(graph):
    for name in ("rvm_export.core.spec", "rvm_export.pipeline", "targets.onnx", "targets.traced.contract",
                 "rvm_export.cli"):
        assert name in graph.modules, name


def test_no_upward_import(graph):
    upward = []
    for importer, imported in _imports(graph):
        if not allowed(importer, imported):
            lines = [d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)]
            upward.append(f"{importer} ({layer_of(importer)}) imports {imported} ({layer_of(imported)}) "
                          f"at line(s) {lines}")
    assert not upward, "imports against the layering:\n" + "\n".join(upward)


def test_no_import_cycle(graph):
    cycles = []
    for importer, imported in _imports(graph):
        if importer != imported and graph.chain_exists(importer=imported, imported=importer):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            cycles.append(f"{importer} -> {imported} -> ... -> {importer}: {' -> '.join(back)}")
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_layering_rule_itself():
    """The rule must be able to fail: an upward import and a training import of the exporter are refused."""
    assert not allowed("rvm_export.core.spec", "targets.onnx")
    assert not allowed("targets.onnx.export", "rvm_export.pipeline")
    assert not allowed("rvm_export.pipeline", "rvm_export.cli")
    assert not allowed("training.train", "rvm_export.core.spec")
    assert not allowed("model.matting", "rvm_export.core.spec")
    assert allowed("rvm_export.cli.export", "targets")
    assert allowed("targets.onnx.export", "rvm_export.core.spec")
