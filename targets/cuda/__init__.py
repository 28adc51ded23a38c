"""CUDA target: the network as a ``torch.export`` program (``.pt2``), run by PyTorch on an NVIDIA GPU.

Artifact: one ExportedProgram of the static contract (``src, r1i..r4i -> fgr, pha, r1o..r4o``) per bucket and precision,
BatchNorm folded into the convolutions, fp16 programs with fp16 I/O. Anyone with PyTorch loads it with
``torch.export.load(path).module().to("cuda")`` (no rvm-export code needed). Why not TorchScript or ONNX: TorchScript is
deprecated, ONNX on GPU is the onnx target's job (with ONNX Runtime's CUDA/TensorRT providers); a .pt2 is what
``torch.compile`` and AOTInductor take. Static, because CUDA graphs and Inductor specialise on shapes anyway.

Runtime modes (options ``mode`` and switches, at export or as ``RuntimeOptions.overrides``; docs/cuda.md): ``mode`` =
one of :data:`modes.PRESETS`, and the switches ``channels_last``, ``compile``, ``cudagraphs``, ``tf32``,
``compile_mode``, ``compile_backend`` override the preset. With CUDA graphs one whole frame, including the copy of the
new states into the next frame's input buffers, is one graph replay: the states never leave the GPU and no kernel is
launched from Python.

Files: modes.py (modes, presets, options), export.py (BatchNorm folding, torch.export), runtime.py (runner and stream on
the GPU; a CPU dry run for tests).
"""

from __future__ import annotations

from pathlib import Path

from rvm_export.core.errors import UsageError
from rvm_export.core.request import Artifact, ExportRequest, RuntimeOptions
from rvm_export.core.spec import Layout, Precision
from rvm_export.core.target import TargetDescription

from . import export as _export  # first: the submodule must not replace export() below when imported later
from . import runtime as _runtime
from .export import METADATA_FILE, fold_batchnorm, prepare_model, read_metadata
from .modes import DEFAULT_PRESET, PRESETS, CudaMode, CudaOptions, parse_mode
from .runtime import CudaRunner, CudaStream, set_tf32, synchronize, tf32_status

__all__ = ["DESCRIPTION", "CudaOptions", "missing", "check_request", "export", "load", "CudaMode", "PRESETS",
           "DEFAULT_PRESET", "parse_mode", "fold_batchnorm", "prepare_model", "read_metadata", "CudaRunner",
           "CudaStream", "set_tf32", "tf32_status", "synchronize", "METADATA_FILE", "where_it_runs"]

DESCRIPTION = TargetDescription(
    name="cuda",
    summary="PyTorch on an NVIDIA GPU: a torch.export program (.pt2) per bucket, fp16 with CUDA graphs by default",
    precisions=(Precision.FP32, Precision.FP16),
    default_precision=Precision.FP16,  # what GPU deployments run; fp32 (TF32 off) is the parity reference
    dynamic_precisions=frozenset(),  # one static program per bucket: CUDA graphs and Inductor specialise on shapes
    layouts=(Layout.NCHW,),  # NHWC memory is the channels_last option: same shapes
    devices=("cpu", "cuda"),  # "cpu" (the CLI default) means this target's default device, cuda:0
    takes_opset=False,
    options=CudaOptions,
    extra="cuda",
    modules=("torch",),
    in_all=False,  # PyTorch on a GPU is asked for by name; `all` means the file formats
    runtime_label="PyTorch on CUDA",
)


def missing(device: str = "cpu") -> str | None:
    """None when PyTorch sees a CUDA GPU (``device`` "cpu" means cuda:0); else why not, and what to do."""
    return _runtime.cuda_missing()


def check_request(request: ExportRequest) -> None:
    """Raise UsageError for what a static GPU program cannot be (int8, NHWC tensors, dynamic)."""
    if request.precision not in DESCRIPTION.precisions:
        raise UsageError(f"cuda cannot export precision {request.precision}; choose one of fp32, fp16 "
                         f"(int8 on NVIDIA GPUs: use the onnx target with TensorRT)")
    if request.layout != Layout.NCHW:
        raise UsageError("cuda programs take NCHW tensors; for NHWC memory use option channels_last=true "
                         "(a memory format, same shapes)")
    if request.dynamic:
        raise UsageError("cuda builds one static program per --resolution (CUDA graphs and Inductor specialise on "
                         "shapes); use --downsample-ratio auto or a number, not dynamic")
    DESCRIPTION.check_common(request)
    parse_mode(request.options)


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """One ``.pt2`` per bucket, traced on the CPU (a GPU is needed to run it, not to build it)."""
    check_request(request)
    return _export.export(model, request, Path(out_dir))


def load(artifact: Artifact, options: RuntimeOptions) -> CudaRunner:
    """The program on ``options.device`` (cuda:N; "cpu" means cuda:0) in the mode chosen at export, or in the mode
    ``options.overrides`` asks for."""
    return _runtime.load(artifact, options)


def where_it_runs(artifact: Artifact, options: RuntimeOptions) -> tuple:
    """No accelerator check beyond the artifact's own parity: CUDA runs where the artifact's own parity ran (this
    machine's GPU when there is one); no separate check."""
    return ()
