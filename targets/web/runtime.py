"""Running a web artifact in headless Chromium: :class:`WebRunner` (one browser page with the shipped module, the
model and one backend) and :class:`WebStream` (the module's own recurrent loop, stepped from Python).

Every frame is sent to the page as raw float32, the page calls ``step()`` of the ``rvm-matting.mjs`` copied into the
export folder (so the shipped file is what is checked), and posts ``fgr``, ``pha`` and the states it will feed next
back. On WebGPU the states live in GPU buffers between frames; reading them back for the comparison is a copy made
after the timed part. ``WebStream.timed_ms`` is the time measured inside the page (``performance.now()`` around the
module's ``step``: input tensor, ``session.run``, fgr and pha on the CPU), which the benchmark reports instead of
the Python-side wall time (that adds the transport to and from the page).
"""
from __future__ import annotations

import logging
import re
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import UsageError
from rvm_export.core.names import FRAME_OUTPUTS, STATE_OUTPUTS
from rvm_export.core.request import Artifact
from rvm_export.core.runner import Runner, check_frame

from .browser import Harness, HarnessError, harness

__all__ = ["WebRunner", "WebStream", "backend_label", "node_placement"]
log = logging.getLogger(__name__)


def node_placement(logs: list[str]) -> dict[str, int]:
    """``{execution provider: nodes}`` from onnxruntime's placement log lines (the module logs them at session
    creation when asked: ``logPlacement``); empty when the log did not say."""
    found: dict[str, int] = {}
    for line in logs:
        match = re.search(r"placed on \[(\w+)\]\. Number of nodes: (\d+)", line)
        if match:
            found[match.group(1)] = found.get(match.group(1), 0) + int(match.group(2))
    return found


def backend_label(info: Mapping[str, Any], chromium: str, placement: Mapping[str, int] | None = None) -> str:
    """How a page ran the model, for the report: bundle version, backend, threads or adapter, where the nodes ran,
    browser."""
    ort = f"onnxruntime-web {info.get('ortVersion') or '?'}"
    if info["backend"] == "wasm":
        threads = info.get("threads") or 1
        return f"{ort} WASM, {threads} thread{'s' if threads > 1 else ''}, Chromium {chromium} headless"
    adapter = info.get("adapter") or {}
    name = " ".join(str(adapter.get(k)) for k in ("vendor", "architecture") if adapter.get(k)) or "unnamed adapter"
    software = "SwiftShader" in name or "swiftshader" in name.lower() or adapter.get("fallback")
    kind = "software adapter, not a GPU" if software else "adapter"
    nodes = dict(placement or {})
    on_gpu = nodes.pop("JsExecutionProvider", 0)
    if nodes:  # some nodes fell back to another execution provider: say how many, where
        where = f"; {on_gpu} nodes on WebGPU, " + ", ".join(f"{n} on {ep}" for ep, n in nodes.items())
    else:
        where = f"; all {on_gpu} nodes on WebGPU" if on_gpu else ""
    return f"{ort} WebGPU ({name}: {kind}; layout {info.get('layout')}{where}), Chromium {chromium} headless"


class WebRunner(Runner):
    """One headless Chromium page running one web artifact on one backend (``wasm`` + threads, or ``webgpu``)."""

    def __init__(self, artifact: Artifact, backend: str, threads: int) -> None:
        from .browser import chromium_path
        from .export import web_dir

        if artifact.spec.bucket is None:
            raise UsageError("web artifacts are static; this one has no bucket")
        self.artifact = artifact
        self.spec = artifact.spec
        self.backend = backend
        self.harness: Harness = harness(chromium_path() or "/usr/bin/chromium", web_dir())
        prefix = self.harness.mount(artifact.path.parent)
        args = {"moduleUrl": f"{prefix}rvm-matting.mjs", "model": f"{prefix}{artifact.path.name}",
                "backend": backend, "threads": max(1, threads), "layout": "NCHW"}
        reply, _ = self.harness.request({"cmd": "open", "args": args})
        self.page: int = reply["page"]
        self.info: dict[str, Any] = reply["info"]
        self.open_logs: list[str] = reply.get("logs", [])
        self.placement = node_placement(self.open_logs)
        self.label = backend_label(self.info, self.harness.chromium_version, self.placement)
        self._finalizer = weakref.finalize(self, _close_page, self.harness, self.page)

    def call(self, fn: str, args: Mapping[str, Any] | None = None, payload: bytes = b"") -> tuple[Any, bytes]:
        """Call ``window.rvmHarness[fn](args)`` in this runner's page; returns (result, posted bytes)."""
        reply, data = self.harness.request({"cmd": "call", "page": self.page, "fn": fn, "args": dict(args or {})},
                                           payload)
        return reply.get("result"), data

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One ``session.run`` in the page with every input given (no state kept); contract-named outputs."""
        names = self.spec.input_names
        arrays = [np.ascontiguousarray(feeds[name], dtype="<f4") for name in names]
        shapes = [[name, list(a.shape)] for name, a in zip(names, arrays)]
        _, data = self.call("run", {"shapes": shapes}, b"".join(a.tobytes() for a in arrays))
        return _split(data, self._output_shapes())

    def stream(self, bucket: Bucket) -> WebStream:
        return WebStream(self, bucket)

    def golden(self, index: Path, bucket: Bucket, frame_bound: float, state_bound: float) -> dict[str, Any]:
        """Run the shipped ``rvm-golden.mjs``'s ``checkGolden`` in the page on ``index`` (a golden.json on disk, served
        for the call); returns its report (``maxAbs`` per output, ``passed``, ``failures``)."""
        module = f"{self.harness.mount(self.artifact.path.parent)}rvm-golden.mjs"
        index_url = f"{self.harness.mount(Path(index).parent)}{Path(index).name}"
        result, _ = self.call("golden", {"goldenModuleUrl": module, "index": index_url, "bucket": bucket.label,
                                         "frameBound": frame_bound, "stateBound": state_bound})
        return result

    def composite(self, fgr: np.ndarray, pha: np.ndarray, background: Any) -> np.ndarray:
        """The module's ``composite()`` onto a canvas of the model's size; returns its RGBA pixels [H, W, 4] uint8."""
        payload = np.concatenate([fgr.astype("<f4").ravel(), pha.astype("<f4").ravel()]).tobytes()
        _, data = self.call("composite", {"background": background}, payload)
        b = self.spec.bucket
        return np.frombuffer(data, "<f4").astype(np.uint8).reshape(b.height, b.width, 4)

    def _output_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(t.name, tuple(int(d) for d in t.shape)) for t in self.spec.outputs]

    def close(self) -> None:
        self._finalizer()


def _close_page(runner_harness: Harness, page: int) -> None:
    if runner_harness.process.poll() is not None:
        return  # the harness is already gone (interpreter exit): its browser took the page with it
    try:
        runner_harness.request({"cmd": "close", "page": page}, timeout=60.0)
    except (HarnessError, OSError) as exc:
        log.debug("closing browser page %s: %s", page, exc)


def _split(data: bytes, shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    values = np.frombuffer(data, "<f4")
    need = sum(int(np.prod(shape)) for _, shape in shapes)
    if values.size != need:
        raise RuntimeError(f"the page returned {values.size} values, expected {need} ({[n for n, _ in shapes]})")
    out, offset = {}, 0
    for name, shape in shapes:
        count = int(np.prod(shape))
        out[name] = values[offset:offset + count].reshape(shape).astype(np.float32)
        offset += count
    return out


class WebStream:
    """The module's recurrent loop in the page: ``step`` sends a frame, gets fgr, pha and the fed-back states."""

    def __init__(self, runner: WebRunner, bucket: Bucket) -> None:
        runner.spec.check_bucket(bucket)
        self.runner = runner
        self.bucket = bucket
        self.timed_ms: float | None = None  # in-page time of the last step (see the module docstring)
        self.run_ms: float | None = None  # in-page time of the last session.run alone
        shapes = dict(runner._output_shapes())
        self._shapes = [(name, shapes[name]) for name in (*FRAME_OUTPUTS, *STATE_OUTPUTS)]
        self.reset()  # the page's module may have run another stream before

    def reset(self) -> None:
        self.runner.call("reset")

    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        check_frame(src, self.bucket)
        frame = np.ascontiguousarray(src, dtype="<f4")
        ms, data = self.runner.call("step", {"states": True}, frame.tobytes())
        self.timed_ms, self.run_ms = float(ms["step"]), float(ms["run"])
        return _split(data, self._shapes)
