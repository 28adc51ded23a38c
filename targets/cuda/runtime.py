"""Running a cuda-target program: :class:`CudaRunner` places a contract module (a ``.pt2`` program or a
``StaticContract``) on the GPU in one :class:`~targets.cuda.modes.CudaMode`; :class:`CudaStream` steps frames with
the states kept on the device (one CUDA graph replay per frame in the graph modes).
"""
from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import InputError, MissingRuntimeError, UsageError
from rvm_export.core.names import OUTPUT_NAMES, SRC, STATE_INPUTS
from rvm_export.core.request import Artifact, RuntimeOptions
from rvm_export.core.runner import Runner, check_frame
from rvm_export.core.spec import IOSpec

from .modes import CudaMode, parse_mode

__all__ = ["CudaRunner", "CudaStream", "set_tf32", "tf32_status", "synchronize", "cuda_missing", "load", "DTYPES"]

DTYPES = {"fp32": "float32", "fp16": "float16"}


def cuda_missing() -> str | None:
    """None when PyTorch sees a CUDA GPU; else why not, and what to do."""
    try:
        import torch
    except ImportError:
        return "torch: pip install torch (a CUDA build)"
    if not torch.cuda.is_available():
        if torch.version.cuda is None:
            return f"no CUDA GPU: PyTorch {torch.__version__} is a CPU-only build (install a CUDA build of torch)"
        return (f"no CUDA GPU visible to PyTorch {torch.__version__} (built for CUDA {torch.version.cuda}): "
                f"check the NVIDIA driver and CUDA_VISIBLE_DEVICES")
    return None


def set_tf32(enabled: bool) -> None:
    """TF32 for cuDNN convolutions and cuBLAS matmuls, through the legacy flags only (mixing them with the new
    ``fp32_precision`` API makes PyTorch >= 2.9 raise when Inductor reads the flags back)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled


def tf32_status() -> dict[str, Any]:
    """The TF32 flags as PyTorch reports them (for the GPU script's record)."""
    import torch

    status: dict[str, Any] = {}
    probes = {"cudnn.allow_tf32": lambda: torch.backends.cudnn.allow_tf32,
              "cuda.matmul.allow_tf32": lambda: torch.backends.cuda.matmul.allow_tf32,
              "cudnn.conv.fp32_precision": lambda: torch.backends.cudnn.conv.fp32_precision}
    for key, probe in probes.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                status[key] = probe()
        except Exception as exc:  # absent in older torch, or the mixed-API RuntimeError
            status[key] = f"unreadable: {type(exc).__name__}"
    return status


def synchronize(device) -> None:
    """Wait for the GPU when ``device`` is a CUDA device (no-op on the CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class CudaRunner(Runner):
    """A contract module (``.pt2`` program or ``StaticContract``) placed on a device in one :class:`CudaMode`.

    ``allow_cpu`` is for dry runs and tests only: the same code on the CPU, where CUDA graphs are emulated by
    running the captured frame function directly (static buffers, in-place state copy) and nothing is timed as CUDA.
    """

    def __init__(self, module, spec: IOSpec, mode: CudaMode, device: str = "cuda", artifact: Artifact | None = None,
                 precision: str | None = None, allow_cpu: bool = False) -> None:
        import torch

        self.device = torch.device(device)
        if self.device.type != "cuda" and not allow_cpu:
            raise UsageError(f"the cuda target runs on a CUDA device, not {device!r}")
        if self.device.type == "cuda":
            problem = cuda_missing()
            if problem:
                raise MissingRuntimeError(f"the cuda target cannot run here: {problem}")
            torch.backends.cudnn.benchmark = True  # per-shape algorithm search on the first frames (before capture)
        self.spec, self.mode, self.artifact = spec, mode, artifact
        self.precision = precision or ("fp16" if spec.io_dtype == "float16" else "fp32")
        self.dtype = getattr(torch, DTYPES[self.precision])
        if self.precision == "fp32" and self.device.type == "cuda":
            set_tf32(mode.tf32)  # process-wide: recorded in the label
        self.memory_format = torch.channels_last if mode.channels_last else torch.contiguous_format
        module = module.to(self.device)
        if mode.channels_last:
            module = module.to(memory_format=torch.channels_last)
        self.module = module
        self.call = module
        if mode.compile:
            self.call = torch.compile(module, backend=mode.compile_backend, fullgraph=True, dynamic=False,
                                      **({"mode": mode.compile_mode} if mode.compile_backend == "inductor" else {}))
        self._streams: dict[Bucket, CudaStream] = {}
        where = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU (dry run, not CUDA)"
        tf32 = f", TF32 {'on' if mode.tf32 else 'off'}" if self.precision == "fp32" else ""
        self.label = f"PyTorch {torch.__version__} {mode.label} {self.precision} on {where}{tf32}"

    def stream(self, bucket: Bucket) -> "CudaStream":
        return CudaStream(self, bucket)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        bucket = self.spec.bucket
        if bucket not in self._streams:
            self._streams[bucket] = self.stream(bucket)
        stream = self._streams[bucket]
        stream.set_states({k: feeds[k] for k in STATE_INPUTS})
        return stream.step(np.asarray(feeds[SRC]))


class CudaStream:
    """Consecutive frames with the states kept on the device.

    Without CUDA graphs each frame's output states are the next frame's inputs (no copy). With CUDA graphs the
    frame reads static ``src``/state buffers and its last kernels copy the new states into the state buffers,
    so a step is one host-to-device copy of ``src`` (or a device copy, see :meth:`step_tensor`) and one replay.
    """

    def __init__(self, runner: CudaRunner, bucket: Bucket) -> None:
        import torch

        runner.spec.check_bucket(bucket)
        self.torch = torch
        self.runner, self.bucket = runner, bucket
        self.static = runner.mode.cudagraphs
        self.capture = self.static and runner.device.type == "cuda"
        self.shapes = runner.spec.concrete_state_shapes(bucket)
        self.graph = None
        self.setup_s: float | None = None  # compile + warm-up + capture, once
        self.first_call_s: float | None = None  # the first warm-up call alone
        self._outputs: tuple | None = None
        self.src_buf = self._empty((1, 3, bucket.height, bucket.width)) if self.static else None
        self.states = [self._empty(self.shapes[name]).zero_() for name in STATE_INPUTS]

    def _empty(self, shape):
        r = self.runner
        return self.torch.empty(shape, dtype=r.dtype, device=r.device).contiguous(memory_format=r.memory_format)

    # -- setup ------------------------------------------------------------------------------------------------
    def _frame(self) -> tuple:
        """One frame on the static buffers; the new states are copied into the state buffers in place."""
        fgr, pha, *new = self.runner.call(self.src_buf, *self.states)
        for buf, value in zip(self.states, new):
            buf.copy_(value)
        return fgr, pha

    def prepare(self, warmup: int = 3) -> float:
        """Compile (if asked), warm up and capture; returns the seconds it took (0 when already done).
        ``first_call_s`` keeps the first warm-up call alone: the compile itself, or cuDNN's algorithm search."""
        if self.setup_s is not None:
            return 0.0
        torch, device = self.torch, self.runner.device
        start = time.perf_counter()
        with torch.no_grad():
            if self.static or self.runner.mode.compile:
                if self.static:
                    self.src_buf.uniform_()
                    call = self._frame
                else:
                    frame = self._empty((1, 3, self.bucket.height, self.bucket.width)).uniform_()

                    def call():
                        return self.runner.call(frame, *self.states)
                side = torch.cuda.Stream(device) if self.capture else None
                if side is not None:  # warm-up off the default stream, as graph capture requires
                    side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                    for index in range(warmup):
                        call()
                        if index == 0:
                            synchronize(device)
                            self.first_call_s = time.perf_counter() - start
                if side is not None:
                    torch.cuda.current_stream(device).wait_stream(side)
                    self.graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(self.graph):
                        self._outputs = self._frame()
        synchronize(device)
        self.setup_s = time.perf_counter() - start
        self.reset()
        return self.setup_s

    # -- the Stream surface -----------------------------------------------------------------------------------
    def reset(self) -> None:
        if self.static:
            for buf in self.states:
                buf.zero_()
        else:
            self.states = [self._empty(self.shapes[name]).zero_() for name in STATE_INPUTS]

    def set_states(self, states: Mapping[str, np.ndarray]) -> None:
        """Start the next step from these states (contract names, NCHW) instead of the stream's own."""
        if self.setup_s is None:
            self.prepare()  # warm-up writes the state buffers, so it must come first
        for index, name in enumerate(STATE_INPUTS):
            value = self.torch.from_numpy(np.ascontiguousarray(states[name]))
            if tuple(value.shape) != tuple(self.shapes[name]):
                raise InputError(f"{name} has shape {list(value.shape)}, {self.bucket.label} needs "
                                 f"{list(self.shapes[name])}")
            if self.static:
                self.states[index].copy_(value)
            else:
                self.states[index] = self.stage(value)

    def stage(self, array) -> Any:
        """A host array or tensor as a device tensor in the program's dtype and memory format."""
        tensor = array if isinstance(array, self.torch.Tensor) else self.torch.from_numpy(np.ascontiguousarray(array))
        r = self.runner
        return tensor.to(r.device, r.dtype, non_blocking=True).contiguous(memory_format=r.memory_format)

    def step_tensor(self, src) -> dict[str, Any]:
        """Device tensors in, device tensors out (no host copy). With CUDA graphs the returned tensors are the
        graph's own buffers: read them before the next step."""
        torch = self.torch
        if self.setup_s is None:
            self.prepare()
        with torch.no_grad():
            if self.static:
                self.src_buf.copy_(src)
                if self.graph is not None:
                    self.graph.replay()
                    fgr, pha = self._outputs
                else:
                    fgr, pha = self._frame()
                new = self.states
            else:
                fgr, pha, *new = self.runner.call(self.stage(src), *self.states)
                self.states = list(new)
        return dict(zip(OUTPUT_NAMES, (fgr, pha, *new)))

    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        src = np.asarray(src)
        check_frame(src, self.bucket)
        outputs = self.step_tensor(self.stage(src))
        # always a copy: with CUDA graphs the states are buffers that the next step overwrites in place
        return {name: value.to("cpu", self.torch.float32, copy=True).numpy() for name, value in outputs.items()}


def load(artifact: Artifact, options: RuntimeOptions, device: str | None = None) -> CudaRunner:
    """Load a ``.pt2`` onto the GPU. ``options.device`` "cpu" (the CLI default) means this target's default,
    ``cuda:0``; ``device="cpu"`` (keyword) is a dry run for tests. Mode: ``options.overrides`` (a CudaOptions) over
    the mode chosen at export. Raises InputError for a file torch.export cannot read."""
    import torch

    path = Path(artifact.path)
    if not path.is_file():
        raise InputError(f"cuda program not found: {path}")
    target = device or (options.device if str(options.device).startswith("cuda") else "cuda:0")
    exported = artifact.details.get("runtime_options")
    mode = parse_mode(options.overrides, CudaMode(**exported) if exported else None)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise InputError(f"torch.export.load cannot read {path} (saved by torch "
                         f"{artifact.details.get('torch', '?')}, this is {torch.__version__}): {exc}") from exc
    return CudaRunner(program.module(), artifact.spec, mode, target, artifact, str(artifact.precision),
                      allow_cpu=device == "cpu")
