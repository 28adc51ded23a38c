"""TFLite (LiteRT) target: one static ``.tflite`` per (resolution, ratio) bucket, run on the LiteRT interpreter.

- Route: litert-torch converts the PyTorch module behind :class:`~targets.contract.StaticContract` (torch.export,
  then the LiteRT converter). Inputs are passed by keyword and outputs returned as a dict, so the SignatureDef
  ``serving_default`` carries the contract names (``src, r1i..r4i -> fgr, pha, r1o..r4o``) with no renaming step.
  onnx2tf (from our static ONNX) was the alternative; it writes no SignatureDef, returns NHWC outputs for NCHW
  inputs (a transpose per state per frame) and needs the onnxsim command on PATH: see docs/tflite.md.
- Layout: NCHW or NHWC (``request.layout``) for ``src``, ``fgr``, ``pha`` and the states alike, so ``rKo`` feeds
  ``rKi`` as is. NHWC (what the Android GPU delegate wants) converts with no TRANSPOSE op left in the graph.
- Static only: the ratio is baked into a RESIZE_BILINEAR to a fixed size, which samples like PyTorch's
  ``scale_factor`` only when H*r and W*r are integers; other buckets are refused with the nearest valid values.
- Two export-only rewrites (targets/tflite_rewrites.py, applied while tracing): the decoder's ceil-mode average
  pool becomes builtin ops (litert-torch would emit STABLEHLO_REDUCE_WINDOW), and the ratio downsample uses
  PyTorch's own float32 interpolation weights where 1/r is not a power of two (RESIZE_BILINEAR's coordinates
  drift from PyTorch's by up to 6e-5 px at 0.375, enough to move a trained model's states by 4e-4).
- Precisions (targets/tflite_quant.py): fp32; fp16 weights; int8 with ``options["int8_mode"]`` = ``"dynamic"``
  (default) or ``"full"`` (int8 activations calibrated on a rollout with the fp32 model's real states).
- Metadata: the contract and provenance (``rvm_export.metadata``) as JSON in the flatbuffer's metadata entry
  ``rvm_export`` (read back by :func:`read_contract`).
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvm_export.atomic import atomic_path
from rvm_export.errors import (ExportFailedError, InputError, MissingRuntimeError, OutputMatchError, ShapeError,
                               UsageError)
from rvm_export.metadata import artifact_metadata
from rvm_export.spec import OUTPUT_NAMES, Bucket, IOSpec, Layout, Precision

from .base import Artifact, ExportRequest, RuntimeOptions
from .resample import describe_downsample
from .tflite_rewrites import export_friendly
from .tflite_runtime import (METADATA_KEY, SIGNATURE_KEY, TfliteRunner, TfliteStream, bind_signature, read_contract,
                             read_metadata)

__all__ = ["NAME", "PRECISIONS", "RUNTIME_LABEL", "OPTIONS", "missing", "check_request", "export", "load",
           "load_path", "read_contract", "read_metadata", "convert_fp32", "export_friendly", "embed_metadata",
           "TfliteRunner", "TfliteStream", "SIGNATURE_KEY", "METADATA_KEY"]

NAME = "tflite"
PRECISIONS = ("fp32", "fp16", "int8")
RUNTIME_LABEL = "LiteRT interpreter (XNNPACK)"
OPTIONS = {  # --option tflite.KEY=VALUE
    "int8_mode": "int8 only: 'dynamic' (int8 weights, activations quantised per call; default) or 'full' (int8 "
                 "activations too, calibrated on a rollout with real states)",
    "exact_resize": "true (default): the ratio downsample uses PyTorch's float32 weights (parity); false: TFLite's "
                    "RESIZE_BILINEAR (2 fewer TRANSPOSE ops in NHWC, up to ~1e-4 px coordinate drift at r=0.375)",
}
log = logging.getLogger(__name__)


def missing() -> str | None:
    """Found without importing (litert-torch imports TensorFlow: seconds)."""
    from importlib.util import find_spec

    for module in ("litert_torch", "ai_edge_quantizer", "ai_edge_litert"):
        if find_spec(module) is None:
            return f"{module}: pip install 'rvm-export[tflite]'"
    return None


def _require() -> None:
    if missing():
        raise MissingRuntimeError("the TFLite toolchain (litert-torch, ai-edge-quantizer, ai-edge-litert)", "tflite",
                                  "litert-torch ai-edge-quantizer ai-edge-litert")


def _require_runtime() -> None:
    try:
        import ai_edge_litert  # noqa: F401
    except ImportError:
        raise MissingRuntimeError("the LiteRT interpreter (ai-edge-litert)", "tflite", "ai-edge-litert") from None


# ---------------------------------------------------------------------------------------------------------------
# Request validation
# ---------------------------------------------------------------------------------------------------------------
def int8_mode(request: ExportRequest) -> str | None:
    from .tflite_quant import INT8_MODES

    return request.option("int8_mode", INT8_MODES[0]) if Precision(request.precision) == Precision.INT8 else None


def check_request(request: ExportRequest) -> None:
    from .tflite_quant import INT8_MODES

    precision = request.precision.value if isinstance(request.precision, Precision) else str(request.precision)
    if precision not in PRECISIONS:
        raise UsageError(f"tflite cannot export precision {precision}; choose one of {', '.join(PRECISIONS)}")
    if request.dynamic:
        raise UsageError("tflite exports static models only: a .tflite has fixed tensor shapes and the downsample "
                         "ratio is baked into a fixed-size resize (every state shape depends on it), so each "
                         "resolution and ratio needs its own file; drop --dynamic and list the buckets as "
                         "--resolution WxH@RATIO (several allowed)")
    if request.layout not in (Layout.NCHW, Layout.NHWC):
        raise UsageError(f"tflite layout must be NCHW or NHWC, got {request.layout!r}")
    if not request.buckets:
        raise UsageError("tflite needs at least one --resolution WxH@RATIO to build")
    unknown = sorted(set(request.options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"tflite does not know option(s) {', '.join(unknown)}; it takes: "
                         + "; ".join(f"{k}: {v}" for k, v in OPTIONS.items()))
    if "int8_mode" in request.options:
        if precision != "int8":
            raise UsageError(f"int8_mode only applies to --precision int8 (asked for {precision}); drop it")
        if request.options["int8_mode"] not in INT8_MODES:
            raise UsageError(f"int8_mode must be one of {', '.join(INT8_MODES)}, got {request.options['int8_mode']!r}")
    if not isinstance(request.options.get("exact_resize", True), bool):
        raise UsageError(f"exact_resize must be true or false, got {request.options['exact_resize']!r}")
    for bucket in request.buckets:
        check_bucket(bucket)


def check_bucket(bucket: Bucket) -> None:
    """Refuse a bucket whose low-res size is not exactly H*r x W*r, naming the nearest values that work."""
    if bucket.exact:
        return
    h, w = bucket.height * bucket.ratio, bucket.width * bucket.ratio
    ratios, sizes = exact_suggestions(bucket)
    raise UsageError(
        f"tflite cannot build a static model for {bucket.label}: {bucket.width}x{bucket.height} x {bucket.ratio:g} = "
        f"{w:g}x{h:g} is not a whole number of pixels. TFLite's RESIZE_BILINEAR samples with the rounded size "
        f"({bucket.lowres[1]}x{bucket.lowres[0]}) while PyTorch samples with the ratio, so the model would not match. "
        f"Nearest valid ratios at {bucket.width}x{bucket.height}: {', '.join(map(str, ratios)) or 'none'}; "
        f"nearest valid sizes at ratio {bucket.ratio:g}: {', '.join(sizes) or 'none'}")


def exact_suggestions(bucket: Bucket, count: int = 2) -> tuple[list[float], list[str]]:
    """Nearest valid ratios at this size and sizes at this ratio (both checked by building the Bucket)."""
    return bucket.nearest_exact_ratios(count), bucket.nearest_exact_sizes()


# ---------------------------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------------------------
def _artifact_name(spec: IOSpec, precision: Precision, mode: str | None) -> str:
    ref = "" if spec.refiner == "deep_guided_filter" else "_fgf"
    b = spec.bucket
    flavour = precision.value + (f"_{mode}" if mode else "")
    return f"rvm_{spec.variant}{ref}_{b.width}x{b.height}_r{b.ratio:g}_{spec.layout.value.lower()}_{flavour}.tflite"


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """Write one ``.tflite`` per bucket into ``out_dir`` (each written atomically)."""
    _require()
    check_request(request)
    built = (getattr(model, "variant", request.variant), getattr(model, "refiner_name", request.refiner))
    if built != (request.variant, request.refiner):
        raise UsageError(f"the model is {' + '.join(built)} but the request says {request.variant} + {request.refiner}")
    precision, mode = Precision(request.precision), int8_mode(request)
    artifacts = []
    for bucket in request.buckets:
        spec = IOSpec(request.variant, request.refiner, bucket, layout=request.layout,
                      extra={"tflite_signature": SIGNATURE_KEY, **({"int8_mode": mode} if mode else {})})
        path = Path(out_dir) / _artifact_name(spec, precision, mode)
        details = export_bucket(model, spec, path, request)
        artifacts.append(Artifact(NAME, path, precision, spec, "static", (bucket,), details))
    return artifacts


def export_bucket(model, spec: IOSpec, path: Path, request: ExportRequest) -> dict[str, Any]:
    """Convert, change precision, embed metadata, check the signature, write ``path``; return manifest details."""
    from .tflite_quant import op_counts, quantize

    precision, mode = Precision(request.precision), int8_mode(request)
    content, details = convert_fp32(model, spec, exact_resize=request.option("exact_resize", True))
    if precision == Precision.FP32:
        details["compute"] = "float32"
    else:
        calibration = _calibration(model, spec, request) if mode == "full" else None
        content, quant = quantize(content, precision.value, mode or "dynamic", calibration)
        details.update(quant)
        details["compute"] = {"fp16": "float16 conv weights (XNNPACK computes float32; GPU delegate float16)",
                              "dynamic": f"int8 conv weights, activations quantised per call; {_scopes(quant)}",
                              "full": f"int8 weights and activations; {_scopes(quant)}"}[mode or "fp16"]
    details.setdefault("ops", op_counts(content))
    details.update(layout=spec.layout.value, signature=SIGNATURE_KEY, io_dtype="float32", int8_mode=mode)
    meta = artifact_metadata(spec, precision.value, request.checkpoint_sha256, request.checkpoint_label,
                             converter=details["converter"], compute=details["compute"], io_dtype="float32",
                             signature=SIGNATURE_KEY, layout=spec.layout.value,
                             **({"int8_mode": mode} if mode else {}))
    content = embed_metadata(content, meta)
    _check_contract(content, spec)
    with atomic_path(path) as tmp:
        tmp.write_bytes(content)
    details["bytes"] = len(content)
    return details


def _scopes(quant: Mapping[str, Any]) -> str:
    ops = ", ".join(f"{k} x{v}" for k, v in quant.get("float_ops", {}).items())
    return (f"float32 ops: {ops or 'none'} (scopes {', '.join(quant.get('float_scopes', [])) or 'none'}, the ops "
            "writing graph outputs, and what the quantizer does not cover)")


def _calibration(model, spec: IOSpec, request: ExportRequest) -> list[dict[str, np.ndarray]]:
    """Rollout frames of the generated scene (not the parity clip) with the states fp32 PyTorch produced."""
    from rvm_export.reference import calibration_feeds
    from rvm_export.scene import MovingScene

    bucket = spec.bucket
    scene = MovingScene(bucket.width, bucket.height, max(4, request.calibration_frames), seed=1000)
    feeds = calibration_feeds(model, bucket, scene)
    return [{name: spec.to_layout(value) for name, value in feed.items() if name in spec.input_names}
            for feed in feeds]


def _named_outputs(contract):
    import torch

    class NamedOutputs(torch.nn.Module):
        """Keyword inputs and a dict of outputs: litert-torch names the SignatureDef after them."""

        def __init__(self) -> None:
            super().__init__()
            self.contract = contract

        def forward(self, src, r1i, r2i, r3i, r4i):
            return dict(zip(OUTPUT_NAMES, self.contract(src, r1i, r2i, r3i, r4i)))

    return NamedOutputs().eval()


_FP32_CACHE: dict[tuple, tuple[bytes, dict[str, Any]]] = {}  # (weights digest, spec) -> conversion, this process
_FP32_CACHE_SIZE = 4  # a 1080p fp32 model is ~15 MB


def _weights_digest(model) -> str:
    import hashlib

    digest = hashlib.sha1()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def convert_fp32(model, spec: IOSpec, exact_resize: bool = True) -> tuple[bytes, dict[str, Any]]:
    """The fp32 flatbuffer for one static spec, and details (converter, op counts).

    Conversions are cached per (weights, variant, refiner, bucket, layout) within the process, so exporting
    several precisions of one bucket converts once (it is the slow step: ~0.5-1 min per bucket here).
    """
    _require()
    key = (_weights_digest(model), spec.variant, spec.refiner, spec.bucket, spec.layout, exact_resize)
    if key not in _FP32_CACHE:
        while len(_FP32_CACHE) >= _FP32_CACHE_SIZE:
            _FP32_CACHE.pop(next(iter(_FP32_CACHE)))
        _FP32_CACHE[key] = _convert_fp32(model, spec, exact_resize)
    content, details = _FP32_CACHE[key]
    return content, dict(details)


def _convert_fp32(model, spec: IOSpec, exact_resize: bool) -> tuple[bytes, dict[str, Any]]:
    import litert_torch
    import torch

    from .contract import StaticContract, example_inputs
    from .tflite_quant import op_counts

    wrapper = _named_outputs(StaticContract(model.eval(), spec, exact_resize=exact_resize))
    inputs = dict(zip(spec.input_names, example_inputs(spec)))
    try:
        with export_friendly(model), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            content = bytes(litert_torch.convert(wrapper, sample_kwargs=inputs).model_content())
    except Exception as exc:  # torch.export and the MLIR converter raise many types; keep the message
        raise ExportFailedError(f"litert-torch failed to convert {spec.bucket.label} ({spec.layout.value}): "
                                f"{exc}") from exc
    ops = op_counts(content)
    leftovers = {k: v for k, v in ops.items() if k.startswith("STABLEHLO_") or k == "CUSTOM"}
    if leftovers:
        log.warning("non-builtin ops left in the TFLite graph (GPU delegates will not run them): %s", leftovers)
    return content, {"converter": f"litert-torch {litert_torch.__version__} (torch.export)", "ops": ops,
                     "transposes": ops.get("TRANSPOSE", 0), "non_builtin_ops": leftovers,
                     "downsample": describe_downsample(spec.bucket, exact_resize)}


# ---------------------------------------------------------------------------------------------------------------
# Metadata and contract checks
# ---------------------------------------------------------------------------------------------------------------
def embed_metadata(content: bytes, meta: Mapping[str, str]) -> bytes:
    """Add (or replace) the ``rvm_export`` metadata entry: a buffer holding the metadata as JSON."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))  # resolves offset-stored weights
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(json.dumps(dict(meta), separators=(",", ":")).encode(), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    model.metadata = [m for m in (model.metadata or []) if m.name not in (METADATA_KEY, METADATA_KEY.encode())]
    model.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _check_contract(content: bytes, spec: IOSpec) -> None:
    """The written model must expose exactly the contract's names and shapes under ``serving_default``."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    try:
        bind_signature(interpreter, spec, str(spec.bucket.label))
    except (OutputMatchError, ShapeError) as exc:
        raise ExportFailedError(f"the converted model breaks the I/O contract: {exc}") from exc


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------
def load(artifact: Artifact, options: RuntimeOptions) -> TfliteRunner:
    return TfliteRunner(artifact.path, artifact.spec, options, artifact)


def load_path(path: Path, options: RuntimeOptions) -> TfliteRunner:
    """Load a .tflite written by rvm-export without its manifest: the contract comes from the embedded metadata."""
    _require_runtime()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"TFLite file not found: {path}")
    contract = read_contract(path)
    if contract is None:
        raise InputError(f"{path} carries no rvm_export metadata; it was not written by rvm-export")
    width, height = contract["resolution"]
    bucket = Bucket(width, height, float(contract["downsample_ratio"]))
    spec = IOSpec(contract["variant"], contract["refiner"], bucket, layout=Layout(contract["layout"]))
    return TfliteRunner(path, spec, options)
