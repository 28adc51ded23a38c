"""ONNX target: dynamic and static graphs, fp32 / fp16 / int8, run on ONNX Runtime.

- dynamic: any H x W and batch, runtime ``downsample_ratio`` input; equals PyTorch at every ratio including 1.0
  (see targets/contract.py for the refiner gate). Exported with the TorchScript-based exporter, which keeps the
  ratio as a graph input (the dynamo exporter cannot, see docs/onnx.md).
- static: resolution and ratio fixed, no dynamic axes; after simplification no shape arithmetic is left
  (no Shape node: what TensorRT and fixed-shape runtimes want).
- fp16: weights and activations in half precision with float32 I/O (``Cast`` at the boundary), so fed-back states
  stay float32; the ratio/size arithmetic stays float32 (a half-precision ratio would change floor(H*r)).
- int8: ONNX Runtime static quantisation (QDQ, per-channel weights) of Conv only, calibrated on frames of the
  generated scene with the states the fp32 PyTorch model really produces; resize/ratio arithmetic stays float.
"""
from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvm_export.atomic import atomic_path, staging_dir
from rvm_export.errors import ExportFailedError, InputError, MissingRuntimeError, UsageError
from rvm_export.metadata import artifact_metadata
from rvm_export.spec import OUTPUT_NAMES, STATE_PAIRS, Bucket, IOSpec, Layout, Precision

from .base import Artifact, ExportRequest, RuntimeOptions
from .contract import tail_description
from .resample import describe_downsample

__all__ = ["NAME", "PRECISIONS", "RUNTIME_LABEL", "missing", "check_request", "export", "load", "load_foreign",
           "export_graph", "OnnxRunner"]

NAME = "onnx"
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PRECISION = "fp32"
SUPPORTS_DYNAMIC = True  # `--downsample-ratio auto` gives the dynamic graph
RUNTIME_LABEL = "ONNX Runtime"
DEFAULT_OPSET = 17  # Resize-with-scales and every op we emit exist since 13; 17 is what TensorRT 8.6+ and ORT take
log = logging.getLogger(__name__)


def missing() -> str | None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxsim  # noqa: F401
    except ImportError as exc:
        return f"{exc.name}: pip install 'rvm-export[onnx]'"
    return None


def _require() -> None:
    problem = missing()
    if problem:
        raise MissingRuntimeError("the ONNX toolchain (onnx, onnxruntime, onnxsim)", "onnx", "onnx onnxruntime onnxsim")


def check_request(request: ExportRequest) -> None:
    if str(request.precision) not in PRECISIONS and request.precision not in PRECISIONS:
        raise UsageError(f"onnx cannot export precision {request.precision.value}; choose one of {PRECISIONS}")
    if request.layout != Layout.NCHW:
        raise UsageError("onnx exports NCHW only (the layout ONNX Runtime and TensorRT expect); drop --layout")
    if not 13 <= request.opset <= 21:
        raise UsageError(f"onnx opset {request.opset} is not supported; choose 13..21 (default {DEFAULT_OPSET})")
    if not request.buckets:
        raise UsageError("onnx needs at least one --resolution to validate (and, for static models, to build)")


def _artifact_name(spec: IOSpec, precision: Precision) -> str:
    ref = "" if spec.refiner == "deep_guided_filter" else "_fgf"
    shape = "dynamic" if spec.bucket is None else f"{spec.bucket.width}x{spec.bucket.height}_r{spec.bucket.ratio:g}"
    return f"rvm_{spec.variant}{ref}_{shape}_{precision.value}.onnx"


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """Write one dynamic model, or one static model per bucket, into ``out_dir``."""
    _require()
    specs = ([IOSpec(request.variant, request.refiner)] if request.dynamic else
             [IOSpec(request.variant, request.refiner, bucket) for bucket in request.buckets])
    artifacts = []
    for spec in specs:
        path = Path(out_dir) / _artifact_name(spec, request.precision)
        details = export_graph(model, spec, path, request)
        buckets = request.buckets if spec.dynamic else (spec.bucket,)
        artifacts.append(Artifact(NAME, path, request.precision, spec, "dynamic" if spec.dynamic else "static",
                                  tuple(buckets), details))
    return artifacts


def export_graph(model, spec: IOSpec, path: Path, request: ExportRequest | None = None,
                 precision: Precision = Precision.FP32, opset: int = DEFAULT_OPSET,
                 tail: str = "grouped") -> dict[str, Any]:
    """Trace ``model`` behind the contract ``spec``, simplify, convert precision, embed metadata, save atomically.

    Other targets call this for an fp32 ONNX intermediate (``request=None``). ``tail``: the refiner tail's layout
    (targets/refiner_tail.py); ONNX Runtime runs the grouped one fastest, OpenVINO asks for phases.
    Returns the details for the manifest.
    """
    _require()
    import onnx

    if request is not None:
        precision, opset = request.precision, request.opset
    with staging_dir(path.parent) as work:
        raw = work / "traced.onnx"
        _trace(model, spec, raw, opset, tail)
        graph = _simplify(onnx.load(str(raw)), spec)
        _declare_shapes(graph, spec)
        details: dict[str, Any] = {"opset": opset, "exporter": "torch.onnx (TorchScript-based, dynamo=False)",
                                   "simplifier": "onnxsim", "nodes": len(graph.graph.node),
                                   "io_dtype": "float32", "downsample": (
                                       describe_downsample(spec.bucket) if spec.bucket else
                                       "PyTorch's taps computed from the ratio input (Range, Mul, Gather)"),
                                   "refiner_tail": tail_description(spec, tail)}
        if precision == Precision.FP16:
            graph = _to_fp16(graph)
            details["compute"] = "float16 (ratio/size arithmetic float32)"
        elif precision == Precision.INT8:
            graph = _quantize_int8(model, spec, graph, work, request)
            details["compute"] = ("int8 QDQ Conv (per-channel weights); output projection, refiner and all "
                                  "non-Conv ops float32")
        else:
            details["compute"] = "float32"
        shape_ops = sum(node.op_type == "Shape" for node in graph.graph.node)
        if not spec.dynamic and shape_ops:
            raise ExportFailedError(f"static ONNX still has {shape_ops} Shape node(s) after simplification")
        details["shape_ops"] = shape_ops
        meta = artifact_metadata(spec, precision.value,
                                 request.checkpoint_sha256 if request else None,
                                 request.checkpoint_label if request else "intermediate", opset=opset,
                                 io_dtype="float32", compute=details["compute"])
        del graph.metadata_props[:]
        for key, value in meta.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, value
        graph.producer_name = "rvm-export"
        onnx.checker.check_model(graph)
        with atomic_path(path) as tmp:
            onnx.save(graph, str(tmp))
    return details


def _trace(model, spec: IOSpec, out: Path, opset: int, tail: str) -> None:
    import torch

    from .contract import contract_module, example_inputs

    wrapper = contract_module(model, spec, tail=tail).eval()
    bucket = spec.bucket or Bucket(256, 144, 0.5)  # tracing example for the dynamic graph: exercises the refiner
    inputs = example_inputs(spec, bucket)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(wrapper, inputs, str(out), input_names=list(spec.input_names),
                              output_names=list(OUTPUT_NAMES), dynamic_axes=spec.dynamic_axes or None,
                              opset_version=opset, do_constant_folding=True, dynamo=False)
        except Exception as exc:  # the exporter raises many types; keep the message, name the stage
            raise ExportFailedError(f"torch.onnx.export failed for {spec.bucket.label if spec.bucket else 'dynamic'}"
                                    f": {exc}") from exc


def _simplify(graph, spec: IOSpec):
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(graph)
    except Exception as exc:
        raise ExportFailedError(f"onnxsim failed: {exc}") from exc
    if not ok:
        raise ExportFailedError("onnxsim could not validate the simplified graph")
    return simplified


def _declare_shapes(graph, spec: IOSpec) -> None:
    """Write the contract's shapes on the graph inputs and outputs: fixed sizes as values, dynamic axes under their
    per-tensor names (the exporter may leave a channel count it could not infer as an anonymous dimension)."""
    declared = {t.name: t.shape for t in (*spec.inputs, *spec.outputs)}
    for value in (*graph.graph.input, *graph.graph.output):
        shape = declared.get(value.name)
        if shape is None:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ExportFailedError(f"{value.name}: the graph has rank {len(dims)}, the contract {len(shape)}")
        for dim, want in zip(dims, shape):
            if isinstance(want, str):
                dim.dim_param = want
            else:
                dim.dim_value = want


def _ratio_path_nodes(graph) -> list[str]:
    """Names of the nodes that compute from ``downsample_ratio`` (scales, the ratio==1 test), which must stay
    float32: walk forward from the input, stopping after a Resize and before a Where (bool condition in)."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    keep, frontier = [], ["downsample_ratio"]
    seen: set[str] = set()
    while frontier:
        value = frontier.pop()
        for node in consumers.get(value, []):
            if node.name in seen or node.op_type == "Where":
                continue
            seen.add(node.name)
            keep.append(node.name)
            if node.op_type != "Resize":
                frontier.extend(node.output)
    return keep


def _to_fp16(graph):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    for i, node in enumerate(graph.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
    blocked = _ratio_path_nodes(graph)
    converted = convert_float_to_float16(graph, keep_io_types=True, node_block_list=blocked)
    _toposort(converted.graph)  # the converter appends its Cast nodes at the end
    return converted


def _toposort(graph) -> None:
    """Reorder ``graph.node`` so every node comes after the producers of its inputs (Kahn's algorithm)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered = []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ExportFailedError("ONNX graph has a cycle or an undefined input after fp16 conversion")
        for node in ready:
            ordered.append(node)
            available.update(node.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [type(n)() for n in ordered]
    for copy, node in zip(copies, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)


# Convs kept in float in int8 models: the output projection and the refiner write alpha and foreground directly,
# where one 8-bit step of their activation range is a visible error (pha MAD 0.026 -> 0.007 on the golden model);
# together they are well under 1 % of the multiply-adds.
FLOAT_SCOPES = ("/project_mat/", "/refiner/")


class _FeedReader:
    """onnxruntime CalibrationDataReader over precomputed rollout feeds."""

    def __init__(self, feeds: list[dict[str, np.ndarray]], names: tuple[str, ...]) -> None:
        self._items = iter([{k: v for k, v in f.items() if k in names} for f in feeds])

    def get_next(self):
        return next(self._items, None)


def _quantize_int8(model, spec: IOSpec, graph, work: Path, request: ExportRequest | None):
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from rvm_export.reference import calibration_feeds
    from rvm_export.scene import MovingScene

    buckets = (spec.bucket,) if spec.bucket else (request.buckets if request else (Bucket(512, 288, 1.0),))
    frames_per_bucket = max(4, (request.calibration_frames if request else 16) // len(buckets))
    feeds: list[dict[str, np.ndarray]] = []
    for i, bucket in enumerate(buckets):
        scene = MovingScene(bucket.width, bucket.height, frames_per_bucket, seed=1000 + i)
        feeds += calibration_feeds(model, bucket, scene)
    fp32 = work / "fp32.onnx"
    pre = work / "pre.onnx"
    out = work / "int8.onnx"
    onnx.save(graph, str(fp32))
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    float_heads = [n.name for n in onnx.load(str(pre)).graph.node
                   if n.op_type == "Conv" and any(k in n.name for k in FLOAT_SCOPES)]
    quantize_static(str(pre), str(out), _FeedReader(feeds, spec.input_names), quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                    nodes_to_exclude=float_heads)
    return onnx.load(str(out))


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------
def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = {"cpu": ["CPUExecutionProvider"],
              "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
              "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}
    if device not in wanted:
        raise UsageError(f"onnx runs on cpu, cuda or tensorrt, not {device!r}")
    first = wanted[device][0]
    if first not in available:
        need = "onnxruntime-gpu" + (" with TensorRT" if device == "tensorrt" else "") + " instead of onnxruntime"
        raise MissingRuntimeError(f"ONNX Runtime's {first} is not available here (this onnxruntime has "
                                  f"{', '.join(available)}): install {need}")
    return [p for p in wanted[device] if p in available]


class OnnxRunner:
    def __init__(self, path: Path, spec: IOSpec, options: RuntimeOptions, artifact: Artifact | None = None) -> None:
        _require()
        import onnxruntime as ort

        so = ort.SessionOptions()
        if options.threads:
            so.intra_op_num_threads = options.threads
            so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        providers = _providers(options.device)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:
            raise InputError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self.spec = spec
        self.artifact = artifact
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.device = options.device
        threads = f", {options.threads} threads" if options.threads else ""
        self.label = f"ONNX Runtime {ort.__version__} {self.session.get_providers()[0]}{threads}"

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = self.session.run(None, {k: v for k, v in feeds.items() if k in self.input_names})
        return dict(zip(self.output_names, values))

    def stream(self, bucket: Bucket) -> "OnnxStream":
        return OnnxStream(self, bucket)


class OnnxStream:
    """States stay OrtValues between frames: each output state is bound as the next frame's input."""

    def __init__(self, runner: OnnxRunner, bucket: Bucket) -> None:
        import onnxruntime as ort

        runner.spec.check_bucket(bucket)
        self.ort = ort
        self.runner = runner
        self.bucket = bucket
        self.device = "cuda" if runner.device in ("cuda", "tensorrt") else "cpu"
        self.ratio = ort.OrtValue.ortvalue_from_numpy(np.array([bucket.ratio], np.float32))
        self.states: dict[str, Any] = {}
        self.reset()

    def reset(self) -> None:
        zeros = self.runner.spec.zero_states(self.bucket, dtype="float32")
        self.states = {k: self.ort.OrtValue.ortvalue_from_numpy(v, self.device) for k, v in zeros.items()}

    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        session = self.runner.session
        binding = session.io_binding()
        binding.bind_ortvalue_input("src", self.ort.OrtValue.ortvalue_from_numpy(
            np.ascontiguousarray(src, dtype=np.float32), self.device))
        for name, value in self.states.items():
            binding.bind_ortvalue_input(name, value)
        if "downsample_ratio" in self.runner.input_names:
            binding.bind_ortvalue_input("downsample_ratio", self.ratio)
        for name in self.runner.output_names:
            binding.bind_output(name, self.device)
        session.run_with_iobinding(binding)
        values = dict(zip(self.runner.output_names, binding.get_outputs()))
        self.states = {inp: values[out] for out, inp in STATE_PAIRS if out in values}
        return {name: values[name].numpy() for name in ("fgr", "pha", "r1o", "r2o", "r3o", "r4o") if name in values}


def load(artifact: Artifact, options: RuntimeOptions) -> OnnxRunner:
    return OnnxRunner(artifact.path, artifact.spec, options, artifact)


def read_contract(path: Path) -> dict[str, Any] | None:
    """The I/O contract embedded by rvm-export, or None for a foreign file."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False)
    for prop in graph.metadata_props:
        if prop.key == "rvm_export.io_contract":
            return json.loads(prop.value)
    return None


def load_foreign(path: Path, options: RuntimeOptions, variant: str = "mobilenetv3") -> "OnnxRunner":
    """Load an ONNX file made elsewhere that uses the original I/O names (src, r1i..r4i, downsample_ratio ->
    fgr, pha, r1o..r4o), e.g. the original project's export, to benchmark or check it beside ours."""
    _require()
    import onnxruntime as ort

    if not Path(path).is_file():
        raise InputError(f"ONNX file not found: {path}")
    probe = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in probe.get_inputs()}
    outputs = {o.name for o in probe.get_outputs()}
    expected_in = {"src", "r1i", "r2i", "r3i", "r4i"}
    if not expected_in <= inputs or not {"fgr", "pha"} <= outputs:
        raise InputError(f"{path} does not use the RVM I/O names: inputs {sorted(inputs)}, outputs {sorted(outputs)}; "
                         f"expected inputs {sorted(expected_in)} (+ downsample_ratio) and outputs fgr, pha, r1o..r4o")
    contract = read_contract(Path(path))
    if contract:
        variant = contract["variant"]
    spec = IOSpec(variant, "deep_guided_filter")
    return OnnxRunner(Path(path), spec, options)


