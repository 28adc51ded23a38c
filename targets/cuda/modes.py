"""How a cuda-target program runs: :class:`CudaMode` (memory format, torch.compile, CUDA graphs, TF32), its named
presets, and :class:`CudaOptions`, the target's typed options (``--option cuda.KEY=VALUE`` at export, or
``RuntimeOptions.overrides`` at run time). Runtime choices only: the artifact is the same for every mode."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, Mapping

from rvm_export.core.errors import UsageError
from rvm_export.core.options import TargetOptions, option

__all__ = ["CudaMode", "CudaOptions", "PRESETS", "DEFAULT_PRESET", "parse_mode"]

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
_SWITCHES = ("channels_last", "compile", "cudagraphs", "tf32", "compile_mode", "compile_backend")


@dataclass(frozen=True)
class CudaOptions(TargetOptions):
    """``--option cuda.KEY=VALUE``: a preset and switches over it (None: the preset's, or the export's, value)."""

    mode: Literal["eager", "channels_last", "cudagraphs", "compile", "max"] | None = option(
        None, "preset: eager, channels_last, cudagraphs (default), compile, max")
    channels_last: bool | None = option(None, "NHWC memory format (cuDNN's fp16 tensor cores want it)")
    compile: bool | None = option(None, "torch.compile with Inductor")
    cudagraphs: bool | None = option(None, "replay one captured frame, state feedback included")
    tf32: bool | None = option(None, "let fp32 convolutions use TF32 (~1e-3 error; off by default)")
    compile_mode: Literal["default", "max-autotune-no-cudagraphs"] | None = option(
        None, "Inductor mode; reduce-overhead is not needed: cudagraphs=true captures the whole frame")
    compile_backend: Literal["inductor", "aot_eager", "eager"] | None = option(
        None, "inductor; aot_eager/eager only for CPU dry runs")
    fold_batchnorm: bool = option(True, "export only: fold BatchNorm into the convolutions (float64 arithmetic)")


def parse_mode(options: CudaOptions | Mapping[str, Any] | None, base: CudaMode | None = None) -> CudaMode:
    """The :class:`CudaMode` that ``options`` ask for (a :class:`CudaOptions`, or a mapping parsed as one: unknown
    keys raise UsageError naming them). Switches apply over the preset, or over ``base`` (the mode chosen at export)
    when no preset is named."""
    if not isinstance(options, CudaOptions):
        options = CudaOptions.parse("cuda", options)
    start = PRESETS[options.mode] if options.mode else (base or PRESETS[DEFAULT_PRESET])
    changes = {key: getattr(options, key) for key in _SWITCHES if getattr(options, key) is not None}
    return replace(start, **changes)
