"""Runners and streams for CoreML packages.

Linux (and anywhere ``coremltools`` cannot predict): :class:`ExecutorRunner` runs the package's MIL program with
the reference executor; its label says "MIL program check, not the Apple runtime". macOS: :class:`PredictRunner`
runs ``MLModel.predict`` on the compute units asked for (``RuntimeOptions.device``: ``cpu`` = CPU only, ``all``,
``gpu`` = CPU and GPU, ``ane`` = CPU and Neural Engine).

Both take contract-named NCHW arrays with ``src`` in [0, 1]; for an image-typed ``src`` the runner turns the frame
into pixels itself (x255 exactly for the executor; rounded to an 8-bit RGB image for the Apple runtime, so parity on
macOS needs frames already on the 1/255 grid). Image-typed ``fgr``/``pha`` come back as [0, 1] float32 NCHW arrays:
the executor divides the program's pixel values by 255 (no 8-bit rounding: that happens in the Apple runtime, at most
0.5/255 more); on macOS the 8-bit images Core ML returns are divided by 255.
A multifunction package runs the function of the requested bucket.
A stateful stream keeps its states inside (a :class:`StateStore`, or an ``MLState`` on macOS), returns ``fgr``
and ``pha`` only, and ``reset()`` starts from zeros.
"""
from __future__ import annotations

import platform
import sys
from contextlib import nullcontext
from typing import Any, Mapping

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import InputError, MissingRuntimeError, UsageError
from rvm_export.core.names import SRC, STATE_INPUTS
from rvm_export.core.runner import ArrayStream, Runner

from .mil_executor import EXECUTOR_LABEL, UNTIMED_REASON, MilProgram

__all__ = ["ExecutorRunner", "PredictRunner", "can_predict", "function_for", "COMPUTE_UNIT_NAMES"]

# RuntimeOptions.device / the compute_units option -> coremltools ComputeUnit member
COMPUTE_UNIT_NAMES = {"cpu": "CPU_ONLY", "cpu_only": "CPU_ONLY", "all": "ALL", "gpu": "CPU_AND_GPU",
                      "cpu_and_gpu": "CPU_AND_GPU", "ane": "CPU_AND_NE", "npu": "CPU_AND_NE",
                      "cpu_and_ne": "CPU_AND_NE"}


def can_predict() -> bool:
    """Core ML prediction exists on macOS only."""
    return sys.platform == "darwin"


def function_for(artifact, bucket: Bucket) -> str:
    """The package function that serves ``bucket`` (``main`` for a single-function package); UsageError if none."""
    functions = artifact.spec.functions or (("main", artifact.buckets[0]),)
    for name, served in functions:
        if served == bucket:
            return name
    raise UsageError(f"{artifact.name} has no function for {bucket.label}; it serves "
                     f"{', '.join(f'{n} ({b.label})' for n, b in functions)}")


def _pixels(src: np.ndarray) -> np.ndarray:
    return np.asarray(src, dtype=np.float32) * np.float32(255.0)


def _from_pixels(outputs: dict[str, Any], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Image outputs (executor arrays of pixel values, or PIL images from Core ML) -> [0, 1] float32 NCHW."""
    for name in names:
        if name in outputs:
            array = np.asarray(outputs[name], dtype=np.float32)
            if array.ndim == 2:  # grayscale PIL image: H x W
                array = array[None, None]
            elif array.ndim == 3:  # RGB PIL image: H x W x 3
                array = array.transpose(2, 0, 1)[None]
            outputs[name] = array / np.float32(255.0)
    return outputs


def _blas_limit(threads: int | None):
    """Limit NumPy's BLAS threads while the executor runs (threadpoolctl, if installed)."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController(), threads


class ExecutorRunner(Runner):
    """A package's MIL program on the reference executor (every function loaded once)."""

    # The pipeline's benchmark skips runners that say this: the executor's speed says nothing about an iPhone's.
    untimed_reason = UNTIMED_REASON

    def __init__(self, artifact, threads: int | None = 1) -> None:
        self.artifact = artifact
        self.program = MilProgram(artifact.path)
        self.image_input = bool(artifact.details.get("image_input"))
        self.stateful = artifact.flavour.endswith("stateful")
        self.threads = threads
        self._limit = _blas_limit(threads) if threads else None
        fp16 = artifact.details.get("compute_precision") == "float16"
        if threads and self._limit is None:
            blas = "default BLAS threads (threadpoolctl is not installed)"
        else:
            blas = f"{threads} BLAS thread(s)" if threads else "default BLAS threads"
        self.label = (f"{EXECUTOR_LABEL} (rvm-export NumPy MIL executor"
                      f"{', every op output rounded to float16' if fp16 else ', float32'}; {blas})")

    def _threads(self):
        if not self._limit:
            return nullcontext()
        controller, count = self._limit
        return controller.limit(limits=count, user_api="blas")

    def _feeds(self, function, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {k: v for k, v in feeds.items() if k in function.inputs}
        if self.image_input and SRC in out:
            out[SRC] = _pixels(out[SRC])
        return out

    def run(self, feeds: Mapping[str, np.ndarray], function: str | None = None, state=None) -> dict[str, np.ndarray]:
        """One call with contract-named inputs. A stateful function needs ``state`` (``make_state(function)``)."""
        fn = self.program.function(function)
        with self._threads():
            return _from_pixels(fn.run(self._feeds(fn, feeds), state), self.artifact.spec.image_outputs)

    def make_state(self, function: str | None = None):
        return self.program.make_state(function)

    def stream(self, bucket: Bucket) -> "ExecutorStream":
        return ExecutorStream(self, function_for(self.artifact, bucket), bucket)


class ExecutorStream(ArrayStream):
    """Stateless: states stay the executor's arrays (in the function's own dtypes) between frames. Stateful: the
    StateStore keeps them, and ``reset()`` zeroes it."""

    def __init__(self, runner: ExecutorRunner, function: str, bucket: Bucket) -> None:
        self.runner = runner
        self.function = runner.program.function(function)
        self.state = runner.make_state(function) if self.function.states else None
        super().__init__(self._run, runner.artifact.spec, bucket, self._zeros)

    def _zeros(self) -> dict[str, np.ndarray]:
        if self.state is not None:
            self.state.reset()
            return {}
        dtypes = {"fp16": np.float16, "fp32": np.float32}
        return {name: np.zeros(info.shape, dtypes[info.dtype]) for name, info in self.function.inputs.items()
                if name != SRC}

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {**feeds, SRC: np.asarray(feeds[SRC], np.float32)}  # pixels/values in float32; states as they are
        with self.runner._threads():
            outputs = self.function.run(self.runner._feeds(self.function, feeds), self.state)
        return _from_pixels(outputs, self.spec.image_outputs)


class PredictRunner(Runner):
    """The Apple runtime through coremltools (macOS only)."""

    def __init__(self, artifact, compute_units: str) -> None:
        if not can_predict():
            raise MissingRuntimeError("Core ML prediction runs only on macOS; elsewhere parity uses the MIL "
                                      "program check")
        import coremltools as ct

        if compute_units not in COMPUTE_UNIT_NAMES:
            raise UsageError(f"coreml runs on {', '.join(COMPUTE_UNIT_NAMES)}, not {compute_units!r}")
        self.ct = ct
        self.artifact = artifact
        self.units = getattr(ct.ComputeUnit, COMPUTE_UNIT_NAMES[compute_units])
        self.image_input = bool(artifact.details.get("image_input"))
        self.stateful = artifact.flavour.endswith("stateful")
        self._models: dict[str, Any] = {}
        self.label = (f"Core ML runtime (macOS {platform.mac_ver()[0]}, coremltools {ct.__version__} predict, "
                      f"{self.units.name})")

    def model(self, function: str = "main"):
        if function not in self._models:
            kwargs = {} if function == "main" else {"function_name": function}
            try:
                self._models[function] = self.ct.models.MLModel(str(self.artifact.path), compute_units=self.units,
                                                                **kwargs)
            except Exception as exc:
                raise InputError(f"Core ML cannot load {self.artifact.name} ({function}): {exc}") from exc
        return self._models[function]

    def _feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, Any]:
        out = dict(feeds)
        if self.image_input and SRC in out:
            from PIL import Image

            pixels = np.clip(np.rint(_pixels(out[SRC])[0].transpose(1, 2, 0)), 0, 255).astype(np.uint8)
            out[SRC] = Image.fromarray(pixels, "RGB")
        return out

    def run(self, feeds: Mapping[str, np.ndarray], function: str = "main", state=None) -> dict[str, np.ndarray]:
        model = self.model(function)
        wanted = (SRC,) if self.stateful else (SRC, *STATE_INPUTS)
        values = model.predict(self._feeds({k: v for k, v in feeds.items() if k in wanted}),
                               **({"state": state} if state is not None else {}))
        return _from_pixels({k: v if k in self.artifact.spec.image_outputs else np.asarray(v)
                             for k, v in values.items()}, self.artifact.spec.image_outputs)

    def stream(self, bucket: Bucket) -> "PredictStream":
        return PredictStream(self, function_for(self.artifact, bucket), bucket)


class PredictStream(ArrayStream):
    """The Apple runtime frame by frame: states fed back as arrays, or kept in an ``MLState`` (stateful)."""

    def __init__(self, runner: PredictRunner, function: str, bucket: Bucket) -> None:
        self.runner = runner
        self.function = function
        self.model = runner.model(function)
        self.state = None
        super().__init__(self._run, runner.artifact.spec, bucket, self._zeros)

    def _zeros(self) -> dict[str, np.ndarray]:
        if self.runner.stateful:
            self.state = self.model.make_state()  # new Core ML state buffers are zeros
            return {}
        dtype = np.float16 if self.runner.artifact.details.get("io_dtype") == "float16" else np.float32
        return {name: np.zeros(shape, dtype) for name, shape in self.spec.concrete_state_shapes(self.bucket).items()}

    def _run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.runner.run(feeds, self.function, self.state)
        return {k: np.asarray(v) for k, v in outputs.items()}
