"""Running ONNX models on ONNX Runtime: :class:`OnnxRunner` (one session) and :class:`OnnxStream` (states kept as
OrtValues between frames), and the readers of files made elsewhere."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import InputError, MissingRuntimeError, UsageError
from rvm_export.core.metadata import CONTRACT_KEY
from rvm_export.core.names import FRAME_OUTPUTS, OUTPUT_NAMES, RATIO, SRC, STATE_INPUTS
from rvm_export.core.request import Artifact, RuntimeOptions
from rvm_export.core.runner import Runner, check_frame, fed_back
from rvm_export.core.spec import IOSpec

__all__ = ["OnnxRunner", "OnnxStream", "load", "read_contract", "load_foreign", "session_options", "PROVIDERS"]

# device -> execution providers, first choice first
PROVIDERS = {"cpu": ["CPUExecutionProvider"],
             "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
             "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}


def providers_for(device: str) -> list[str]:
    """The execution providers for ``device`` that this onnxruntime has, first choice first.

    Raises UsageError for an unknown device and MissingRuntimeError (with the package to install) when the first
    choice is absent: a CUDA run never silently falls back to the CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device not in PROVIDERS:
        raise UsageError(f"onnx runs on {', '.join(PROVIDERS)}, not {device!r}")
    first = PROVIDERS[device][0]
    if first not in available:
        need = "onnxruntime-gpu" + (" with TensorRT" if device == "tensorrt" else "") + " instead of onnxruntime"
        raise MissingRuntimeError(f"ONNX Runtime's {first} is not available here (this onnxruntime has "
                                  f"{', '.join(available)}): install {need}")
    return [p for p in PROVIDERS[device] if p in available]


def session_options(options: RuntimeOptions):
    """The ``onnxruntime.SessionOptions`` every session of this target uses: ``options.threads`` intra-op threads
    (one inter-op), ORT_ENABLE_ALL (the NCHWc layout the CPU layout edits are made for), spinning as
    ``options.spin_wait`` says, warnings silenced."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    if options.threads:
        so.intra_op_num_threads = options.threads
        so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not options.spin_wait:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    return so


class OnnxRunner(Runner):
    """One ONNX Runtime session over a model that follows ``spec``.

    Raises InputError when ONNX Runtime cannot load the file, and what :func:`providers_for` raises."""

    def __init__(self, path: Path, spec: IOSpec, options: RuntimeOptions, artifact: Artifact | None = None) -> None:
        import onnxruntime as ort

        so = session_options(options)
        providers = providers_for(options.device)
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
        check_frame(src, self.bucket)
        session = self.runner.session
        binding = session.io_binding()
        binding.bind_ortvalue_input(SRC, self.ort.OrtValue.ortvalue_from_numpy(
            np.ascontiguousarray(src, dtype=np.float32), self.device))
        for name, value in self.states.items():
            binding.bind_ortvalue_input(name, value)
        if RATIO in self.runner.input_names:
            binding.bind_ortvalue_input(RATIO, self.ratio)
        for name in self.runner.output_names:
            binding.bind_output(name, self.device)
        session.run_with_iobinding(binding)
        values = dict(zip(self.runner.output_names, binding.get_outputs()))
        self.states = fed_back(values)
        return {name: values[name].numpy() for name in OUTPUT_NAMES if name in values}


def load(artifact: Artifact, options: RuntimeOptions) -> OnnxRunner:
    """An :class:`OnnxRunner` over an artifact this target wrote."""
    if not Path(artifact.path).is_file():
        raise InputError(f"ONNX file not found: {artifact.path}")
    return OnnxRunner(Path(artifact.path), artifact.spec, options, artifact)


def read_contract(path: Path) -> dict[str, Any] | None:
    """The I/O contract embedded by rvm-export, or None for a foreign file. Raises InputError for a file that is not
    an ONNX model. An ``.ort`` file (ORT format) is read through ONNX Runtime, which keeps the metadata."""
    import onnx

    if Path(path).suffix == ".ort":
        return _ort_contract(Path(path))
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError, others OSError/ValueError: all mean "not a model"
        raise InputError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    for prop in graph.metadata_props:
        if prop.key == CONTRACT_KEY:
            try:
                return json.loads(prop.value)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: its embedded rvm-export contract is not valid JSON: {exc}") from None
    return None


def load_foreign(path: Path, options: RuntimeOptions, variant: str = "mobilenetv3") -> OnnxRunner:
    """Load an ONNX file made elsewhere that uses the original I/O names (src, r1i..r4i, downsample_ratio ->
    fgr, pha, r1o..r4o), e.g. the original project's export, to benchmark or check it beside ours."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise InputError(f"ONNX file not found: {path}")
    try:
        probe = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise InputError(f"ONNX Runtime cannot load {path}: {exc}") from None
    inputs = {i.name for i in probe.get_inputs()}
    outputs = {o.name for o in probe.get_outputs()}
    expected_in = {SRC, *STATE_INPUTS}
    if not expected_in <= inputs or not set(FRAME_OUTPUTS) <= outputs:
        raise InputError(f"{path} does not use the RVM I/O names: inputs {sorted(inputs)}, outputs {sorted(outputs)}; "
                         f"expected inputs {sorted(expected_in)} (+ downsample_ratio) and outputs fgr, pha, r1o..r4o")
    contract = read_contract(Path(path))
    if contract:
        variant = contract["variant"]
    spec = IOSpec(variant, "deep_guided_filter")
    return OnnxRunner(Path(path), spec, options)


def _ort_contract(path: Path) -> dict[str, Any] | None:
    import onnxruntime as ort

    try:
        meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as exc:  # ONNX Runtime raises its own Fail/InvalidGraph types
        raise InputError(f"{path} is not a readable ORT-format model ({type(exc).__name__}: {exc})") from None
    value = meta.custom_metadata_map.get(CONTRACT_KEY)
    if value is None:
        return None
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: its embedded rvm-export contract is not valid JSON: {exc}") from None
