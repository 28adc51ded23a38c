"""Running OpenVINO IRs: :class:`OpenVinoRunner` (one compiled model at a stated inference precision) and its
streams (states in preallocated tensors that swap roles, or inside a stateful IR), plus loading an IR from its path
alone (the contract comes from its metadata)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import InputError, MissingRuntimeError, UsageError
from rvm_export.core.metadata import spec_from_metadata
from rvm_export.core.names import FRAME_OUTPUTS, RATIO, SRC, STATE_PAIRS
from rvm_export.core.request import Artifact, RuntimeOptions
from rvm_export.core.runner import Runner, check_frame
from rvm_export.core.spec import IOSpec, Precision

from .export import META_SECTION, default_inference_precision

__all__ = ["OpenVinoRunner", "OpenVinoStream", "load", "load_ir", "read_contract", "compile_config",
           "default_inference_precision", "xml_path", "check_precision_support", "INFERENCE_PRECISIONS",
           "DYNAMIC_BF16"]

INFERENCE_PRECISIONS = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}  # hint -> device capability it needs
DYNAMIC_BF16 = ("openvino bf16 needs a static IR (--downsample-ratio R): the dynamic IR computes the resize "
                "coordinates from the ratio at run time, and bf16 inference rounds them (max error 0.17 against 0.017 "
                "for the static IR at 1080p)")


def xml_path(path: Path) -> Path:
    """The ``.xml`` of an IR given as the file or its artifact directory; raises InputError when it or its ``.bin``
    is missing."""
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


def check_precision_support(core, device: str, inference_precision: str) -> None:
    """Raise UsageError for an unknown inference precision, and MissingRuntimeError (exit 3: this machine lacks it)
    when ``device`` cannot run ``inference_precision`` (bf16 needs AVX512-BF16 or AMX)."""
    if inference_precision not in INFERENCE_PRECISIONS:
        raise UsageError(f"unknown OpenVINO inference precision {inference_precision!r}; "
                         f"choose one of {sorted(INFERENCE_PRECISIONS)}")
    if inference_precision == "f32":
        return
    capabilities = list(core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    if INFERENCE_PRECISIONS[inference_precision] not in capabilities:
        name = core.get_property(device, "FULL_DEVICE_NAME")
        raise MissingRuntimeError(f"{device} ({name}) cannot run inference precision {inference_precision}: its "
                                  f"capabilities are {', '.join(capabilities)}; run it on a device with "
                                  f"{INFERENCE_PRECISIONS[inference_precision]} (AMX or AVX512-BF16 for bf16), or "
                                  f"export --precision fp32 for this one")


class OpenVinoRunner(Runner):
    """One compiled IR. ``run`` takes contract-named arrays; ``stream`` keeps states in the runtime between frames."""

    def __init__(self, xml: Path, spec: IOSpec, options: RuntimeOptions, artifact: Artifact | None = None,
                 precision: Precision = Precision.FP32,
                 config: Mapping[str, Any] | None = None, reshape: Bucket | None = None) -> None:
        import openvino as ov

        self.core = ov.Core()
        self.device = _device_name(options.device)
        if self.device.split(".")[0] not in {d.split(".")[0] for d in self.core.available_devices}:
            raise UsageError(f"OpenVINO device {self.device} is not available here "
                             f"(available: {', '.join(self.core.available_devices)})")
        self.inference_precision = options.inference_precision or default_inference_precision(precision)
        if spec.dynamic and self.inference_precision == "bf16":  # wrong on any device: say this first
            raise UsageError(DYNAMIC_BF16)
        check_precision_support(self.core, self.device, self.inference_precision)
        try:
            self.model = self.core.read_model(str(xml))
        except Exception as exc:
            raise InputError(f"OpenVINO cannot read {xml}: {exc}") from exc
        stateful = spec.internal_states  # r1..r4 are ReadValue/Assign variables inside the IR
        if reshape is not None:
            self.model.reshape(_static_shapes(spec, reshape, stateful))
        self.spec, self.artifact, self.stateful = spec, artifact, stateful
        # int8 + stateful: the CPU plugin may keep a variable as quantised codes (openvino_stateful.py): opaque
        self.states_readable = not (stateful and precision == Precision.INT8)
        self.input_names = [p.get_any_name() for p in self.model.inputs]
        self.output_names = [p.get_any_name() for p in self.model.outputs]
        expected = list(spec.input_names)
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
            from .stateful import VARIABLE_IDS, read_states, write_states

            given = {k: v for k, v in feeds.items() if k in VARIABLE_IDS}
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
            from .stateful import StatefulStream

            return StatefulStream(self, bucket, states and self.states_readable)
        return OpenVinoStream(self, bucket, states)


def _static_shapes(spec: IOSpec, bucket: Bucket, stateful: bool) -> dict[str, list[int]]:
    shapes = {SRC: [1, 3, bucket.height, bucket.width]}
    if not stateful:
        shapes.update({k: list(v) for k, v in spec.concrete_state_shapes(bucket).items()})
    if spec.dynamic:
        shapes[RATIO] = [1]
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
        if RATIO in runner.input_names:
            self._ratio = np.array([bucket.ratio], np.float32)
            self.request.set_tensor(RATIO, ov.Tensor(self._ratio, shared_memory=True))
        self._current = 0
        self.reset()

    def reset(self) -> None:
        for array in self._arrays[0].values():
            array.fill(0.0)
        self._current = 0

    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        check_frame(src, self.bucket)
        frame = np.ascontiguousarray(src, dtype=np.float32)
        request = self.request
        request.set_tensor(SRC, self.ov.Tensor(frame, shared_memory=True))
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
    """Compile an artifact this target wrote (stateful when its flavour says so)."""
    return OpenVinoRunner(xml_path(artifact.path), artifact.spec, options, artifact, artifact.precision)


def read_contract(path: Path) -> dict[str, str]:
    """The rvm-export metadata embedded in an IR (empty for a foreign IR). Raises InputError for a file OpenVINO
    cannot read."""
    import openvino as ov

    try:
        model = ov.Core().read_model(str(xml_path(path)))
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"OpenVINO cannot read {path}: {exc}") from None
    if not model.has_rt_info([META_SECTION]):
        return {}
    section = model.get_rt_info()[META_SECTION]
    return {k: v.astype(str) for k, v in section.items() if k.startswith("rvm_export.") or k == "producer"}


def load_ir(path: Path, options: RuntimeOptions, config: Mapping[str, Any] | None = None,
            reshape: Bucket | None = None) -> OpenVinoRunner:
    """Load an IR written by this target from its path alone (the contract comes from the IR's metadata)."""
    meta = read_contract(path)
    spec = spec_from_metadata(meta)
    if spec is None:
        raise InputError(f"{path} carries no rvm-export I/O contract; only IRs written by rvm-export load this way")
    precision = Precision.parse(meta["rvm_export.precision"])
    return OpenVinoRunner(xml_path(path), spec, options, None, precision, config, reshape)
