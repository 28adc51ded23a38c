"""TFLite (LiteRT) target: one static ``.tflite`` per (resolution, ratio) bucket, run on the LiteRT interpreter.

- Route: litert-torch converts the PyTorch module behind :class:`~targets.traced.contract.StaticContract` (torch.export,
  then the LiteRT converter). Inputs are passed by keyword and outputs returned as a dict, so the SignatureDef
  ``serving_default`` carries the contract names (``src, r1i..r4i -> fgr, pha, r1o..r4o``) with no renaming step.
  onnx2tf (from our static ONNX) was the alternative; it writes no SignatureDef, returns NHWC outputs for NCHW
  inputs (a transpose per state per frame) and needs the onnxsim command on PATH: see docs/tflite.md.
- Layout: NCHW or NHWC (``request.layout``) for ``src``, ``fgr``, ``pha`` and the states alike, so ``rKo`` feeds
  ``rKi`` as is. NHWC (what the Android GPU delegate wants) converts with no TRANSPOSE op left in the graph.
- Static only: the ratio is baked into a RESIZE_BILINEAR to a fixed size, which samples like PyTorch's
  ``scale_factor`` only when H*r and W*r are integers; other buckets are refused with the nearest valid values.
- Export-only rewrites (targets/traced/rewrites.py, applied while tracing): the decoder's ceil-mode average
  pool becomes builtin ops, PAD, MUL, AVERAGE_POOL_2D (litert-torch would emit STABLEHLO_REDUCE_WINDOW; a PAD
  feeding the pool would be merged by the GPU accelerator into a pool that stops counting it); the final clamps
  become MAXIMUM + MINIMUM instead of RELU_0_TO_1 (which LiteRT's GPU accelerator refuses); and the ratio
  downsample uses PyTorch's own float32 interpolation weights where 1/r is not a power of two (RESIZE_BILINEAR's
  coordinates drift from PyTorch's by up to 6e-5 px at 0.375, enough to move a trained model's states by 4e-4).
  Both layouts use the grouped refiner tail (no rank-5 RESHAPE/SLICE, which the GPU accelerator refuses).
- Where it runs (accelerator.py): each file is compiled onto LiteRT's GPU accelerator alone (WebGPU on a Vulkan
  device: Chromium's SwiftShader here) and, when it is placed whole, its rollout parity is checked there.
- Precisions (quantize.py): fp32; fp16 weights; int8 with option ``int8_mode`` = ``"dynamic"``
  (default), ``"full"`` (integer-only: int8 activations, 16-bit in the output head, calibrated on rollouts of
  generated and real footage with the fp32 model's real states), ``"mixed"`` (W8A8 with measured float
  exceptions) or ``"16x8"`` (integer-only, 16-bit activations on every op, int8 weights). Every int8 file's
  manifest entry lists the layers that are not int8 and why (``details.not_int8``).
- Metadata: the contract and provenance (``rvm_export.core.metadata``) as JSON in the flatbuffer's metadata entry
  ``rvm_export`` (read back by :func:`runtime.read_contract`).

Files: export.py (conversion, metadata, contract check), quantize.py (fp16 / int8 with AI Edge Quantizer),
runtime.py (LiteRT interpreter bound by signature names), accelerator.py (the GPU accelerator check and runner).
The rewrites: targets/traced/rewrites.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import UsageError
from rvm_export.core.options import TargetOptions, option
from rvm_export.core.placement import Placement
from rvm_export.core.request import Artifact, ExportRequest, RuntimeOptions
from rvm_export.core.spec import Layout, Precision
from rvm_export.core.target import TargetDescription

from . import export as _export  # first: the submodule must not replace export() below when imported later
from . import runtime as _runtime
from .export import check_bucket, convert_fp32, embed_metadata, exact_suggestions, export_bucket
from .runtime import METADATA_KEY, SIGNATURE_KEY, TfliteRunner, load_path, read_contract, read_metadata

__all__ = ["DESCRIPTION", "TfliteOptions", "missing", "check_request", "export", "load", "where_it_runs", "load_path",
           "read_contract", "read_metadata", "convert_fp32", "export_bucket", "embed_metadata", "check_bucket",
           "exact_suggestions", "TfliteRunner", "SIGNATURE_KEY", "METADATA_KEY", "auto_gpu_check"]


@dataclass(frozen=True)
class TfliteOptions(TargetOptions):
    """``--option tflite.KEY=VALUE``."""

    int8_mode: Literal["dynamic", "full", "mixed", "16x8"] | None = option(
        None, "int8 only: 'dynamic' (int8 weights, activations quantised per call; the default), 'full' "
              "(integer-only for NPUs: int8 activations, 16-bit in the output head; calibrated on rollouts with real "
              "states), 'mixed' "
              "(full, with the few layers that measured too sensitive kept at higher precision; listed in the "
              "manifest's details.not_int8) or '16x8' (integer-only with 16-bit activations on every op and int8 "
              "weights, for accelerators with 16-bit kernels; the integer-only recipe that holds 1e-2 alpha MAD; "
              "slow on CPUs)")
    exact_resize: bool = option(
        True, "true (default): the ratio downsample uses PyTorch's float32 weights (parity); false: TFLite's "
              "RESIZE_BILINEAR (2 fewer TRANSPOSE ops in NHWC, up to ~1e-4 px coordinate drift at r=0.375)")
    gpu_check: Literal["auto", "parity", "compile", "off"] = option(
        "auto", "LiteRT GPU accelerator check of every file: 'parity' (compile GPU-only, then the rollout on it), "
                "'compile' (placement only), 'off', or 'auto' (default: parity up to 320x180, placement only "
                "above: a software Vulkan device takes seconds a frame at 256x144 and far longer at 1080p)")


DESCRIPTION = TargetDescription(
    name="tflite",
    summary="LiteRT (.tflite) flatbuffers, one per bucket, NCHW or NHWC, for Android and embedded Linux",
    precisions=(Precision.FP32, Precision.FP16, Precision.INT8),
    default_precision=Precision.FP32,
    dynamic_precisions=frozenset(),  # fixed tensor shapes; the ratio is baked into a fixed-size resize
    layouts=(Layout.NCHW, Layout.NHWC),
    devices=("cpu",),  # the LiteRT interpreter with XNNPACK here; the GPU/NNAPI delegates exist on Android
    takes_opset=False,
    options=TfliteOptions,
    extra="tflite",
    modules=("litert_torch", "ai_edge_quantizer", "ai_edge_litert"),
    in_all=True,
    runtime_label="LiteRT interpreter (XNNPACK)",
)


def missing(device: str = "cpu") -> str | None:
    """Found without importing (litert-torch imports TensorFlow: seconds). The only device is the CPU."""
    return DESCRIPTION.missing()


def check_request(request: ExportRequest) -> None:
    """Raise UsageError for what a static .tflite cannot be (dynamic, a bucket whose H*r or W*r is not whole, an
    int8 mode for another precision), naming the nearest values that work."""
    if request.dynamic:
        raise UsageError("tflite exports static models only: a .tflite has fixed tensor shapes and the downsample "
                         "ratio is baked into a fixed-size resize (every state shape depends on it), so each "
                         "resolution and ratio needs its own file; drop --downsample-ratio dynamic and list the "
                         "buckets as --resolution WxH@RATIO (several allowed)")
    DESCRIPTION.check_common(request)
    if request.options.int8_mode is not None and request.precision != Precision.INT8:
        raise UsageError(f"int8_mode only applies to --precision int8 (asked for {request.precision}); drop it")
    for bucket in request.buckets:
        check_bucket(bucket)


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """One ``.tflite`` per bucket (see the module docstring)."""
    DESCRIPTION.require()
    check_request(request)
    return _export.export(model, request, Path(out_dir))


def load(artifact: Artifact, options: RuntimeOptions) -> TfliteRunner:
    """The LiteRT interpreter (XNNPACK) over the artifact; it needs only ai-edge-litert."""
    from rvm_export.core.target import missing_modules

    if missing_modules(("ai_edge_litert",)):
        from rvm_export.core.errors import MissingRuntimeError

        raise MissingRuntimeError("the LiteRT interpreter (ai-edge-litert)", "tflite", "ai-edge-litert")
    return _runtime.load(artifact, options)


def where_it_runs(artifact: Artifact, options: RuntimeOptions) -> tuple[Placement, ...]:
    """LiteRT's GPU accelerator on this machine's Vulkan device (accelerator.py): compiled whole or not, the ops
    it refuses, and with a whole compile a loader for the rollout parity on it. ``options.overrides`` (this target's
    options) may set ``gpu_check``; empty when it is "off" or ai-edge-litert is absent."""
    from rvm_export.core.target import missing_modules

    check = options.overrides.gpu_check if isinstance(options.overrides, TfliteOptions) else "auto"
    if check == "off" or missing_modules(("ai_edge_litert",)):
        return ()
    from .accelerator import gpu_placement

    if check == "auto":
        check = auto_gpu_check(artifact.spec.bucket)
    return (gpu_placement(artifact, parity=check == "parity"),)


def auto_gpu_check(bucket: Bucket) -> Literal["parity", "compile"]:
    """What ``gpu_check=auto`` does for a bucket: the rollout parity on the GPU accelerator up to 320x180 pixels,
    placement only above (a software Vulkan device takes seconds a frame at 256x144, far longer at 1080p)."""
    from .accelerator import AUTO_PARITY_PIXELS

    return "parity" if bucket.width * bucket.height <= AUTO_PARITY_PIXELS else "compile"
