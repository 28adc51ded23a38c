"""One bucket -> one mlprogram: torch.jit.trace of the contract wrapper, then coremltools.convert.

Route: ``targets.contract.StaticContract`` (stateless: ``src, r1i..r4i -> fgr, pha, r1o..r4o``) or
``StatefulContract`` (``src -> fgr, pha``, states inside; see wrappers.py) traced at the bucket's fixed shape and
ratio, converted with ``convert_to="mlprogram"``. The resizes come out as ``upsample_bilinear`` with
``align_corners=False`` (the original project's CoreML export used align-corners resizes, which the network never
does); an exact bucket (H*r and W*r integers) is required because Core ML recomputes the sampling scale from the
rounded output size.
Every tensor I/O is declared float32 unless ``io_dtype=float16`` is asked for: with an fp16 program and iOS 16+,
coremltools would otherwise make the I/O float16 and the fed-back states would silently lose precision.
"""
from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np

from rvm_export.core.atomic import atomic_path
from rvm_export.core.errors import ExportFailedError
from rvm_export.core.metadata import LICENSE_NOTE, artifact_metadata
from rvm_export.core.names import FRAME_OUTPUTS, SRC, STATE_INPUTS, STATE_OUTPUTS
from rvm_export.core.spec import IOSpec, Precision, StateVariable
from targets.traced.contract import StaticContract

from .options import CoreMLPlan
from .wrappers import PixelOutputs, StatefulContract, state_buffers

__all__ = ["convert_bucket", "save_package", "describe_model", "coreml_spec", "program_ops", "AUTHOR",
           "IMAGE_SCALE"]

AUTHOR = "rvm-export (Robust Video Matting: Lin, Yang, Saleemi, Sengupta, arXiv 2108.11515)"
IMAGE_SCALE = 1.0 / 255.0  # image-typed src: 8-bit RGB pixels -> [0, 1] inside the model


def _np_dtype(io_dtype: str):
    return np.float16 if io_dtype == "float16" else np.float32


def coreml_spec(variant: str, refiner: str, bucket, opts: CoreMLPlan, stateful: bool) -> IOSpec:
    """The contract of one bucket's package or function: float32 (or float16) tensors, ``src`` as an image with
    ``image_input``, and for a stateful package the Core ML states it keeps inside (float16; an fp32 program's
    ``split`` storage keeps two halves per state)."""
    image_inputs = (SRC,) if opts.image_input else ()
    image_outputs = FRAME_OUTPUTS if opts.image_output else ()
    notes = {"io_note": "float16 I/O: the fed-back states are rounded to float16 at every frame"} \
        if opts.io_dtype == "float16" and not stateful else {}
    plain = IOSpec(variant, refiner, bucket, io_dtype=opts.io_dtype, image_inputs=image_inputs,
                   image_outputs=image_outputs, notes=notes)
    if not stateful:
        return plain
    shapes = plain.concrete_state_shapes(bucket)
    variables = tuple(
        StateVariable(name, f"{key}i/{key}o" + {"hi": ", high float16 half", "lo": ", low float16 half (r - hi)"}
                      .get(name.partition("_")[2], ""), tuple(shapes[key + "i"]), "float16")
        for key, names in state_buffers(opts.state_storage).items() for name in names)
    storage = ("this fp32 program stores each state as two float16 halves (hi + lo, ~22 significant bits)"
               if opts.state_storage == "split" else "each state is one float16 tensor")
    return replace(plain, states="internal", state_variables=variables,
                   state_reset=f"a new state (MLModel.makeState / make_state(); Core ML states are float16: "
                               f"{storage})", notes={"state_storage": opts.state_storage})


def _trace(wrapper, example):
    import torch

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return torch.jit.trace(wrapper, example, check_trace=False)
        except Exception as exc:
            raise ExportFailedError(f"torch.jit.trace failed: {exc}") from exc


def convert_bucket(model, spec: IOSpec, precision: Precision, opts: CoreMLPlan, stateful: bool):
    """Trace and convert one bucket; returns the (unsaved) ``ct.models.MLModel``."""
    import coremltools as ct

    from targets.traced.contract import example_inputs

    bucket = spec.bucket
    examples = example_inputs(spec, bucket)
    io_np = _np_dtype(opts.io_dtype)
    if opts.image_input:
        src_type = ct.ImageType(name=SRC, shape=tuple(examples[0].shape), scale=IMAGE_SCALE,
                                color_layout=ct.colorlayout.RGB)
    else:
        src_type = ct.TensorType(name=SRC, shape=tuple(examples[0].shape), dtype=io_np)
    if opts.image_output:  # 8-bit pixel buffers: RGB foreground, grayscale alpha (values x255 inside the model)
        frame_outputs = [ct.ImageType(name="fgr", color_layout=ct.colorlayout.RGB),
                         ct.ImageType(name="pha", color_layout=ct.colorlayout.GRAYSCALE)]
    else:
        frame_outputs = [ct.TensorType(name=n, dtype=io_np) for n in FRAME_OUTPUTS]
    if stateful:
        wrapper = StatefulContract(model, spec, opts.state_storage, 255.0 if opts.image_output else 1.0).eval()
        traced = _trace(wrapper, examples[:1])
        inputs = [src_type]
        outputs = frame_outputs
        states = [ct.StateType(wrapped_type=ct.TensorType(shape=tuple(getattr(wrapper, name).shape),
                                                          dtype=np.float16), name=name)
                  for names in state_buffers(opts.state_storage).values() for name in names]
    else:
        wrapper = StaticContract(model, spec).eval()
        traced = _trace(PixelOutputs(wrapper) if opts.image_output else wrapper, examples)
        inputs = [src_type] + [ct.TensorType(name=n, shape=tuple(x.shape), dtype=io_np)
                               for n, x in zip(STATE_INPUTS, examples[1:])]
        outputs = frame_outputs + [ct.TensorType(name=n, dtype=io_np) for n in STATE_OUTPUTS]
        states = None
    compute = ct.precision.FLOAT16 if precision == Precision.FP16 else ct.precision.FLOAT32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            mlmodel = ct.convert(traced, convert_to="mlprogram", inputs=inputs, outputs=outputs, states=states,
                                 compute_precision=compute,
                                 minimum_deployment_target=getattr(ct.target, opts.deployment_target),
                                 compute_units=ct.ComputeUnit.CPU_ONLY, skip_model_load=True)
        except Exception as exc:
            raise ExportFailedError(f"coremltools.convert failed for {bucket.label} "
                                    f"({'stateful' if stateful else 'stateless'}): {exc}") from exc
    _check_interface(mlmodel, spec, opts, stateful)
    return mlmodel


def _check_interface(mlmodel, spec: IOSpec, opts: CoreMLPlan, stateful: bool) -> None:
    """The converted description must be the contract: names, shapes, dtypes. Raises ExportFailedError."""
    desc = mlmodel.get_spec().description
    want_in, want_out = list(spec.input_names), list(spec.output_names)
    got_in = [f.name for f in desc.input]
    got_out = [f.name for f in desc.output]
    if got_in != want_in or got_out != want_out:
        raise ExportFailedError(f"converted model has inputs {got_in} and outputs {got_out}; "
                                f"the contract needs {want_in} -> {want_out}")
    want_dtype = "FLOAT16" if opts.io_dtype == "float16" else "FLOAT32"
    shapes = {t.name: list(t.shape) for t in (*spec.inputs, *spec.outputs)}
    for feature in (*desc.input, *desc.output):
        kind = feature.type.WhichOneof("Type")
        if kind == "imageType":
            continue
        array = feature.type.multiArrayType
        dtype = type(array).ArrayDataType.Name(array.dataType)
        if dtype != want_dtype:
            raise ExportFailedError(f"{feature.name} is {dtype} at the model boundary, expected {want_dtype}")
        if list(array.shape) and list(array.shape) != shapes[feature.name]:
            raise ExportFailedError(f"{feature.name} has shape {list(array.shape)}, expected {shapes[feature.name]}")


def program_ops(mlmodel) -> dict[str, int]:
    """Op-type histogram of every function of the converted program (for the manifest and the executor check)."""
    program = mlmodel._mil_program
    counts: Counter[str] = Counter()
    for function in program.functions.values():
        counts.update(op.op_type for op in function.operations)
    return dict(sorted(counts.items()))


def _feature_texts(spec: IOSpec, opts: CoreMLPlan, stateful: bool) -> dict[str, str]:
    b = spec.bucket
    h, w = b.lowres
    baked = f"downsample_ratio {b.ratio:g} is baked in: the network runs at {w}x{h}"
    dtype = opts.io_dtype
    texts: dict[str, str] = {}
    if opts.image_input:
        texts[SRC] = f"RGB image {b.width}x{b.height}, 8-bit pixels scaled by 1/255 inside the model; {baked}"
    else:
        texts[SRC] = f"RGB frame, {dtype} [1,3,{b.height},{b.width}] in [0, 1]; {baked}"
    if opts.image_output:
        texts["fgr"] = f"foreground, RGB image {b.width}x{b.height} (8-bit: 255 = 1.0)"
        texts["pha"] = f"alpha matte, grayscale image {b.width}x{b.height} (8-bit: 255 = opaque)"
    else:
        texts["fgr"] = f"foreground RGB in [0, 1], {dtype} [1,3,{b.height},{b.width}]"
        texts["pha"] = f"alpha matte in [0, 1], {dtype} [1,1,{b.height},{b.width}]"
    if stateful:
        return texts
    shapes = spec.concrete_state_shapes(b)
    for k, (out_name, in_name) in enumerate(zip(STATE_OUTPUTS, STATE_INPUTS), start=1):
        shape = list(shapes[in_name])
        texts[in_name] = (f"recurrent state {k}, {dtype} {shape}: zeros on the first frame and after a cut or a size "
                          f"change; afterwards the previous prediction's {out_name}, fed back unchanged")
        texts[out_name] = f"recurrent state {k} after this frame, {dtype} {shape}: feed it back as {in_name} next frame"
    return texts


def describe_model(mlmodel, spec: IOSpec, precision: Precision, opts: CoreMLPlan, stateful: bool,
                   checkpoint_sha256: str | None, checkpoint_label: str, flavour: str) -> dict[str, str]:
    """Author, version, licence, descriptions of every input/output/state, and the rvm_export metadata."""
    from rvm_export import __version__

    b = spec.bucket
    h, w = b.lowres
    compute = "float16" if precision == Precision.FP16 else "float32"
    recycling = ("states live in the model (MLState): one state per clip, a new state after a cut"
                 if stateful else "feed r1o..r4o back as r1i..r4i on the next frame; zeros on the first")
    mlmodel.author = AUTHOR
    mlmodel.version = __version__
    mlmodel.license = LICENSE_NOTE
    mlmodel.short_description = (
        f"Robust Video Matting ({spec.variant}, {spec.refiner}) for {b.width}x{b.height} frames, downsample_ratio "
        f"{b.ratio:g} baked in (network at {w}x{h}); {compute} compute, {opts.io_dtype} I/O; {recycling}.")
    for name, text in _feature_texts(spec, opts, stateful).items():
        if name in mlmodel.input_description:
            mlmodel.input_description[name] = text
        else:
            mlmodel.output_description[name] = text
    meta = artifact_metadata(spec, precision.value, checkpoint_sha256, checkpoint_label,
                             flavour=flavour, deployment_target=opts.deployment_target, compute=compute,
                             io_dtype=opts.io_dtype, downsample_ratio=f"{b.ratio:g}",
                             image_input=opts.image_input, state_rule=spec.state_rule)
    if stateful:
        meta["rvm_export.state_storage"] = opts.state_storage
    for key, value in meta.items():
        mlmodel.user_defined_metadata[key] = value
    if stateful:
        _describe_states(mlmodel, opts.state_storage)
    return meta


def _describe_states(mlmodel, storage: str) -> None:
    desc = mlmodel._spec.description
    for feature in desc.state:
        key = feature.name.split("_")[0]
        half = {"hi": "high float16 half", "lo": "low float16 half (r - hi)"}.get(feature.name.partition("_")[2], "")
        feature.shortDescription = (f"recurrent state {key[1]}{', ' + half if half else ''}: kept by the model "
                                    f"between predictions; zeros in a new state")


def save_package(mlmodel, path: Path) -> None:
    """Write the .mlpackage atomically (temporary sibling, then rename)."""
    with atomic_path(path) as tmp:
        try:
            mlmodel.save(str(tmp))
        except Exception as exc:
            raise ExportFailedError(f"saving {path.name} failed: {exc}") from exc

