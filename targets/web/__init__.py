"""Web target: a static ONNX for onnxruntime-web, an ES module that owns the recurrent loop, a demo page, and parity
proven in a real browser (headless Chromium driven by playwright-core).

One model file is written per bucket; it is listed once per browser backend it is checked on
(``--option web.backends=wasm:1,wasm:2,webgpu``), each entry carrying its backend in ``details``, so parity and the
in-browser time per frame appear per backend in report.md. docs/web.md says what was proven where.

Files: export.py (the web graph, its checks, the module and runtime files copied beside it), runtime.py (a runner
stepping the model in a Chromium page), browser.py (the Python end of the Node/playwright harness).
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from rvm_export.core.errors import UsageError
from rvm_export.core.names import artifact_name, shape_label
from rvm_export.core.options import TargetOptions, option
from rvm_export.core.request import Artifact, ExportRequest, RuntimeOptions
from rvm_export.core.spec import Layout, Precision
from rvm_export.core.target import TargetDescription

from . import export as _export  # first: the submodule must not replace export() below when imported later
from .browser import chromium_path

__all__ = ["DESCRIPTION", "WebOptions", "BACKENDS", "missing", "check_request", "export", "load", "parse_backends",
           "chromium_path", "where_it_runs"]

BACKENDS = ("wasm", "webgpu")
# What each precision is checked on when web.backends is not given. fp16 on WebGPU needs the adapter's shader-f16,
# which Chromium's software adapter (the only one here) lacks: asked for explicitly, it is refused at load time.
DEFAULT_BACKENDS = {Precision.FP32: "wasm:1,wasm:2,webgpu", Precision.FP16: "wasm:1"}
OPSETS = range(13, 22)


@dataclass(frozen=True)
class WebOptions(TargetOptions):
    """``--option web.KEY=VALUE``."""

    backends: str | None = option(
        None, "comma-separated browser backends to check each model on: wasm:N (N WASM threads; N > 1 needs a "
              "cross-origin isolated page) and webgpu. Default: wasm:1,wasm:2,webgpu for fp32, wasm:1 for fp16")


DESCRIPTION = TargetDescription(
    name="web",
    summary="a static ONNX for onnxruntime-web (WASM, WebGPU) with an ES module that owns the recurrent loop",
    precisions=(Precision.FP32, Precision.FP16),
    default_precision=Precision.FP32,
    dynamic_precisions=frozenset(),  # onnxruntime-web wants exact state shapes; the static graph has no shape math
    layouts=(Layout.NCHW,),
    devices=("cpu", "wasm", "webgpu"),  # each artifact runs on the backend it is listed for; "cpu" means that one
    takes_opset=True,
    options=WebOptions,
    extra="onnx",
    modules=("onnx", "onnxruntime", "onnxsim"),
    in_all=False,  # needs Node.js and Chromium: `--target all` must work on a Python-only machine (decision 34)
    runtime_label="onnxruntime-web in headless Chromium",
)


def _node_major(node: str) -> int | None:
    import subprocess

    try:
        text = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=False).stdout
        return int(text.strip().lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.SubprocessError):
        return None


def missing(device: str = "cpu") -> str | None:
    """None when the ONNX toolchain, Node, web/node_modules and Chromium are all present; else what to install."""
    problem = DESCRIPTION.missing()
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
    return parse_backends(request.options.backends or DEFAULT_BACKENDS.get(request.precision, "wasm:1"))


def check_request(request: ExportRequest) -> None:
    """Refuse, before any work, what the web target cannot take (with the reason and what to do instead)."""
    if request.precision not in DESCRIPTION.precisions:
        raise UsageError(f"web exports fp32 (default) or fp16 graphs, not {request.precision}: onnxruntime-web's "
                         "WebGPU kernels have no int8 QDQ convolution; use --target onnx for int8 on WASM")
    if request.dynamic:
        raise UsageError("web models are static: onnxruntime-web needs the states' exact shapes, which depend on the "
                         "frame size and ratio; pass --downsample-ratio R (or WxH@R) with one or more --resolution")
    DESCRIPTION.check_common(request)
    if request.opset not in OPSETS:
        raise UsageError(f"web opset {request.opset} is not supported; choose {OPSETS.start}..{OPSETS.stop - 1}")
    _backends(request)


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """One ``.onnx`` (+ contract sidecar) per bucket and the browser files once; one Artifact per (model, backend)."""
    from rvm_export.core.errors import MissingRuntimeError

    problem = missing()
    if problem:
        raise MissingRuntimeError(f"the web target's toolchain is incomplete: {problem}")
    check_request(request)
    out_dir = Path(out_dir)
    runtime = _export.write_runtime_files(out_dir)
    artifacts = []
    for bucket in request.buckets:
        spec = request.specs[request.buckets.index(bucket)]
        path = out_dir / artifact_name(spec.variant, spec.refiner, shape_label(bucket), str(request.precision),
                                       suffix=".onnx")
        details = {**_export.export_model(model, spec, path, request), **runtime,
                   "contract": path.with_suffix(".json").name}
        companions = (path.with_suffix(".json"), out_dir / "models.json",
                      *(out_dir / name for name in runtime["runtime_files"]))
        for backend, threads in _backends(request):
            flavour = {"backend": backend, **({"threads": threads} if backend == "wasm" else {})}
            artifacts.append(Artifact(DESCRIPTION.name, path, request.precision, spec, "static", (bucket,),
                                      {**details, **flavour}, companions))
    return artifacts


def load(artifact: Artifact, options: RuntimeOptions):
    """A runner that steps the model in a headless Chromium page on the artifact's backend (``details``)."""
    from rvm_export.core.errors import MissingRuntimeError

    from .runtime import WebRunner

    problem = missing()
    if problem:
        raise MissingRuntimeError(f"the web target's toolchain is incomplete: {problem}")
    backend = artifact.details.get("backend", "wasm")
    threads = int(artifact.details.get("threads", options.threads or 1))
    if options.device not in ("cpu", backend):
        raise UsageError(f"web artifacts run on the backend they were listed for ({backend}); --device "
                         f"{options.device!r} does not apply (use --option web.backends=...)")
    return WebRunner(artifact, backend, threads)


def where_it_runs(artifact: Artifact, options: RuntimeOptions) -> tuple:
    """No accelerator check beyond the artifact's own parity: the browser backends are the artifact's own runtimes
    (web/, Chromium with SwiftShader for WebGPU); no separate check."""
    return ()
