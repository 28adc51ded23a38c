"""CUDA target: the network as a ``torch.export`` program (``.pt2``), run by PyTorch on an NVIDIA GPU.

Artifact: one ExportedProgram of the static contract (``src, r1i..r4i -> fgr, pha, r1o..r4o``) per bucket and
precision, BatchNorm folded into the convolutions, fp16 programs with fp16 I/O. Anyone with PyTorch loads it with
``torch.export.load(path).module().to("cuda")`` (no rvm-export code needed). Why not TorchScript or ONNX: TorchScript
is deprecated, ONNX on GPU is the onnx target's job (with ONNX Runtime's CUDA/TensorRT providers); a .pt2 is what
``torch.compile`` and AOTInductor take. Static, because CUDA graphs and Inductor specialise on shapes anyway.

Runtime modes (``request.options`` / ``RuntimeOptions.extra``, see docs/cuda.md): ``mode`` = one of :data:`PRESETS`,
and the switches ``channels_last``, ``compile``, ``cudagraphs``, ``tf32``, ``compile_mode``, ``compile_backend``
override the preset. With CUDA graphs one whole frame, including the copy of the new states into the next frame's
input buffers, is one graph replay: the states never leave the GPU and no kernel is launched from Python.
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvm_export.atomic import atomic_path
from rvm_export.errors import ExportFailedError, InputError, MissingRuntimeError, UsageError
from rvm_export.metadata import artifact_metadata
from rvm_export.spec import OUTPUT_NAMES, STATE_INPUTS, Bucket, IOSpec, Layout, Precision

from .base import Artifact, ExportRequest, RuntimeOptions

__all__ = ["NAME", "PRECISIONS", "RUNTIME_LABEL", "missing", "check_request", "export", "load", "CudaMode",
           "PRESETS", "parse_mode", "fold_batchnorm", "prepare_model", "CudaRunner", "CudaStream", "set_tf32",
           "tf32_status", "METADATA_FILE"]

NAME = "cuda"
PRECISIONS = ("fp32", "fp16")
DEFAULT_PRECISION = "fp16"  # what GPU deployments run; fp32 (TF32 off) is the parity reference
SUPPORTS_DYNAMIC = False  # one static program per bucket
RUNTIME_LABEL = "PyTorch on CUDA"
METADATA_FILE = "rvm_export.json"  # extra file inside the .pt2 holding the artifact metadata
_DTYPES = {"fp32": "float32", "fp16": "float16"}
_COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")  # CUDA graphs are ours; Inductor must not add its own
_BACKENDS = ("inductor", "aot_eager", "eager")  # the last two only for CPU dry runs: they generate no kernels


@dataclass(frozen=True)
class CudaMode:
    """How a program runs on the GPU. Runtime choices only: the artifact is the same for every mode."""

    channels_last: bool = True  # NHWC memory format: cuDNN's fp16 tensor-core convolutions want it
    compile: bool = False  # torch.compile with Inductor: fuses the pointwise tails of the convolutions
    cudagraphs: bool = True  # replay one captured frame (state feedback included): no Python launch overhead
    tf32: bool = False  # let fp32 convolutions use TF32: faster, ~1e-3 error, so off by default (fp32 parity 1e-4)
    compile_mode: str = "default"  # Inductor mode; "max-autotune-no-cudagraphs" searches kernels longer
    compile_backend: str = "inductor"  # "aot_eager"/"eager" exist only for CPU dry runs of the compile path

    def __post_init__(self) -> None:
        if self.compile_mode not in _COMPILE_MODES:
            raise UsageError(f"cuda compile_mode {self.compile_mode!r} is not one of {_COMPILE_MODES} "
                             f"(reduce-overhead is not needed: cudagraphs=true captures the whole frame)")
        if self.compile_backend not in _BACKENDS:
            raise UsageError(f"cuda compile_backend {self.compile_backend!r} is not one of {_BACKENDS}")

    @property
    def label(self) -> str:
        parts = ["channels_last" if self.channels_last else "NCHW"]
        if self.compile:
            backend = "" if self.compile_backend == "inductor" else f"[{self.compile_backend}]"
            parts.append("compile" + ("" if self.compile_mode == "default" else f"({self.compile_mode})") + backend)
        else:
            parts.append("eager")
        if self.cudagraphs:
            parts.append("cudagraphs")
        return "+".join(parts)


PRESETS: dict[str, CudaMode] = {
    "eager": CudaMode(channels_last=False, compile=False, cudagraphs=False),  # plain PyTorch, the published setup
    "channels_last": CudaMode(channels_last=True, compile=False, cudagraphs=False),
    "cudagraphs": CudaMode(channels_last=True, compile=False, cudagraphs=True),  # seconds to set up
    "compile": CudaMode(channels_last=False, compile=True, cudagraphs=True),  # Inductor picks its own layouts
    "max": CudaMode(channels_last=True, compile=True, cudagraphs=True),
}
DEFAULT_PRESET = "cudagraphs"
_SWITCHES = {"channels_last": bool, "compile": bool, "cudagraphs": bool, "tf32": bool, "compile_mode": str,
             "compile_backend": str}
EXPORT_OPTIONS = ("fold_batchnorm",)


def parse_mode(options: Mapping[str, Any] | None, base: CudaMode | None = None) -> CudaMode:
    """``{"mode": preset, switch: value, ...}`` -> :class:`CudaMode`; anything unknown raises UsageError naming it.

    Switches apply over the preset, or over ``base`` (the mode chosen at export) when no preset is named."""
    options = dict(options or {})
    unknown = sorted(set(options) - {"mode", *_SWITCHES, *EXPORT_OPTIONS})
    if unknown:
        raise UsageError(f"cuda does not know option(s) {unknown}; it takes mode={sorted(PRESETS)}, "
                         f"{sorted(_SWITCHES)} and, at export, {list(EXPORT_OPTIONS)}")
    preset = options.get("mode")
    if preset is not None and preset not in PRESETS:
        raise UsageError(f"cuda mode {preset!r} is not one of {sorted(PRESETS)}")
    start = PRESETS[preset] if preset else (base or PRESETS[DEFAULT_PRESET])
    changes = {}
    for key, kind in _SWITCHES.items():
        if key in options:
            value = options[key]
            if kind is bool and isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                value = value.lower() in ("true", "1")
            if not isinstance(value, kind):
                raise UsageError(f"cuda option {key} must be {kind.__name__}, got {value!r}")
            changes[key] = value
    return replace(start, **changes)


# ---------------------------------------------------------------------------------------------------------------
# Availability and requests
# ---------------------------------------------------------------------------------------------------------------
def missing() -> str | None:
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


def check_request(request: ExportRequest) -> None:
    precision = Precision(request.precision).value
    if precision not in PRECISIONS:
        raise UsageError(f"cuda cannot export precision {precision}; choose one of {PRECISIONS} "
                         f"(int8 on NVIDIA GPUs: use the onnx target with TensorRT)")
    if request.layout != Layout.NCHW:
        raise UsageError("cuda programs take NCHW tensors; for NHWC memory use option channels_last=true "
                         "(a memory format, same shapes)")
    if request.dynamic:
        raise UsageError("cuda builds one static program per --resolution (CUDA graphs and Inductor specialise on "
                         "shapes); use --downsample-ratio auto or a number, not dynamic")
    if not request.buckets:
        raise UsageError("cuda needs at least one --resolution (WxH@ratio) to build a program for")
    parse_mode(request.options)
    fold = request.option("fold_batchnorm", True)
    if not isinstance(fold, bool):
        raise UsageError(f"cuda option fold_batchnorm must be true or false, got {fold!r}")


# ---------------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------------
def _fold_pair(conv, bn):
    import torch

    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.double() * scale.reshape(-1, 1, 1, 1)
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale + bn.bias.double()
    conv.weight = torch.nn.Parameter(weight.to(conv.weight.dtype), requires_grad=False)
    conv.bias = torch.nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def fold_batchnorm(model):
    """A copy of ``model`` with every eval-mode BatchNorm2d folded into the Conv2d before it (in float64).

    Covers ``Sequential(conv, bn, ...)`` and ``convK``/``bnK`` attribute pairs (ResNet); raises if any BN is left.
    """
    from torch import nn

    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            items = list(module._modules.items())
            for (_, conv), (bn_name, bn) in zip(items, items[1:]):
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    _fold_pair(conv, bn)
                    module._modules[bn_name] = nn.Identity()
        for name, child in list(module._modules.items()):
            if isinstance(child, nn.BatchNorm2d) and name.startswith("bn"):
                conv = module._modules.get("conv" + name[2:])
                if isinstance(conv, nn.Conv2d):
                    _fold_pair(conv, child)
                    module._modules[name] = nn.Identity()
    left = [name for name, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ExportFailedError(f"cannot fold BatchNorm {left} into a preceding convolution")
    return model


def prepare_model(model, precision: str | Precision, fold: bool = True):
    """The network as the artifact holds it: eval, BN folded (optional), weights in the target precision."""
    precision = Precision(precision).value
    model = fold_batchnorm(model) if fold else copy.deepcopy(model).eval()
    return model.half() if precision == "fp16" else model.float()


def _artifact_name(spec: IOSpec, precision: str) -> str:
    ref = "" if spec.refiner == "deep_guided_filter" else "_fgf"
    b = spec.bucket
    return f"rvm_{spec.variant}{ref}_{b.width}x{b.height}_r{b.ratio:g}_{precision}.pt2"


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """One ``.pt2`` per bucket, traced on the CPU (a GPU is needed to run it, not to build it)."""
    import torch

    from .contract import StaticContract, example_inputs

    check_request(request)
    precision = Precision(request.precision).value
    fold = bool(request.option("fold_batchnorm", True))
    mode = parse_mode(request.options)
    net = prepare_model(model, precision, fold).cpu()
    dtype = getattr(torch, _DTYPES[precision])
    artifacts = []
    for bucket in request.buckets:
        spec = IOSpec(request.variant, request.refiner, bucket, io_dtype=_DTYPES[precision])
        inputs = tuple(t.to(dtype) for t in example_inputs(spec, bucket))
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                program = torch.export.export(StaticContract(net, spec).eval(), inputs)
        except Exception as exc:  # torch.export raises many types; keep the message, name the stage
            raise ExportFailedError(f"torch.export failed for {bucket.label} {precision}: {exc}") from exc
        compute = f"{_DTYPES[precision]}" + (", BatchNorm folded" if fold else "")
        details = {"format": "torch.export ExportedProgram (.pt2)", "torch": torch.__version__,
                   "fold_batchnorm": fold, "io_dtype": _DTYPES[precision], "compute": compute,
                   "runtime_options": asdict(mode), "load": "torch.export.load(path).module().to('cuda')"}
        meta = artifact_metadata(spec, precision, request.checkpoint_sha256, request.checkpoint_label,
                                 io_dtype=_DTYPES[precision], compute=compute, runtime=details["load"])
        path = Path(out_dir) / _artifact_name(spec, precision)
        with atomic_path(path) as tmp:
            torch.export.save(program, str(tmp), extra_files={METADATA_FILE: json.dumps(meta)})
        artifacts.append(Artifact(NAME, path, Precision(precision), spec, "static", (bucket,), details))
    return artifacts


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------
def set_tf32(enabled: bool) -> None:
    """TF32 for cuDNN convolutions and cuBLAS matmuls, through the legacy flags only (mixing them with the new
    ``fp32_precision`` API makes PyTorch >= 2.9 raise when Inductor reads the flags back)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.backends.cudnn.allow_tf32 = enabled
        torch.backends.cuda.matmul.allow_tf32 = enabled


def tf32_status() -> dict[str, Any]:
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
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class CudaRunner:
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
            problem = missing()
            if problem:
                raise MissingRuntimeError(f"CUDA ({problem})", "cuda", "torch (CUDA build)")
            torch.backends.cudnn.benchmark = True  # per-shape algorithm search on the first frames (before capture)
        self.spec, self.mode, self.artifact = spec, mode, artifact
        self.precision = precision or ("fp16" if spec.io_dtype == "float16" else "fp32")
        self.dtype = getattr(torch, _DTYPES[self.precision])
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
        return stream.step(np.asarray(feeds["src"]))


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
        if src.shape != (1, 3, self.bucket.height, self.bucket.width):
            raise InputError(f"src has shape {list(src.shape)}, {self.bucket.label} needs "
                             f"[1, 3, {self.bucket.height}, {self.bucket.width}]")
        outputs = self.step_tensor(self.stage(src))
        # always a copy: with CUDA graphs the states are buffers that the next step overwrites in place
        return {name: value.to("cpu", self.torch.float32, copy=True).numpy() for name, value in outputs.items()}


def read_metadata(path: Path) -> dict[str, str]:
    import torch

    extra = {METADATA_FILE: ""}
    torch.export.load(str(path), extra_files=extra)
    return json.loads(extra[METADATA_FILE]) if extra[METADATA_FILE] else {}


def load(artifact: Artifact, options: RuntimeOptions, device: str | None = None) -> CudaRunner:
    """Load a ``.pt2`` onto the GPU. ``RuntimeOptions.device`` "cpu" (its default) means this target's default,
    ``cuda:0``; ``device="cpu"`` (keyword) is a dry run for tests. Mode: ``options.extra`` over the export options."""
    import torch

    path = Path(artifact.path)
    if not path.is_file():
        raise InputError(f"cuda program not found: {path}")
    target = device or (options.device if str(options.device).startswith("cuda") else "cuda:0")
    exported = artifact.details.get("runtime_options")
    mode = parse_mode(getattr(options, "extra", None), CudaMode(**exported) if exported else None)
    try:
        program = torch.export.load(str(path))
    except Exception as exc:
        raise InputError(f"torch.export.load cannot read {path} (saved by torch "
                         f"{artifact.details.get('torch', '?')}, this is {torch.__version__}): {exc}") from exc
    return CudaRunner(program.module(), artifact.spec, mode, target, artifact, artifact.precision.value,
                      allow_cpu=device == "cpu")
