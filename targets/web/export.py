"""Writing the web target: a static ONNX made for onnxruntime-web, its contract sidecar, and the browser files.

The graph is :func:`targets.onnx.export_graph`'s (the same contract wrapper, simplifier and metadata) traced with
one export-only rewrite applied as a patch (:func:`web_friendly`): the decoder's ceil-mode average pool becomes a
zero pad, an average pool without ``ceil_mode`` and a constant rescale of the border windows, at every size (at even
sizes the pad and rescale vanish). onnxruntime-web's default bundle has no ``ceil_mode`` in its WebGPU AveragePool
kernel. The rescale multiplies by 2 or 4, so the result equals PyTorch's ``sum / count`` up to the order of the sum.
The written graph is then checked (:func:`check_web_graph`): no float64 anywhere, no ``ceil_mode`` pool, no dynamic
axis; a graph that breaks one of these is an export failure, never shipped.

Beside each ``.onnx`` the folder gets ``<model>.json`` (the contract the ES module reads: names, exact state shapes,
precision), and once per folder ``rvm-matting.mjs``, ``rvm-golden.mjs``, ``demo.html``, ``serve.mjs`` and the
onnxruntime-web files the module imports (copied from ``web/node_modules``; nothing is fetched from a CDN).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from rvm_export.core.atomic import atomic_path, write_json_atomic
from rvm_export.core.errors import ExportFailedError, MissingRuntimeError
from rvm_export.core.request import ExportRequest
from rvm_export.core.spec import IOSpec, Precision
from targets.traced.rewrites import export_friendly

__all__ = [
    "MODULE_FILES",
    "ORT_FILES",
    "check_web_graph",
    "contract_sidecar",
    "export_model",
    "ort_version",
    "web_dir",
    "write_runtime_files",
]

# Hand-written sources under web/ copied into every export folder (demo.html imports the two modules).
MODULE_FILES = ("rvm-matting.mjs", "rvm-golden.mjs", "demo.html", "serve.mjs")
# onnxruntime-web's default bundle (WASM + WebGPU kernels in one .wasm). Its separate `ort.webgpu` bundle computed a
# 3x3 convolution with 171 input channels wrong on its default layout (../shared/TOOLCHAIN.md), so it is not shipped.
ORT_FILES = ("ort.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")
DOUBLE = 11  # onnx.TensorProto.DOUBLE


def web_dir() -> Path:
    """The project's ``web/`` folder (ES module sources, package.json, node_modules, the browser harness)."""
    import os

    override = os.environ.get("RVM_EXPORT_WEB_DIR")
    return Path(override) if override else Path(__file__).resolve().parents[2] / "web"


def ort_version() -> str | None:
    """The onnxruntime-web version installed under ``web/node_modules`` (None when it is not installed)."""
    package = web_dir() / "node_modules" / "onnxruntime-web" / "package.json"
    if not package.is_file():
        return None
    return json.loads(package.read_text(encoding="utf-8"))["version"]


def export_model(model, spec: IOSpec, path: Path, request: ExportRequest) -> dict[str, Any]:
    """Trace, simplify, convert precision (fp16: float16 compute, float32 I/O) and check one static web graph.

    Writes ``path`` atomically and the contract sidecar next to it; returns the manifest details. Raises
    :class:`ExportFailedError` when the exporter fails or the graph breaks a web rule (:func:`check_web_graph`).
    """
    from targets.onnx.export import export_graph

    with export_friendly(model):
        details = export_graph(model, spec, path, request, tail="grouped")
    try:
        details.update(check_web_graph(path))
    except ExportFailedError:
        path.unlink(missing_ok=True)  # a graph that breaks a web rule is never left behind looking valid
        raise
    details["decoder_pool"] = "Pad + AveragePool(ceil_mode=0) + constant rescale of border windows (exact)"
    sidecar = contract_sidecar(spec, request.precision, path.name)
    write_json_atomic(path.with_suffix(".json"), sidecar)
    _list_model(path.parent, sidecar)
    return details


def _list_model(out_dir: Path, sidecar: dict[str, Any]) -> None:
    """Add the model to ``models.json`` (what demo.html offers), keeping the entries of earlier exports that are
    still on disk."""
    index = out_dir / "models.json"
    try:
        models = json.loads(index.read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError):
        models = []
    keys = ("model", "precision", "width", "height", "downsample_ratio")
    entry = {k: sidecar[k] for k in keys}
    models = [m for m in models if m.get("model") != entry["model"] and (out_dir / str(m.get("model"))).is_file()]
    write_json_atomic(index, {"models": sorted([*models, entry], key=lambda m: m["model"])})


def check_web_graph(path: Path) -> dict[str, Any]:
    """Refuse what onnxruntime-web cannot run right: float64 anywhere (the WebGPU bundle has no float64 Cast), an
    AveragePool with ``ceil_mode=1`` (unimplemented in the default bundle's WebGPU kernel), a dynamic axis.

    Returns ``{"ops": {op_type: count}}``. Raises :class:`ExportFailedError` naming the first offending node/tensor.
    """
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    for tensor in graph.initializer:
        if tensor.data_type == DOUBLE:
            raise ExportFailedError(f"web graph {path.name}: initializer {tensor.name} is float64")
    for value in (*graph.input, *graph.output, *graph.value_info):
        kind = value.type.tensor_type
        if kind.elem_type == DOUBLE:
            raise ExportFailedError(f"web graph {path.name}: tensor {value.name} is float64")
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            raise ExportFailedError(f"web graph {path.name}: {value.name} has a dynamic axis; web graphs are static")
    ops: dict[str, int] = {}
    for node in graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
        attrs = {a.name: a for a in node.attribute}
        if node.op_type == "Cast" and attrs["to"].i == DOUBLE:
            raise ExportFailedError(f"web graph {path.name}: node {node.name} casts to float64")
        constant = node.op_type in ("Constant", "ConstantOfShape") and "value" in attrs
        if constant and attrs["value"].t.data_type == DOUBLE:
            raise ExportFailedError(f"web graph {path.name}: node {node.name} makes a float64 constant")
        if node.op_type in ("AveragePool", "MaxPool") and "ceil_mode" in attrs and attrs["ceil_mode"].i:
            raise ExportFailedError(f"web graph {path.name}: node {node.name} is a ceil-mode pool, which "
                                    "onnxruntime-web's WebGPU kernels do not implement")
    return {"ops": dict(sorted(ops.items()))}


def contract_sidecar(spec: IOSpec, precision: Precision, model_name: str) -> dict[str, Any]:
    """What ``rvm-matting.mjs`` reads beside the model: the I/O contract with exact state shapes (the first frame's
    zeros), the precision (fp16 graphs need ``shader-f16`` on WebGPU) and the model file's name."""
    bucket = spec.bucket
    return {"format": "rvm-export web contract 1", "model": model_name, "precision": precision.value,
            "width": bucket.width, "height": bucket.height, "downsample_ratio": bucket.ratio,
            "zero_states": {name: list(shape) for name, shape in spec.concrete_state_shapes(bucket).items()},
            **spec.to_dict()}


def write_runtime_files(out_dir: Path) -> dict[str, Any]:
    """Copy the ES module, the golden-frame reader, the demo page, the static server and the onnxruntime-web files
    into ``out_dir`` (each through a temporary sibling). Raises :class:`MissingRuntimeError` when ``npm ci`` has not
    been run in ``web/``."""
    source = web_dir()
    dist = source / "node_modules" / "onnxruntime-web" / "dist"
    missing = [name for name in ORT_FILES if not (dist / name).is_file()]
    if missing:
        raise MissingRuntimeError(f"onnxruntime-web is not installed in {source} (missing {', '.join(missing)}): "
                                  f"run `npm ci` in {source}")
    files = [(source / name, name) for name in MODULE_FILES] + [(dist / name, name) for name in ORT_FILES]
    for src, name in files:
        if not src.is_file():
            raise MissingRuntimeError(f"{src} is missing: the web/ sources are incomplete (reinstall the project)")
        with atomic_path(Path(out_dir) / name) as tmp:
            shutil.copyfile(src, tmp)
    return {"runtime_files": [name for _, name in files], "onnxruntime_web": ort_version()}
