"""LiteRT's GPU accelerator on this machine: does a ``.tflite`` compile onto it whole, and what it computes there.

- The device. LiteRT 2.3's GPU accelerator (``CompiledModel`` with ``HardwareAccelerator.GPU``) runs through WebGPU
  (Dawn) on a Vulkan device. Linux CI has no GPU; Chromium's SwiftShader ICD (Debian's ``chromium`` package) is a
  software Vulkan device it accepts (Debian 12's lavapipe is refused: "No adapters found"). :func:`vulkan_device`
  points the Vulkan loader at it (``VK_ICD_FILENAMES``, unless already set) and loads a Vulkan loader before LiteRT
  looks for one: the system's ``libvulkan.so.1`` if installed, else the copy Chromium ships beside the ICD.
- Placement is counted by compiling, never by a static analysis (TensorFlow's ``Analyzer(gpu_compatibility=True)``
  calls models compatible that the accelerator refuses). A model compiled with the GPU alone (no CPU fallback) is
  placed whole; otherwise it is compiled again with CPU fallback and the accelerator's own report (ops refused and
  why, ops left to the CPU) is read from its log.
- Numerics. An fp32 file runs with ``enforce_f32`` (float32 kernels: what an app asks for when it wants the fp32
  numbers); other files with the accelerator's defaults, which allow float16 arithmetic on a device that offers
  it. SwiftShader offers none, so here every file computes in float32: half-precision GPU arithmetic is not
  exercised, and a software rasteriser's timings say nothing about a phone's.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import InputError, MissingRuntimeError, OutputMatchError, ShapeError
from rvm_export.core.names import OUTPUT_NAMES
from rvm_export.core.placement import Placement
from rvm_export.core.request import Artifact
from rvm_export.core.runner import ArrayStream, Runner
from rvm_export.core.spec import IOSpec, Precision

from .runtime import SIGNATURE_KEY

__all__ = ["SWIFTSHADER_ICD", "VulkanDevice", "vulkan_device", "GpuCompile", "compile_on_gpu", "GpuRunner",
           "gpu_placement", "TOLERANCE_KEY", "AUTO_PARITY_PIXELS"]

SWIFTSHADER_ICD = Path("/usr/lib/chromium/vk_swiftshader_icd.json")  # Debian's chromium package
TOLERANCE_KEY = "tflite-gpu"  # rvm_export/tolerances.py rows for parity on the GPU accelerator
AUTO_PARITY_PIXELS = 320 * 180  # gpu_check=auto: rollout parity on the GPU up to this frame size, placement above
CHECK = "LiteRT GPU accelerator (CompiledModel, GPU only, no CPU fallback)"
_SPLIT = re.compile(r"(\d+) operations will run on the GPU, and the remaining (\d+) operations will run on the CPU")
_ADAPTER = re.compile(r"Selected adapter: ([^,\n]+)")


@dataclass(frozen=True)
class VulkanDevice:
    """The Vulkan set-up LiteRT's GPU accelerator will use in this process."""
    icd: str  # the ICD manifest (VK_ICD_FILENAMES)
    loader: str  # the Vulkan loader library loaded for it
    software: bool  # True for SwiftShader: a CPU rasteriser, not a GPU


_DEVICE: VulkanDevice | str | None = None  # this process's answer (the environment and loader are process-wide)


def vulkan_device() -> VulkanDevice | str:
    """Set up the Vulkan device once per process; returns it, or a string saying why there is none (no ICD file,
    no loader). Sets ``VK_ICD_FILENAMES`` (unless set) and ``XDG_RUNTIME_DIR`` (unless set: a private temporary
    folder) and loads the loader with global symbols, so the accelerator's own ``dlopen`` finds it."""
    global _DEVICE
    if _DEVICE is not None:
        return _DEVICE
    icd = os.environ.get("VK_ICD_FILENAMES") or (str(SWIFTSHADER_ICD) if SWIFTSHADER_ICD.is_file() else "")
    if not icd or not Path(icd.split(os.pathsep)[0]).is_file():
        _DEVICE = (f"no Vulkan ICD: {SWIFTSHADER_ICD} is absent (install Debian's chromium, whose SwiftShader ICD "
                   "LiteRT accepts) and VK_ICD_FILENAMES is not set")
        return _DEVICE
    candidates = [ctypes.util.find_library("vulkan"), str(Path(icd.split(os.pathsep)[0]).parent / "libvulkan.so.1")]
    for loader in filter(None, candidates):
        try:
            ctypes.CDLL(loader, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        os.environ.setdefault("VK_ICD_FILENAMES", icd)
        os.environ.setdefault("XDG_RUNTIME_DIR", tempfile.mkdtemp(prefix="rvm-export-xdg-"))
        _DEVICE = VulkanDevice(icd, loader, "swiftshader" in icd.lower())
        return _DEVICE
    _DEVICE = f"no Vulkan loader (libvulkan.so.1) found for {icd}: install libvulkan1"
    return _DEVICE


@contextmanager
def _native_log() -> Iterator[list[str]]:
    """Capture what native code writes to file descriptor 2 (LiteRT logs there, not to Python's sys.stderr);
    the list gets the text when the block ends."""
    text: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text.append(sink.read().decode(errors="replace"))


def _compiled(path: Path, gpu_only: bool, enforce_f32: bool):
    from ai_edge_litert.compiled_model import CompiledModel, GpuOptions, HardwareAccelerator, Options

    accelerators = HardwareAccelerator.GPU if gpu_only else HardwareAccelerator.GPU | HardwareAccelerator.CPU
    options = Options(hardware_accelerators=accelerators, gpu_options=GpuOptions(enforce_f32=enforce_f32))
    return CompiledModel.from_file(str(path), options=options)


@dataclass(frozen=True)
class GpuCompile:
    """What compiling a file onto the GPU accelerator found."""
    fully: bool  # compiled with the GPU alone: every op placed on it
    ops: int  # operators in the model's main subgraph
    on_gpu: int | None  # ops the accelerator took (all when fully; with CPU fallback, its own count)
    on_cpu: int | None  # ops left to the CPU with fallback (0 when fully; None if the log did not say)
    refused: tuple[str, ...]  # "OP: reason" lines of the accelerator's refusal
    adapter: str  # the WebGPU adapter it selected ("SwiftShader Device (Subzero)")
    model: Any = field(default=None, compare=False, repr=False)  # the GPU-only CompiledModel when fully, for reuse


def compile_on_gpu(path: Path, enforce_f32: bool = False) -> GpuCompile:
    """Compile ``path`` onto the GPU accelerator alone; if refused, again with CPU fallback to count what stays on
    the CPU. Raises MissingRuntimeError when there is no Vulkan device or no WebGPU adapter on it, InputError when
    even the fallback compile fails."""
    from .quantize import op_counts

    device = vulkan_device()
    if isinstance(device, str):
        raise MissingRuntimeError(f"LiteRT's GPU accelerator needs a Vulkan device: {device}")
    ops = sum(op_counts(Path(path).read_bytes()).values())
    compiled = None
    with _native_log() as log:
        try:
            compiled = _compiled(Path(path), True, enforce_f32)
            fully = True
        except RuntimeError:
            fully = False
    text = log[0]
    if not fully:
        with _native_log() as log:
            try:
                _compiled(Path(path), False, enforce_f32)
                failed = None
            except RuntimeError as exc:
                failed = exc
        text += log[0]
        if failed is not None:
            if "No adapters found" in text or "Failed to initialize WebGPU" in text:
                raise MissingRuntimeError(f"LiteRT's GPU accelerator found no WebGPU adapter on {device.icd}")
            raise InputError(f"LiteRT cannot compile {Path(path).name} even with CPU fallback: {failed}")
    adapter = (_ADAPTER.findall(text) or ["an unnamed adapter"])[-1].strip()
    split = _SPLIT.search(text)
    if fully:
        on_gpu, on_cpu = ops, 0
    else:
        on_gpu, on_cpu = (int(split.group(1)), int(split.group(2))) if split else (None, None)
    return GpuCompile(fully, ops, on_gpu, on_cpu, _refusals(text), adapter, compiled)


def _refusals(text: str) -> tuple[str, ...]:
    """The "OP: reason" lines after "Following operations are not supported by GPU delegate:", once each."""
    lines, found, inside = text.splitlines(), [], False
    for line in lines:
        if "not supported by GPU delegate" in line:
            inside = True
            continue
        if inside and re.match(r"^[A-Z0-9_]+: ", line + " "):
            op, _, reason = line.partition(":")
            reason = re.sub(r"\s+\S*(NamedOutputs|StaticContract)\S*", "", reason).strip()  # drop tensor names
            entry = f"{op}: {reason or 'no reason given'}"
            if entry not in found:
                found.append(entry)
        elif inside:
            inside = False
    return tuple(found)


class GpuRunner(Runner):
    """A contract ``.tflite`` compiled onto the GPU accelerator alone, bound by SignatureDef names.

    Raises MissingRuntimeError without a Vulkan device, InputError when the accelerator refuses the file (it does
    not fall back to the CPU), OutputMatchError/ShapeError when the signature breaks the contract."""

    def __init__(self, path: Path, spec: IOSpec, enforce_f32: bool, compiled: GpuCompile | None = None) -> None:
        import ai_edge_litert

        device = vulkan_device()
        if isinstance(device, str):
            raise MissingRuntimeError(f"LiteRT's GPU accelerator needs a Vulkan device: {device}")
        if compiled is not None and compiled.model is not None:  # compile_on_gpu's GPU-only model, reused
            self.model, adapter = compiled.model, compiled.adapter
        else:
            with _native_log() as log:
                try:
                    self.model = _compiled(Path(path), True, enforce_f32)
                except RuntimeError as exc:
                    raise InputError(f"LiteRT's GPU accelerator refuses {Path(path).name} without CPU fallback: "
                                     f"{exc}") from exc
            adapter = (_ADAPTER.findall(log[0]) or ["WebGPU adapter"])[-1].strip()
        self.spec, self.path = spec, Path(path)
        self.outputs = self.model.get_output_tensor_details(SIGNATURE_KEY)
        inputs = self.model.get_input_tensor_details(SIGNATURE_KEY)
        if set(inputs) != set(spec.input_names) or set(self.outputs) != set(OUTPUT_NAMES):
            raise OutputMatchError(f"{self.path.name}: signature {sorted(inputs)} -> {sorted(self.outputs)} is not "
                                   f"the contract's {sorted(spec.input_names)} -> {sorted(OUTPUT_NAMES)}")
        expected = {t.name: tuple(t.shape) for t in (*spec.inputs, *spec.outputs)}
        wrong = [n for n, d in {**inputs, **self.outputs}.items() if tuple(d["shape"]) != expected[n]]
        if wrong:
            raise ShapeError(f"{self.path.name}: {', '.join(wrong)} differ from the contract's shapes")
        self._in = {n: self.model.create_input_buffer_by_name(SIGNATURE_KEY, n) for n in spec.input_names}
        self._out = {n: self.model.create_output_buffer_by_name(SIGNATURE_KEY, n) for n in self.outputs}
        self.label = (f"LiteRT {ai_edge_litert.__version__} GPU accelerator (WebGPU on {adapter}"
                      f"{', software Vulkan' if device.software else ''}; "
                      f"{'enforce_f32' if enforce_f32 else 'default precision'})")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, buffer in self._in.items():
            buffer.write(np.ascontiguousarray(feeds[name], dtype=np.float32))
        self.model.run_by_name(SIGNATURE_KEY, self._in, self._out)
        return {n: self._out[n].read(int(np.prod(d["shape"])), np.float32).reshape(d["shape"])
                for n, d in self.outputs.items()}

    def stream(self, bucket: Bucket) -> ArrayStream:
        """States go back in as they came out, in the model's layout (copied through the host: the Python API
        cannot hand an output buffer to the next call as an input)."""
        return ArrayStream(self.run, self.spec, bucket, lambda: self.spec.zero_states(bucket, dtype="float32"))


# Measured with ai-edge-litert 2.3: compiling a 16x8 file (every activation int16) onto the accelerator aborts the
# process (SIGABRT, no message), and on the integer-only `full` file it refuses every INT16 op ("Tensor type(INT16)
# is not supported"), so a 16x8 file has nothing the GPU would take.
SKIPPED_16X8 = ("not run for a 16x8 file: LiteRT 2.3's GPU accelerator aborts the process compiling one (SIGABRT), "
                "and its delegate takes no INT16 tensor; 16x8 runs on the CPU or an accelerator with 16-bit kernels")


def gpu_placement(artifact: Artifact, parity: bool = True) -> Placement:
    """The GPU accelerator's answer for one artifact; with ``parity`` and a full compile, a loader for the rollout
    parity (judged by the ``tflite-gpu`` tolerance rows). Never raises for a refused model: that is a finding."""
    if (artifact.details or {}).get("int8_mode") == "16x8":
        return Placement(CHECK, "none", None, skipped=SKIPPED_16X8)
    device = vulkan_device()
    if isinstance(device, str):
        return Placement(CHECK, "none", None, skipped=device)
    enforce_f32 = artifact.precision == Precision.FP32
    try:
        result = compile_on_gpu(artifact.path, enforce_f32)
    except MissingRuntimeError as exc:  # an ICD without a WebGPU adapter: this machine cannot answer
        return Placement(CHECK, "none", None, skipped=str(exc))
    where = f"WebGPU on {result.adapter}" + (" (software Vulkan: a CPU rasteriser, not a GPU)"
                                             if device.software else "")
    load: Callable[[], Runner] | None = None
    if parity and result.fully:
        load = lambda: GpuRunner(artifact.path, artifact.spec, enforce_f32, result)  # noqa: E731
    note = ("placement and numbers on a software Vulkan device; no phone GPU was run"
            if device.software else "placement and numbers on this machine's Vulkan device")
    # With CPU fallback the accelerator counts ops after its own graph preparation (fp16 DEQUANTIZEs included),
    # so "nodes" is its total when it reports one.
    total = result.ops if result.on_gpu is None else result.on_gpu + result.on_cpu
    return Placement(CHECK, where, result.fully, nodes=total, placed=result.on_gpu, refused=result.refused,
                     facts={"ops_on_cpu_with_fallback": result.on_cpu,
                            "parity_on_gpu": "checked (see the parity rows)" if load else
                            ("not run (gpu_check=compile, or auto above 320x180)"
                             if result.fully else "not possible: not placed whole"),
                            "precision": "enforce_f32 (float32 kernels)" if enforce_f32 else
                            "accelerator default (float16 allowed where the device has it)"},
                     note=note, tolerance_key=TOLERANCE_KEY if load else None, load=load)
