"""Web target: a static ONNX for onnxruntime-web, an ES module that owns the recurrent loop, a demo page, and parity
proven in a real browser (headless Chromium driven by playwright-core).

Surface (targets/base.py): ``NAME``, ``PRECISIONS``, ``DEFAULT_PRECISION``, ``SUPPORTS_DYNAMIC``, ``RUNTIME_LABEL``,
``OPTIONS``, ``missing()``, ``check_request(request)``, ``export(model, request, out_dir)``, ``load(artifact,
options)``. One model file is written per bucket; it is listed once per browser backend it is checked on
(``--option web.backends=wasm:1,wasm:2,webgpu``), each entry carrying its backend in ``details``, so parity and the
in-browser time per frame appear per backend in report.md. docs/web.md says what was proven where.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from rvm_export.errors import MissingRuntimeError, UsageError
from rvm_export.spec import IOSpec, Layout, Precision

from ..base import Artifact, ExportRequest, RuntimeOptions

# Imported before `def export` below: importing the submodule `export` binds the package attribute of that name,
# which the function must then replace.
from . import export as _export

__all__ = [
    "BACKENDS",
    "DEFAULT_PRECISION",
    "NAME",
    "OPTIONS",
    "PRECISIONS",
    "RUNTIME_LABEL",
    "SUPPORTS_DYNAMIC",
    "check_request",
    "chromium_path",
    "export",
    "load",
    "missing",
    "parse_backends",
]

NAME = "web"
PRECISIONS = ("fp32", "fp16")
DEFAULT_PRECISION = "fp32"
SUPPORTS_DYNAMIC = False  # onnxruntime-web wants exact state shapes; the static graph has no shape arithmetic
RUNTIME_LABEL = "onnxruntime-web in headless Chromium"
BACKENDS = ("wasm", "webgpu")
# What each precision is checked on when web.backends is not given. fp16 on WebGPU needs the adapter's shader-f16,
# which Chromium's software adapter (the only one here) lacks: asked for explicitly, it is refused at load time.
DEFAULT_BACKENDS = {"fp32": "wasm:1,wasm:2,webgpu", "fp16": "wasm:1"}
OPTIONS = {  # --option web.KEY=VALUE
    "backends": "comma-separated browser backends to check each model on: wasm:N (N WASM threads; N > 1 needs a "
                "cross-origin isolated page) and webgpu. Default: wasm:1,wasm:2,webgpu for fp32, wasm:1 for fp16",
}
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    """``RVM_EXPORT_CHROMIUM`` if set, else the first Chromium found at the usual Debian/Ubuntu paths."""
    override = os.environ.get("RVM_EXPORT_CHROMIUM")
    if override:
        return override if Path(override).is_file() else None
    return next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None)


def _node_major(node: str) -> int | None:
    import subprocess

    try:
        text = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
        return int(text.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def missing() -> str | None:
    """None when the ONNX toolchain, Node, web/node_modules and Chromium are all present; else what to install."""
    from ..onnx import missing as onnx_missing

    problem = onnx_missing()
    if problem:
        return problem
    node = shutil.which("node")
    if node is None:
        return "node (Node.js >= 18, what playwright-core 1.61 needs): apt-get install -y nodejs npm"
    major = _node_major(node)
    if major is not None and major < 18:
        return f"Node.js {major} is too old: playwright-core 1.61 needs Node.js >= 18"
    modules = _export.web_dir() / "node_modules"
    for package in ("onnxruntime-web", "playwright-core"):
        if not (modules / package / "package.json").is_file():
            return f"{package}: cd {_export.web_dir()} && npm ci"
    if chromium_path() is None:
        return "chromium: apt-get install -y chromium (or set RVM_EXPORT_CHROMIUM to a Chromium binary)"
    return None


def _require() -> None:
    problem = missing()
    if problem:
        raise MissingRuntimeError(f"the web target's toolchain is incomplete: {problem}")


def parse_backends(text: str) -> tuple[tuple[str, int], ...]:
    """``"wasm:1,wasm:2,webgpu"`` -> ``(("wasm", 1), ("wasm", 2), ("webgpu", 0))``. Raises UsageError."""
    parsed: list[tuple[str, int]] = []
    for item in (part.strip() for part in str(text).split(",") if part.strip()):
        name, _, threads = item.partition(":")
        if name == "webgpu" and not threads:
            entry = ("webgpu", 0)
        elif name == "wasm":
            try:
                entry = ("wasm", int(threads or 1))
            except ValueError:
                raise UsageError(f"web backend {item!r}: the thread count must be a whole number (wasm:2)") from None
            if not 1 <= entry[1] <= 16:
                raise UsageError(f"web backend {item!r}: threads must be 1..16")
        else:
            raise UsageError(f"unknown web backend {item!r}; expected wasm:N or webgpu")
        if entry not in parsed:
            parsed.append(entry)
    if not parsed:
        raise UsageError("web.backends is empty; give e.g. wasm:1,webgpu")
    return tuple(parsed)


def _backends(request: ExportRequest) -> tuple[tuple[str, int], ...]:
    precision = getattr(request.precision, "value", str(request.precision))
    return parse_backends(request.option("backends", DEFAULT_BACKENDS.get(precision, "wasm:1")))


def check_request(request: ExportRequest) -> None:
    """Refuse, before any work, what the web target cannot take (with the reason and what to do instead)."""
    precision = getattr(request.precision, "value", str(request.precision))
    if precision not in PRECISIONS:
        raise UsageError(f"web exports fp32 (default) or fp16 graphs, not {precision}: onnxruntime-web's WebGPU "
                         "kernels have no int8 QDQ convolution; use --target onnx for int8 on WASM")
    if request.dynamic:
        raise UsageError("web models are static: onnxruntime-web needs the states' exact shapes, which depend on the "
                         "frame size and ratio; pass --downsample-ratio R (or WxH@R) with one or more --resolution")
    if request.layout != Layout.NCHW:
        raise UsageError("web exports NCHW only (onnxruntime-web's layout at the model boundary); drop --layout")
    if not 13 <= request.opset <= 21:
        raise UsageError(f"web opset {request.opset} is not supported; choose 13..21 (default 17)")
    if not request.buckets:
        raise UsageError("web needs at least one --resolution WxH@RATIO to build")
    unknown = sorted(set(request.options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"web does not know option(s) {', '.join(unknown)}; it takes: "
                         + "; ".join(f"{k}: {v}" for k, v in OPTIONS.items()))
    _backends(request)


def _artifact_name(spec: IOSpec, precision: Precision) -> str:
    ref = "" if spec.refiner == "deep_guided_filter" else "_fgf"
    b = spec.bucket
    return f"rvm_{spec.variant}{ref}_{b.width}x{b.height}_r{b.ratio:g}_{precision.value}.onnx"


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """One ``.onnx`` (+ contract sidecar) per bucket and the browser files once; one Artifact per (model, backend)."""
    _require()
    check_request(request)
    out_dir = Path(out_dir)
    precision = Precision(request.precision)
    runtime = _export.write_runtime_files(out_dir)
    artifacts = []
    for bucket in request.buckets:
        spec = IOSpec(request.variant, request.refiner, bucket)
        path = out_dir / _artifact_name(spec, precision)
        details = {**_export.export_model(model, spec, path, request), **runtime,
                   "contract": path.with_suffix(".json").name}
        for backend, threads in _backends(request):
            flavour = {"backend": backend, **({"threads": threads} if backend == "wasm" else {})}
            artifacts.append(Artifact(NAME, path, precision, spec, "static", (bucket,), {**details, **flavour}))
    return artifacts


def load(artifact: Artifact, options: RuntimeOptions):
    """A runner that steps the model in a headless Chromium page on the artifact's backend (``details``)."""
    _require()
    from .runtime import WebRunner

    backend = artifact.details.get("backend", "wasm")
    threads = int(artifact.details.get("threads", options.threads or 1))
    if options.device not in ("cpu", backend):
        raise UsageError(f"web artifacts run on the backend they were listed for ({backend}); --device "
                         f"{options.device!r} does not apply (use --option web.backends=...)")
    return WebRunner(artifact, backend, threads)
