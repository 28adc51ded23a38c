"""Running a contract ``.tflite`` on the LiteRT interpreter (XNNPACK), bound by SignatureDef names.

The order of ``get_input_details()`` is not the contract's order (it is shuffled by the converter), so nothing here
uses indices from a list: every tensor is found by its signature name. Inputs are checked against the contract
shapes before a call, because the signature runner would otherwise *resize* a static model to whatever it is fed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import InputError, MissingRuntimeError, OutputMatchError, ShapeError, UsageError
from rvm_export.core.metadata import CONTRACT_KEY, spec_from_metadata
from rvm_export.core.names import OUTPUT_NAMES
from rvm_export.core.request import Artifact, RuntimeOptions
from rvm_export.core.runner import ArrayStream, Runner
from rvm_export.core.spec import IOSpec

__all__ = ["SIGNATURE_KEY", "METADATA_KEY", "TfliteRunner", "bind_signature", "read_metadata", "read_contract",
           "load", "load_path"]

SIGNATURE_KEY = "serving_default"  # the SignatureDef apps bind by (Interpreter.getSignatureRunner on Android)
METADATA_KEY = "rvm_export"  # flatbuffer metadata entry holding the JSON contract and provenance


def read_metadata(path_or_content: Path | str | bytes) -> dict[str, str] | None:
    """The ``rvm_export`` metadata of a .tflite (path or bytes), or None for a foreign file."""
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path_or_content).read_bytes() if isinstance(path_or_content, (str, Path)) else path_or_content
    try:
        model = schema.Model.GetRootAs(data, 0)
        entries = [model.Metadata(i) for i in range(model.MetadataLength())]
        for entry in entries:
            if entry.Name() in (METADATA_KEY.encode(), METADATA_KEY):
                return json.loads(model.Buffers(entry.Buffer()).DataAsNumpy().tobytes())
    except Exception as exc:  # flatbuffers raises struct/index errors on a file that is not a model
        raise InputError(f"not a readable TFLite flatbuffer: {exc}") from exc
    return None


def read_contract(path: Path | str) -> dict[str, Any] | None:
    """The I/O contract embedded by rvm-export (a dict), or None for a foreign file."""
    meta = read_metadata(path)
    return json.loads(meta[CONTRACT_KEY]) if meta else None


def bind_signature(interpreter, spec: IOSpec, where: str):
    """Check ``serving_default`` against the contract (names, shapes, float32); return (runner, inputs, outputs)."""
    signatures = interpreter.get_signature_list()
    if SIGNATURE_KEY not in signatures:
        raise OutputMatchError(f"{where}: no SignatureDef {SIGNATURE_KEY!r} (found {sorted(signatures)}); a model "
                               "without one cannot be bound by name")
    runner = interpreter.get_signature_runner(SIGNATURE_KEY)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    if set(inputs) != set(spec.input_names) or set(outputs) != set(OUTPUT_NAMES):
        raise OutputMatchError(f"{where}: signature has inputs {sorted(inputs)} and outputs {sorted(outputs)}; the "
                               f"contract says {sorted(spec.input_names)} -> {sorted(OUTPUT_NAMES)}")
    expected = {t.name: tuple(t.shape) for t in (*spec.inputs, *spec.outputs)}
    wrong = [f"{name} {[int(v) for v in d['shape']]} {np.dtype(d['dtype']).name} (contract {list(expected[name])})"
             for name, d in {**inputs, **outputs}.items()
             if tuple(int(v) for v in d["shape"]) != expected[name] or np.dtype(d["dtype"]) != np.float32]
    if wrong:
        raise ShapeError(f"{where}: differs from the {spec.layout.value} float32 contract: " + "; ".join(wrong))
    return runner, inputs, outputs


class TfliteRunner(Runner):
    """One interpreter per artifact; XNNPACK is the interpreter's default CPU delegate.

    Raises MissingRuntimeError without ai-edge-litert, UsageError for a device other than the CPU, InputError for a
    file the interpreter cannot load, OutputMatchError/ShapeError when its signature breaks the contract."""

    def __init__(self, path: Path, spec: IOSpec, options: RuntimeOptions, artifact: Artifact | None = None) -> None:
        try:
            import ai_edge_litert
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise MissingRuntimeError("the LiteRT interpreter (ai-edge-litert)", "tflite", "ai-edge-litert") from None
        if options.device != "cpu":
            raise UsageError(f"tflite runs on the CPU here (LiteRT interpreter + XNNPACK), not {options.device!r}: "
                             "the GPU/NNAPI delegates exist on Android only")
        if spec.bucket is None:
            raise UsageError("a .tflite is static: its spec needs a bucket")
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=options.threads)
        except (ValueError, RuntimeError) as exc:
            raise InputError(f"the LiteRT interpreter cannot load {path}: {exc}") from exc
        self.spec, self.artifact, self.path = spec, artifact, Path(path)
        self.signature, self.inputs, self.outputs = bind_signature(self.interpreter, spec, str(path))
        self.input_names = tuple(spec.input_names)
        self._expected = {t.name: tuple(t.shape) for t in spec.inputs}
        threads = f", {options.threads} threads" if options.threads else ", default threads"
        self.label = f"LiteRT {ai_edge_litert.__version__} interpreter, XNNPACK{threads}"

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> None:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"missing input(s) {', '.join(missing)} for {self.path.name}")
        for name in self.input_names:
            value = feeds[name]
            if tuple(value.shape) != self._expected[name]:
                raise InputError(f"{name} has shape {list(value.shape)} but {self.path.name} is fixed at "
                                 f"{list(self._expected[name])} ({self.spec.bucket.label}, {self.spec.layout.value})")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.check_feeds(feeds)
        values = {n: np.ascontiguousarray(feeds[n], dtype=np.float32) for n in self.input_names}
        return dict(self.signature(**values))

    def stream(self, bucket: Bucket) -> ArrayStream:
        """States stay in the model's layout and dtype between frames: ``rKo`` goes back in as ``rKi`` unchanged
        (never transposed, never cast). The Python signature runner copies tensors in and out (LiteRT's Python API
        cannot alias an output buffer to an input). ``step`` takes and returns NCHW like every stream: for an NHWC
        model the frame and the returned values are converted for the caller only."""
        return ArrayStream(self.run, self.spec, bucket, lambda: self.spec.zero_states(bucket, dtype="float32"))


def load(artifact: Artifact, options: RuntimeOptions) -> TfliteRunner:
    """A LiteRT interpreter over an artifact this target wrote."""
    return TfliteRunner(artifact.path, artifact.spec, options, artifact)


def load_path(path: Path, options: RuntimeOptions) -> TfliteRunner:
    """Load a .tflite written by rvm-export without its manifest: the contract comes from the embedded metadata."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"TFLite file not found: {path}")
    meta = read_metadata(path)
    spec = spec_from_metadata(meta) if meta else None
    if spec is None:
        raise InputError(f"{path} carries no rvm_export metadata; it was not written by rvm-export")
    return TfliteRunner(path, spec, options)
