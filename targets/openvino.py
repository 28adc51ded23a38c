"""OpenVINO target: IR (``.xml`` + ``.bin``) for Intel/AMD CPUs, iGPUs and NPUs; dynamic, static and stateful forms.

Route: our fp32 ONNX (``targets.onnx.export_graph`` with the refiner tail that OpenVINO's CPU plugin runs fastest:
``phases`` where the upsampling factor is a whole number, else ``planar``; targets/refiner_tail.py) ->
``openvino.convert_model`` -> precision step -> ``save_model``.
The ONNX route is the only one that keeps a runtime ``downsample_ratio`` (the ratio becomes a Resize *scale*, see
targets/contract.py); tracing the module directly freezes it. Using it for the static form too means one graph and
one set of names for both, and it converts in ~3 s where ``convert_model(torch_module)`` took ~12 s (docs/openvino.md).

- dynamic: any H x W and batch, runtime ratio; equals PyTorch at every ratio including 1.0.
- static: resolution and ratio fixed, every shape constant (the ratio is folded, not just the inputs ``reshape``d).
- stateful (``options["stateful"]``, default on): the same model with r1..r4 kept inside as ReadValue/Assign
  variables, zero-initialised from the input's shape; ``InferRequest.reset_state()`` starts a new clip.
- fp32: float32 weights. fp16: float16 weights (the CPU decompresses them and computes in f32; GPUs compute in f16).
- bf16: the fp16 IR, recorded as "run with INFERENCE_PRECISION_HINT=bf16"; the runner compiles it so. Any artifact can
  also be run in bf16 with ``RuntimeOptions(inference_precision="bf16")``; every label states the precision used.
- int8: NNCF post-training quantisation calibrated on rollout frames with the states the fp32 model produces
  (targets/openvino_quant.py); the ratio/size arithmetic, the refiner and the output projection stay float.

On CPUs with AVX512-BF16/AMX, OpenVINO's default inference precision is bf16, even for an fp32 IR (an IR cannot
override it: its ``runtime_options`` rt_info is ignored for this key). The runner always sets the precision.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvm_export.atomic import atomic_path, staging_dir
from rvm_export.errors import ExportFailedError, InputError, MissingRuntimeError, UsageError
from rvm_export.metadata import artifact_metadata
from rvm_export.spec import FRAME_OUTPUTS, OUTPUT_NAMES, STATE_PAIRS, Bucket, IOSpec, Layout, Precision

from .base import Artifact, ExportRequest, RuntimeOptions

__all__ = ["NAME", "PRECISIONS", "RUNTIME_LABEL", "missing", "check_request", "export", "load", "load_ir",
           "read_contract", "OpenVinoRunner", "OpenVinoStream", "compile_config"]

NAME = "openvino"
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
DEFAULT_PRECISION = "fp32"
SUPPORTS_DYNAMIC = True  # one IR for any H x W with a runtime ratio
RUNTIME_LABEL = "OpenVINO Runtime"
OPTIONS = {"stateful": "also write the stateful variant of each IR (bool, default true)"}
INFERENCE_PRECISIONS = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}  # hint -> device capability it needs
META_SECTION = "framework"  # where convert_model puts the ONNX metadata; ours overwrites those keys


def missing() -> str | None:
    try:
        import nncf  # noqa: F401
        import onnx  # noqa: F401
        import openvino  # noqa: F401
    except ImportError as exc:
        return f"{exc.name}: pip install 'rvm-export[openvino]'"
    return None


def _require() -> None:
    if missing():
        raise MissingRuntimeError("the OpenVINO toolchain (openvino, nncf, onnx)", "openvino", "openvino nncf onnx")


DYNAMIC_BF16 = ("openvino bf16 needs a static IR (--downsample-ratio R): the dynamic IR computes the resize "
                "coordinates from the ratio at run time, and bf16 inference rounds them (max error 0.17 against 0.017 "
                "for the static IR at 1080p)")


def supports_dynamic(precision: Precision) -> bool:
    """Whether `--downsample-ratio auto` should build the dynamic IR for this precision."""
    return precision != Precision.BF16


def check_request(request: ExportRequest) -> None:
    if request.precision.value not in PRECISIONS:
        raise UsageError(f"openvino cannot export precision {request.precision.value}; choose one of {PRECISIONS}")
    if request.layout != Layout.NCHW:
        raise UsageError("openvino exports NCHW only (its CPU plugin chooses internal layouts itself); drop --layout")
    if not 13 <= request.opset <= 21:
        raise UsageError(f"openvino converts through ONNX opset 13..21, not {request.opset} (default 17)")
    if not request.buckets:
        raise UsageError("openvino needs at least one --resolution to validate (and, for static IRs, to build)")
    unknown = sorted(set(request.options) - set(OPTIONS))
    if unknown:
        known = "; ".join(f"{k}: {v}" for k, v in OPTIONS.items())
        raise UsageError(f"unknown openvino option(s) {', '.join(unknown)}; known: {known}")
    if not isinstance(request.option("stateful", True), bool):
        raise UsageError(f"openvino option stateful must be true or false, got {request.option('stateful')!r}")
    if request.dynamic and not supports_dynamic(request.precision):
        raise UsageError(DYNAMIC_BF16)
    if request.precision == Precision.INT8 and request.calibration_frames < 4:
        raise UsageError(f"int8 needs at least 4 calibration frames, got {request.calibration_frames}")


def _artifact_stem(spec: IOSpec, precision: Precision, stateful: bool) -> str:
    ref = "" if spec.refiner == "deep_guided_filter" else "_fgf"
    shape = "dynamic" if spec.bucket is None else f"{spec.bucket.width}x{spec.bucket.height}_r{spec.bucket.ratio:g}"
    return f"rvm_{spec.variant}{ref}_{shape}_{precision.value}{'_stateful' if stateful else ''}"


def default_inference_precision(precision: Precision) -> str:
    """The inference precision an artifact's parity is checked with: bf16 for bf16 artifacts, f32 otherwise."""
    return "bf16" if precision == Precision.BF16 else "f32"


def export(model, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    """Per spec (one dynamic, or one static per bucket): the stateless IR and, unless disabled, the stateful IR.

    Each artifact is a directory holding ``<stem>.xml`` and ``<stem>.bin``, written atomically.
    """
    _require()
    check_request(request)
    specs = ([IOSpec(request.variant, request.refiner)] if request.dynamic else
             [IOSpec(request.variant, request.refiner, bucket) for bucket in request.buckets])
    artifacts = []
    for spec in specs:
        artifacts += _export_spec(model, spec, request, Path(out_dir))
    return artifacts


def _export_spec(model, spec: IOSpec, request: ExportRequest, out_dir: Path) -> list[Artifact]:
    import openvino as ov

    from .onnx import export_graph

    with staging_dir(out_dir) as work:
        onnx_path = work / "fp32.onnx"
        onnx_details = export_graph(model, spec, onnx_path, None, Precision.FP32, request.opset,
                                    tail="phases")
        try:
            ov_model = ov.convert_model(str(onnx_path))
        except Exception as exc:
            raise ExportFailedError(f"openvino.convert_model failed on the ONNX intermediate: {exc}") from exc
        _name_contract_io(ov_model, spec)
        details: dict[str, Any] = {"converter": f"openvino.convert_model {ov.get_version()} from ONNX "
                                                f"(opset {request.opset}, {onnx_details['exporter']})",
                                   "io_dtype": "float32", "refiner_tail": onnx_details["refiner_tail"]}
        if request.precision == Precision.INT8:
            from .openvino_quant import quantize

            ov_model, quant_details = quantize(ov_model, model, spec, request)
            details.update(quant_details)
        details.update(_precision_details(request.precision))
        buckets = request.buckets if spec.dynamic else (spec.bucket,)
        flavour = "dynamic" if spec.dynamic else "static"
        artifacts = [_save(ov_model, spec, request, out_dir, flavour, buckets, details)]
        if request.option("stateful", True):
            from .openvino_stateful import make_stateful

            stateful = make_stateful(ov_model.clone(), spec)
            note = ("r1i..r4i / r1o..r4o are not inputs/outputs of this IR: they are ReadValue/Assign variables "
                    "r1..r4 inside it, zeros (from the input's shape) on the first frame and after "
                    "InferRequest.reset_state(); inputs: src" + (", downsample_ratio" if spec.dynamic else "") +
                    "; outputs: fgr, pha")
            sspec = replace(spec, extra={**spec.extra, "stateful": note})
            artifacts.append(_save(stateful, sspec, request, out_dir, "stateful", buckets, {**details, "states": note}))
    return artifacts


def _precision_details(precision: Precision) -> dict[str, Any]:
    weights = {Precision.FP32: "float32", Precision.FP16: "float16 (the CPU decompresses them to f32 at load)",
               Precision.BF16: "float16 (rounded to bf16 by the CPU at load)",
               Precision.INT8: "int8 (per-channel, FakeQuantize) where quantised, float32 elsewhere"}[precision]
    compute = {Precision.FP32: "f32", Precision.FP16: "f32 on CPU (f16 on Intel GPU)", Precision.BF16: "bf16",
               Precision.INT8: "int8 convolutions, other ops at the inference precision (f32 for parity)"}[precision]
    return {"weights": weights, "compute": compute, "inference_precision": default_inference_precision(precision)}


def _name_contract_io(ov_model, spec: IOSpec) -> None:
    """Make every input/output carry exactly its contract name; refuse a graph whose order or names drifted."""
    expected_in = list(spec.input_names)
    got_in = [sorted(p.get_names()) for p in ov_model.inputs]
    if len(got_in) != len(expected_in) or any(n not in names for n, names in zip(expected_in, got_in)):
        raise ExportFailedError(f"OpenVINO model inputs {got_in} do not match the contract {expected_in}")
    got_out = [sorted(o.get_names()) for o in ov_model.outputs]
    if len(got_out) != len(OUTPUT_NAMES) or any(n not in names for n, names in zip(OUTPUT_NAMES, got_out)):
        raise ExportFailedError(f"OpenVINO model outputs {got_out} do not match the contract {list(OUTPUT_NAMES)}")
    for port, name in zip(ov_model.inputs, expected_in):
        port.get_tensor().set_names({name})
        port.get_node().set_friendly_name(name)
    for port, name in zip(ov_model.outputs, OUTPUT_NAMES):
        port.get_tensor().set_names({name})


def _save(ov_model, spec: IOSpec, request: ExportRequest, out_dir: Path, flavour: str,
          buckets: tuple[Bucket, ...], details: dict[str, Any]) -> Artifact:
    import openvino as ov

    stem = _artifact_stem(spec, request.precision, flavour == "stateful")
    details = {**details, "xml": f"{stem}.xml", "flavour": flavour, "openvino": ov.get_version()}
    meta = artifact_metadata(spec, request.precision.value, request.checkpoint_sha256, request.checkpoint_label,
                             opset=request.opset, io_dtype="float32", compute=details["compute"],
                             inference_precision=details["inference_precision"], flavour=flavour,
                             openvino=ov.get_version())
    for key, value in meta.items():
        ov_model.set_rt_info(value, [META_SECTION, key])
    final = out_dir / f"{stem}_openvino"
    compress = request.precision in (Precision.FP16, Precision.BF16)
    with atomic_path(final) as tmp:
        tmp.mkdir()
        try:
            ov.save_model(ov_model, str(tmp / f"{stem}.xml"), compress_to_fp16=compress)
        except Exception as exc:
            raise ExportFailedError(f"openvino.save_model failed for {stem}: {exc}") from exc
    return Artifact(NAME, final, request.precision, spec, flavour, tuple(buckets), details)


# ---------------------------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------------------------
def _xml_path(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        xmls = sorted(path.glob("*.xml"))
        if len(xmls) != 1:
            raise InputError(f"{path} should hold exactly one OpenVINO .xml, found {[p.name for p in xmls]}")
        path = xmls[0]
    if path.suffix != ".xml" or not path.is_file():
        raise InputError(f"OpenVINO IR not found: {path} (give the .xml or the artifact directory)")
    if not path.with_suffix(".bin").is_file():
        raise InputError(f"{path} has no weights file {path.with_suffix('.bin').name} beside it")
    return path


def _device_name(device: str) -> str:
    if device.lower() in ("cuda", "tensorrt"):
        raise UsageError(f"openvino does not run on {device!r}; use cpu, gpu, npu or an OpenVINO device name")
    return device.upper()


def compile_config(inference_precision: str, threads: int | None, extra: Mapping[str, Any] | None = None
                   ) -> dict[str, Any]:
    """The compile properties the runner uses (latency-oriented: one stream, one request in flight)."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": inference_precision, "PERFORMANCE_HINT": "LATENCY",
                              "NUM_STREAMS": "1"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    config.update(extra or {})
    return config


def _check_precision_support(core, device: str, inference_precision: str) -> None:
    if inference_precision not in INFERENCE_PRECISIONS:
        raise UsageError(f"unknown OpenVINO inference precision {inference_precision!r}; "
                         f"choose one of {sorted(INFERENCE_PRECISIONS)}")
    if inference_precision == "f32":
        return
    capabilities = list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    if INFERENCE_PRECISIONS[inference_precision] not in capabilities:
        name = core.get_property(device, "FULL_DEVICE_NAME")
        raise UsageError(f"{device} ({name}) cannot run inference precision {inference_precision}: its "
                         f"capabilities are {', '.join(capabilities)}; use f32")


class OpenVinoRunner:
    """One compiled IR. ``run`` takes contract-named arrays; ``stream`` keeps states in the runtime between frames."""

    def __init__(self, xml: Path, spec: IOSpec, options: RuntimeOptions, artifact: Artifact | None = None,
                 precision: Precision = Precision.FP32, stateful: bool = False,
                 config: Mapping[str, Any] | None = None, reshape: Bucket | None = None) -> None:
        _require()
        import openvino as ov

        self.core = ov.Core()
        self.device = _device_name(options.device)
        if self.device.split(".")[0] not in {d.split(".")[0] for d in self.core.available_devices}:
            raise UsageError(f"OpenVINO device {self.device} is not available here "
                             f"(available: {', '.join(self.core.available_devices)})")
        self.inference_precision = options.inference_precision or default_inference_precision(precision)
        _check_precision_support(self.core, self.device, self.inference_precision)
        if spec.dynamic and self.inference_precision == "bf16":
            raise UsageError(DYNAMIC_BF16)
        try:
            self.model = self.core.read_model(str(xml))
        except Exception as exc:
            raise InputError(f"OpenVINO cannot read {xml}: {exc}") from exc
        if reshape is not None:
            self.model.reshape(_static_shapes(spec, reshape, stateful))
        self.spec, self.artifact, self.stateful = spec, artifact, stateful
        # int8 + stateful: the CPU plugin may keep a variable as quantised codes (openvino_stateful.py): opaque
        self.states_readable = not (stateful and precision == Precision.INT8)
        self.input_names = [p.get_any_name() for p in self.model.inputs]
        self.output_names = [p.get_any_name() for p in self.model.outputs]
        expected = [n for n in spec.input_names if not (stateful and n.startswith("r"))]
        if self.input_names != expected:
            raise InputError(f"{xml} has inputs {self.input_names}; this contract expects {expected}")
        self.config = compile_config(self.inference_precision, options.threads, config)
        try:
            self.compiled = self.core.compile_model(self.model, self.device, self.config)
        except Exception as exc:
            raise InputError(f"OpenVINO cannot compile {xml} for {self.device}: {exc}") from exc
        actual = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if actual != self.inference_precision:  # never report a precision the runtime did not use
            raise UsageError(f"{self.device} runs inference precision {actual}, not the requested "
                             f"{self.inference_precision}")
        threads = f", {options.threads} threads" if options.threads else ""
        self.label = (f"OpenVINO {ov.get_version().split('-')[0]} {self.device}, inference precision "
                      f"{self.inference_precision}{threads}{', stateful' if stateful else ''}")
        self._request = None

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One frame. A stateful IR takes ``r1i..r4i`` here too: they are loaded into its variables first."""
        absent = [name for name in self.input_names if name not in feeds]
        if absent:
            raise InputError(f"missing input(s) {absent}; this IR takes {self.input_names}")
        if self._request is None:
            self._request = self.compiled.create_infer_request()
        request = self._request
        if self.stateful:
            from .openvino_stateful import read_states, write_states

            given = {k: v for k, v in feeds.items() if k.startswith("r")}
            if given and not self.states_readable:
                raise UsageError("an int8 stateful IR keeps its states opaque (the CPU plugin may store them as "
                                 "quantised codes); run it with src only, or use the stateless int8 IR")
            write_states(request, given)
        results = request.infer({k: np.ascontiguousarray(feeds[k], np.float32) for k in self.input_names})
        outputs = {port.get_any_name(): np.array(value) for port, value in results.items()}
        if self.stateful and self.states_readable:
            outputs.update(read_states(request))
        return outputs

    def stream(self, bucket: Bucket, states: bool = True):
        """A zero-copy :class:`~targets.base.Stream`; ``states=False`` skips returning r1o..r4o (for timing)."""
        self.spec.check_bucket(bucket)
        if self.stateful:
            from .openvino_stateful import StatefulStream

            return StatefulStream(self, bucket, states and self.states_readable)
        return OpenVinoStream(self, bucket, states)


def _static_shapes(spec: IOSpec, bucket: Bucket, stateful: bool) -> dict[str, list[int]]:
    shapes = {"src": [1, 3, bucket.height, bucket.width]}
    if not stateful:
        shapes.update({k: list(v) for k, v in spec.concrete_state_shapes(bucket).items()})
    if spec.dynamic:
        shapes["downsample_ratio"] = [1]
    return shapes


class OpenVinoStream:
    """States never leave the runtime's memory: two preallocated sets of state tensors swap roles every frame
    (frame t reads set A and writes set B, frame t+1 reads B and writes A), so nothing is copied and an input is
    never overwritten while it is read. ``src`` is wrapped, not copied. The returned arrays are views that stay
    valid until the next ``step`` (copy them to keep them)."""

    def __init__(self, runner: OpenVinoRunner, bucket: Bucket, states: bool = True) -> None:
        import openvino as ov

        self.ov = ov
        self.runner, self.bucket, self.with_states = runner, bucket, states
        self.request = runner.compiled.create_infer_request()
        shapes = runner.spec.concrete_state_shapes(bucket)
        self._arrays = [{name: np.zeros(shape, np.float32) for name, shape in shapes.items()} for _ in range(2)]
        self._tensors = [{n: ov.Tensor(a, shared_memory=True) for n, a in s.items()} for s in self._arrays]
        if "downsample_ratio" in runner.input_names:
            self._ratio = np.array([bucket.ratio], np.float32)
            self.request.set_tensor("downsample_ratio", ov.Tensor(self._ratio, shared_memory=True))
        self._current = 0
        self.reset()

    def reset(self) -> None:
        for array in self._arrays[0].values():
            array.fill(0.0)
        self._current = 0

    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        frame = np.ascontiguousarray(src, dtype=np.float32)
        request = self.request
        request.set_tensor("src", self.ov.Tensor(frame, shared_memory=True))
        reads, writes = self._tensors[self._current], self._tensors[1 - self._current]
        for out_name, in_name in STATE_PAIRS:
            request.set_tensor(in_name, reads[in_name])
            request.set_tensor(out_name, writes[in_name])
        request.infer()
        written = self._arrays[1 - self._current]
        self._current = 1 - self._current
        outputs = {name: request.get_tensor(name).data for name in FRAME_OUTPUTS}
        if self.with_states:
            outputs.update({out_name: written[in_name] for out_name, in_name in STATE_PAIRS})
        return outputs


def load(artifact: Artifact, options: RuntimeOptions) -> OpenVinoRunner:
    return OpenVinoRunner(_xml_path(artifact.path), artifact.spec, options, artifact, artifact.precision,
                          stateful=artifact.flavour == "stateful")


def read_contract(path: Path) -> dict[str, str]:
    """The rvm-export metadata embedded in an IR (empty for a foreign IR)."""
    _require()
    import openvino as ov

    model = ov.Core().read_model(str(_xml_path(path)))
    if not model.has_rt_info([META_SECTION]):
        return {}
    section = model.get_rt_info()[META_SECTION]
    return {k: v.astype(str) for k, v in section.items() if k.startswith("rvm_export.") or k == "producer"}


def load_ir(path: Path, options: RuntimeOptions, config: Mapping[str, Any] | None = None,
            reshape: Bucket | None = None) -> OpenVinoRunner:
    """Load an IR written by this target from its path alone (the contract comes from the IR's metadata)."""
    import json

    meta = read_contract(path)
    if "rvm_export.io_contract" not in meta:
        raise InputError(f"{path} carries no rvm-export I/O contract; only IRs written by rvm-export load this way")
    contract = json.loads(meta["rvm_export.io_contract"])
    bucket = None
    if contract["resolution"] is not None:
        bucket = Bucket(contract["resolution"][0], contract["resolution"][1], float(contract["downsample_ratio"]))
    spec = IOSpec(contract["variant"], contract["refiner"], bucket)
    precision = Precision(meta["rvm_export.precision"])
    stateful = meta.get("rvm_export.flavour") == "stateful"
    return OpenVinoRunner(_xml_path(path), spec, options, None, precision, stateful, config, reshape)

