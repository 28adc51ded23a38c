"""The CoreML export job: which packages a request becomes, their contracts and their manifest details.

- default: one stateless package per bucket (any mlprogram deployment target, iOS 16 by default);
- ``multifunction``: one package with one function per bucket, weights shared (iOS 18);
- ``stateful``: additionally the stateful variant (states inside the model, iOS 18), per bucket or, with
  ``multifunction``, as one multifunction package of stateful functions. Each package gets its own deployment
  target (``CoreMLPlan.for_package``): the stateless ones stay iOS 16 by default beside iOS 18 stateful ones.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dataclasses import replace

from rvm_export.core.atomic import staging_dir
from rvm_export.core.bucket import Bucket
from rvm_export.core.metadata import LICENSE_NOTE, artifact_metadata
from rvm_export.core.names import artifact_name, shape_label
from rvm_export.core.request import Artifact, ExportRequest
from rvm_export.core.spec import IOSpec, Precision

from .convert import AUTHOR, convert_bucket, coreml_spec, describe_model, program_ops, save_package
from .mil_executor import EXECUTOR_LABEL
from .multifunction import combine, function_name
from .options import CoreMLPlan, resolve_options

__all__ = ["export_packages", "package_name", "bucket_spec"]

TARGET = "coreml"


def package_name(variant: str, refiner: str, shape: str, precision: Precision, opts: CoreMLPlan,
                 stateful: bool) -> str:
    """``rvm_<variant>[_fgf]_<shape>[_stateful][_image][_imgout][_io16]_<precision>.mlpackage``."""
    return artifact_name(variant, refiner, shape, "stateful" if stateful else "", "image" if opts.image_input else "",
                         "imgout" if opts.image_output else "", "io16" if opts.io_dtype == "float16" else "",
                         str(precision), suffix=".mlpackage")


def bucket_spec(request: ExportRequest, bucket: Bucket, opts: CoreMLPlan, stateful: bool) -> IOSpec:
    """The contract of one bucket's package or function (stateful: src -> fgr, pha, states inside)."""
    return coreml_spec(request.variant, request.refiner, bucket, opts, stateful)


def _details(opts: CoreMLPlan, precision: Precision, functions: dict[str, str], ops: dict[str, int],
             stateful: bool) -> dict[str, Any]:
    import coremltools as ct

    details: dict[str, Any] = {
        "converter": f"coremltools {ct.__version__}: torch.jit.trace -> ct.convert(convert_to='mlprogram')",
        "deployment_target": opts.deployment_target,
        "deployment_target_reason": opts.deployment_target_reason,
        "specification_version": opts.spec_version,
        "compute_precision": "float16" if precision == Precision.FP16 else "float32",
        "io_dtype": opts.io_dtype,
        "image_input": opts.image_input,
        "image_output": opts.image_output,
        "functions": functions,
        "default_function": next(iter(functions)),
        "compute_units": opts.compute_units,
        "mil_ops": ops,
        "checked_on_linux_with": EXECUTOR_LABEL,
    }
    if stateful:
        details["state_storage"] = opts.state_storage
        details["states"] = ("float16 hi + lo pair per state (~22 significant bits)" if opts.state_storage == "split"
                             else "float16, one tensor per state")
    if opts.io_dtype == "float16":
        details["io_note"] = "float16 model I/O: states fed back between frames are float16"
    return details


def _one(model, request: ExportRequest, opts: CoreMLPlan, bucket: Bucket, stateful: bool, path: Path,
         flavour: str):
    """Convert, describe and save one bucket; returns (spec, op histogram)."""
    spec = bucket_spec(request, bucket, opts, stateful)
    mlmodel = convert_bucket(model, spec, request.precision, opts, stateful)
    describe_model(mlmodel, spec, request.precision, opts, stateful, request.checkpoint_sha256,
                   request.checkpoint_label, flavour)
    ops = program_ops(mlmodel)
    save_package(mlmodel, path)
    return spec, ops


def _single(model, request, opts, bucket: Bucket, stateful: bool, out_dir: Path) -> Artifact:
    flavour = "stateful" if stateful else "static"
    path = out_dir / package_name(request.variant, request.refiner, shape_label(bucket), request.precision,
                                  opts, stateful)
    spec, ops = _one(model, request, opts, bucket, stateful, path, flavour)
    details = _details(opts, request.precision, {"main": bucket.label}, ops, stateful)
    return Artifact(TARGET, path, request.precision, spec, flavour, (bucket,), details)


def _multifunction(model, request, opts, stateful: bool, out_dir: Path) -> Artifact:
    from rvm_export import __version__

    flavour = "multifunction-stateful" if stateful else "multifunction"
    buckets = tuple(request.buckets)
    path = out_dir / package_name(request.variant, request.refiner, f"multi{len(buckets)}", request.precision,
                                  opts, stateful)
    parts: list[tuple[Bucket, Path]] = []
    contracts: dict[str, Any] = {}
    ops: dict[str, int] = {}
    with staging_dir(out_dir) as work:
        for bucket in buckets:
            part = work / f"{function_name(bucket)}.mlpackage"
            spec, part_ops = _one(model, request, opts, bucket, stateful, part, flavour)
            parts.append((bucket, part))
            contracts[function_name(bucket)] = {"bucket": bucket.label, **spec.to_dict()}
            for op, count in part_ops.items():
                ops[op] = ops.get(op, 0) + count
        first = bucket_spec(request, buckets[0], opts, stateful)
        compute = "float16" if request.precision == Precision.FP16 else "float32"
        listing = ", ".join(f"{function_name(b)} ({b.label})" for b in buckets)
        user = artifact_metadata(first, request.precision.value, request.checkpoint_sha256, request.checkpoint_label,
                                 flavour=flavour, deployment_target=opts.deployment_target, compute=compute,
                                 io_dtype=opts.io_dtype, image_input=opts.image_input)
        del user["rvm_export.io_contract"]  # one contract per function, below
        user["rvm_export.function_contracts"] = json.dumps(contracts, separators=(",", ":"))
        metadata = {"author": AUTHOR, "version": __version__, "license": LICENSE_NOTE, "user_defined": user,
                    "short_description": (
                        f"Robust Video Matting ({request.variant}, {request.refiner}), one function per bucket with "
                        f"its resolution and downsample_ratio baked in: {listing}. Load one with "
                        f"function_name=...; {compute} compute, {opts.io_dtype} I/O; "
                        + ("states live in the model (MLState)." if stateful else
                           "feed r1o..r4o back as r1i..r4i on the next frame, zeros on the first."))}
        functions = combine(parts, path, metadata)
    spec = replace(first, functions=tuple((function_name(b), b) for b in buckets),
                   notes={**first.notes, "function_contracts": contracts})
    details = _details(opts, request.precision, functions, ops, stateful)
    details["weights_shared"] = "constants de-duplicated across functions by coremltools.utils.save_multifunction"
    return Artifact(TARGET, path, request.precision, spec, flavour, buckets, details)


def export_packages(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """Every package ``request`` asks for (per bucket or multifunction, stateless and optionally stateful);
    returns their Artifacts. Raises UsageError for options the precision cannot take, ExportFailedError when a
    conversion fails."""
    opts = resolve_options(request.options, str(request.precision))
    out_dir = Path(out_dir)
    artifacts: list[Artifact] = []
    for stateful in (False, True) if opts.stateful else (False,):
        plan = opts.for_package(stateful)
        if opts.multifunction:
            artifacts.append(_multifunction(model, request, plan, stateful, out_dir))
        else:
            artifacts += [_single(model, request, plan, b, stateful, out_dir) for b in request.buckets]
    return artifacts
