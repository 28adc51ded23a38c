"""TFLite conversion: litert-torch on the static contract module, precision by AI Edge Quantizer, the contract and
provenance embedded as flatbuffer metadata, the SignatureDef checked against the contract before the file is
written. See the package docstring for the route and the options."""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvm_export.core.atomic import atomic_path
from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import ExportFailedError, OutputMatchError, ShapeError, UsageError
from rvm_export.core.metadata import artifact_metadata
from rvm_export.core.names import OUTPUT_NAMES, artifact_name, shape_label
from rvm_export.core.request import Artifact, ExportRequest
from rvm_export.core.spec import IOSpec, Precision
from targets.traced.resample import describe_downsample
from targets.traced.rewrites import export_friendly, gpu_friendly

from .runtime import METADATA_KEY, SIGNATURE_KEY, bind_signature

__all__ = ["export", "export_bucket", "convert_fp32", "embed_metadata", "check_bucket", "exact_suggestions",
           "int8_mode"]

NAME = "tflite"
# The refiner tail in both layouts (targets/traced/refiner_tail.py): grouped4, two 4-channel resizes and no channel
# MEAN (XNNPACK's resize costs per pixel whatever the channels; its full-res MEAN as much as a resize): 4K @ 0.125
# went from 0.68-0.72x to 1.05-1.06x the original export in one side-by-side run (docs/tflite.md, decision 52). The
# planar tail's rank-5 RESHAPE/SLICE are refused by LiteRT's GPU accelerator; grouped4 stays rank 4.
TAIL = "grouped4"
log = logging.getLogger(__name__)


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


def int8_mode(request: ExportRequest) -> str | None:
    """The int8 mode of an int8 request ("dynamic" or "full"), None for other precisions."""
    from .quantize import INT8_MODES

    return (request.options.int8_mode or INT8_MODES[0]) if request.precision == Precision.INT8 else None


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """Write one ``.tflite`` per bucket into ``out_dir`` (each written atomically). Raises ExportFailedError."""
    built = (getattr(model, "variant", request.variant), getattr(model, "refiner_name", request.refiner))
    if built != (request.variant, request.refiner):
        raise UsageError(f"the model is {' + '.join(built)} but the request says {request.variant} + {request.refiner}")
    precision, mode = request.precision, int8_mode(request)
    artifacts = []
    for bucket in request.buckets:
        spec = IOSpec(request.variant, request.refiner, bucket, layout=request.layout,
                      notes={"tflite_signature": SIGNATURE_KEY, **({"int8_mode": mode} if mode else {})})
        path = Path(out_dir) / artifact_name(spec.variant, spec.refiner, shape_label(bucket),
                                             spec.layout.value.lower(), str(precision), mode or "", suffix=".tflite")
        details = export_bucket(model, spec, path, request)
        artifacts.append(Artifact(NAME, path, precision, spec, "static", (bucket,), details))
    return artifacts


def export_bucket(model, spec: IOSpec, path: Path, request: ExportRequest) -> dict[str, Any]:
    """Convert, change precision, embed metadata, check the signature, write ``path``; return manifest details."""
    from .quantize import op_counts, quantize

    precision, mode = request.precision, int8_mode(request)
    if mode in ("full", "16x8"):  # integer-only: project_mat as a split-precision pair of int8 convolutions;
        # 16x8 (16-bit activations) also the early backbone's convolutions, and hardswish as ReLUs (quantize.py)
        from targets.traced.rewrites import int16_friendly

        from .split_weights import SPLIT_MODULES, early_backbone_convs, split_precision

        split = SPLIT_MODULES + (early_backbone_convs(model) if mode == "16x8" else ())
        with split_precision(model, split):
            content, details = convert_fp32(model, spec, exact_resize=request.options.exact_resize,
                                            rewrites=int16_friendly if mode == "16x8" else None)
        details["split_precision"] = list(split)
        if mode == "16x8":
            details["rewrites"] = "hardswish as x * (relu(x + 3) - relu(x - 3)) / 6 (no 16-bit HARD_SWISH recipe)"
    else:
        content, details = convert_fp32(model, spec, exact_resize=request.options.exact_resize)
    if precision == Precision.FP32:
        details["compute"] = "float32"
    else:
        calibration = _calibration(model, spec, request) if mode in ("full", "mixed", "16x8") else None
        content, quant = quantize(content, precision.value, mode or "dynamic", calibration)
        details.update(quant)
        details["compute"] = {"fp16": "float16 conv weights (XNNPACK computes float32; GPU delegate float16)",
                              "dynamic": f"int8 conv weights, activations quantised per call; {_scopes(quant)}",
                              "full": "integer-only: int8 weights, int8 activations (16-bit where the recipe says); "
                                      f"{_scopes(quant)}",
                              "16x8": "integer-only: int8 weights, 16-bit activations on every op (16x8); "
                                      f"{_scopes(quant)}",
                              "mixed": f"int8 weights, int8 activations except the recipe's exceptions; "
                                       f"{_scopes(quant)}"}[mode or "fp16"]
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
    """Rollout frames of the generated scene (not the parity clip) and of real footage, with the states fp32 PyTorch
    produced (:func:`rvm_export.core.rollout.calibration_set`)."""
    from rvm_export.core.rollout import calibration_set

    feeds = calibration_set(model, (spec.bucket,), request.calibration_frames)
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


def convert_fp32(model, spec: IOSpec, exact_resize: bool = True, rewrites=None) -> tuple[bytes, dict[str, Any]]:
    """The fp32 flatbuffer for one static spec, and details (converter, op counts). ``rewrites``: a context manager
    factory from targets/traced/rewrites.py applied while tracing, on top of the usual ones (the 16x8 recipe's).

    Conversions are cached per (weights, variant, refiner, bucket, layout, rewrites) within the process, so exporting
    several precisions of one bucket converts once (it is the slow step: ~0.5-1 min per bucket here).
    """
    key = (_weights_digest(model), spec.variant, spec.refiner, spec.bucket, spec.layout, exact_resize,
           getattr(rewrites, "__name__", None))
    if key not in _FP32_CACHE:
        while len(_FP32_CACHE) >= _FP32_CACHE_SIZE:
            _FP32_CACHE.pop(next(iter(_FP32_CACHE)))
        _FP32_CACHE[key] = _convert_fp32(model, spec, exact_resize, rewrites)
    content, details = _FP32_CACHE[key]
    return content, dict(details)


def _convert_fp32(model, spec: IOSpec, exact_resize: bool, rewrites=None) -> tuple[bytes, dict[str, Any]]:
    from contextlib import nullcontext

    import litert_torch
    import torch

    from targets.traced.contract import StaticContract, example_inputs, tail_description

    from .quantize import op_counts

    wrapper = _named_outputs(StaticContract(model.eval(), spec, exact_resize=exact_resize, tail=TAIL))
    inputs = dict(zip(spec.input_names, example_inputs(spec)))
    try:
        # scale_before_pool: no PAD feeds an AVERAGE_POOL_2D, which LiteRT's GPU accelerator would merge into the
        # pool's padding and stop counting (docs/tflite.md)
        with export_friendly(model, scale_before_pool=True), gpu_friendly(), \
                (rewrites() if rewrites else nullcontext()), torch.no_grad(), warnings.catch_warnings():
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
                     "downsample": describe_downsample(spec.bucket, exact_resize),
                     "refiner_tail": tail_description(spec, TAIL)}


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
