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

import copy
import json
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping

from rvm_export.atomic import atomic_path
from rvm_export.errors import ExportFailedError, InputError, UsageError
from rvm_export.metadata import artifact_metadata
from rvm_export.spec import IOSpec, Layout, Precision

from .base import Artifact, ExportRequest, RuntimeOptions
from .torch_cuda_runtime import _DTYPES, CudaRunner, CudaStream, set_tf32, synchronize, tf32_status

__all__ = ["NAME", "PRECISIONS", "RUNTIME_LABEL", "missing", "check_request", "export", "load", "CudaMode",
           "PRESETS", "parse_mode", "fold_batchnorm", "prepare_model", "CudaRunner", "CudaStream", "set_tf32",
           "tf32_status", "synchronize", "METADATA_FILE"]

NAME = "cuda"
PRECISIONS = ("fp32", "fp16")
DEFAULT_PRECISION = "fp16"  # what GPU deployments run; fp32 (TF32 off) is the parity reference
SUPPORTS_DYNAMIC = False  # one static program per bucket
RUNTIME_LABEL = "PyTorch on CUDA"
METADATA_FILE = "rvm_export.json"  # extra file inside the .pt2 holding the artifact metadata
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
