"""Reference executor: load a saved .mlpackage back from disk and run its MIL program with NumPy.

Core ML prediction does not run on Linux. This executor reads the package's own specification and weight file
(``coremltools.converters.mil.frontend.milproto.load``: the program exactly as written to disk, every function of a
multifunction package, states included) and interprets it op by op. fp32 programs compute in float32; in fp16
programs every op's output is rounded to float16 (inputs of the op are the rounded values, accumulation inside an
op is float32), which is what "half-precision intermediates" means here. Stateful programs read and write a
:class:`StateStore` of float16 buffers, zeros when created, exactly as ``MLModel.make_state()``.

It checks the converted program (graph, constants, resize modes, casts, state updates), not Apple's kernels or
its compute-unit choices: results must be labelled "MIL program check, not the Apple runtime". An op the program
uses and the executor lacks is refused when the program is loaded, naming the op (:class:`UnsupportedOpError`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from rvm_export.core.errors import InputError

from .mil_ops import EXACT_OPS, KERNELS, PREPARE, UnsupportedOpError
from .multifunction import package_model_file

__all__ = ["MilProgram", "MilFunction", "StateStore", "UnsupportedOpError", "FeatureInfo", "EXECUTOR_LABEL"]

EXECUTOR_LABEL = "MIL program check, not the Apple runtime"
# Benchmarks skip the executor (rvm-export bench, the export's benchmark): its speed says nothing about Core ML's.
UNTIMED_REASON = "the MIL program check runs NumPy on this machine, not Core ML; time the package on macOS/iOS"
_STATE_OPS = ("read_state", "coreml_update_state")
_FLOAT_KINDS = {"fp16": np.float16, "fp32": np.float32}
_FP16_MIN_NORMAL = np.float32(2.0 ** -14)
_SUBNORMAL_MAGIC = np.float32(0.75)  # in [0.5, 1) float32 steps are 2**-24, float16's subnormal spacing


@dataclass(frozen=True)
class FeatureInfo:
    """One input, output or state of a MIL function as its model description declares it."""
    name: str  # feature name in the model description
    kind: str  # "tensor" | "image" | "state"
    shape: tuple[int, ...]  # fixed shape
    dtype: str  # "fp32" | "fp16" (an image is fed as fp32 pixel values 0..255)
    description: str = ""  # the model's shortDescription


@dataclass
class _Step:
    op_type: str
    name: str
    kernel: Any
    consts: dict[str, Any]
    refs: dict[str, Any]  # param -> var name, or list of var names
    outputs: list[tuple[str, str]]  # (var name, MIL dtype string)
    exact: bool = False  # output values are already fp16-exact (see mil_ops.EXACT_OPS)
    free: list[str] = field(default_factory=list)  # var names last used by this step


class StateStore:
    """The float16 state buffers of one stateful function (what ``make_state()`` returns on macOS)."""

    def __init__(self, states: Mapping[str, FeatureInfo]) -> None:
        self.infos = dict(states)
        self.buffers = {n: np.zeros(i.shape, np.float16) for n, i in self.infos.items()}

    def reset(self) -> None:
        for buffer in self.buffers.values():
            buffer[...] = 0


def _type_string(var) -> str:
    from coremltools.converters.mil.mil import types

    dtype = var.dtype
    return types.builtin_to_string(dtype) if dtype is not None else "unknown"


class MilFunction:
    """One function of the program, compiled into a flat list of steps."""

    def __init__(self, name: str, function, features: Mapping[str, list[FeatureInfo]]) -> None:
        from coremltools.converters.mil.mil import types

        self.name = name
        self.inputs = {f.name: f for f in features["input"]}
        self.outputs = {f.name: f for f in features["output"]}
        self.states = {f.name: f for f in features["state"]}
        self.output_vars = [v.name for v in function.outputs]
        self.input_vars = {n: v for n, v in function.inputs.items() if not types.is_state(v.sym_type)}
        self.state_vars = {n for n, v in function.inputs.items() if types.is_state(v.sym_type)}
        self._scratch = np.empty(0, np.float16)  # reused buffer for in-place float16 rounding
        self.steps: list[_Step] = []
        self.op_counts: dict[str, int] = {}
        for op in function.operations:
            self.op_counts[op.op_type] = self.op_counts.get(op.op_type, 0) + 1
            if op.op_type == "const":
                continue
            self.steps.append(self._compile(op))
        self._plan_frees()

    def _compile(self, op) -> _Step:
        if op.blocks:
            raise UnsupportedOpError(f"op {op.op_type!r} ({op.name}) has nested blocks (control flow), which the "
                                     f"reference executor does not implement")
        if op.op_type not in KERNELS and op.op_type not in _STATE_OPS:
            raise UnsupportedOpError(
                f"the MIL program uses op {op.op_type!r} (function {self.name}, op {op.name}), which the reference "
                f"executor does not implement, so this program cannot be checked on Linux. Implemented: "
                f"{', '.join(sorted([*KERNELS, *_STATE_OPS]))}")
        consts: dict[str, Any] = {}
        refs: dict[str, Any] = {}
        for param, value in op.inputs.items():
            if isinstance(value, (list, tuple)):
                if all(_is_const(v) for v in value):
                    consts[param] = [_const_value(v) for v in value]
                else:
                    refs[param] = [v.name for v in value]
                    if any(_is_const(v) for v in value):
                        consts[param + "#const"] = {i: _const_value(v) for i, v in enumerate(value) if _is_const(v)}
            elif _is_const(value):
                consts[param] = _const_value(value)
            else:
                refs[param] = value.name
        if op.op_type in PREPARE:
            consts = PREPARE[op.op_type](consts)
        outputs = [(v.name, _type_string(v)) for v in op.outputs]
        kernel = KERNELS.get(op.op_type)
        # An exact op on fp16 inputs yields fp16 values; its fp32 outputs still pass through float32 conversion.
        exact = op.op_type in EXACT_OPS and all(dtype == "fp16" for _, dtype in outputs)
        return _Step(op.op_type, op.name, kernel, consts, refs, outputs, exact)

    def _plan_frees(self) -> None:
        last: dict[str, int] = {}
        for index, step in enumerate(self.steps):
            for ref in step.refs.values():
                for name in (ref if isinstance(ref, list) else [ref]):
                    last[name] = index
        keep = set(self.output_vars) | self.state_vars
        for name, index in last.items():
            if name not in keep:
                self.steps[index].free.append(name)

    def _rounder(self, value: Any, dtype: str) -> Any:
        """float32 array of ``value``; for fp16 outputs rounded to float16 (round to nearest even) in place."""
        if dtype == "fp32":
            return np.asarray(value, dtype=np.float32)
        if dtype != "fp16":
            return value
        array = np.asarray(value, dtype=np.float32)
        if not array.flags.writeable or not array.flags.c_contiguous:
            array = np.array(array, dtype=np.float32, order="C")
        if self._scratch.size < array.size:
            self._scratch = np.empty(array.size, np.float16)
        half = self._scratch[:array.size].reshape(array.shape)
        # NumPy converts values in float16's subnormal range (|x| < 2**-14) about 25x slower than normal ones, and
        # activations hold many. Those are rounded to the subnormal grid (multiples of 2**-24, ties to even) by
        # adding and removing 0.75, whose float32 spacing is exactly 2**-24; the rest goes through float16.
        tiny = np.abs(array) < _FP16_MIN_NORMAL
        if tiny.any():
            grid = array + _SUBNORMAL_MAGIC
            grid -= _SUBNORMAL_MAGIC
            np.copyto(array, np.float32(0.0), where=tiny)
        with np.errstate(over="ignore"):  # beyond 65504 float16 is inf, as Core ML's would be
            np.copyto(half, array, casting="same_kind")
        np.copyto(array, half)
        if tiny.any():
            np.copyto(array, grid, where=tiny)
        return array

    # -- running -------------------------------------------------------------------------------------------------
    def run(self, feeds: Mapping[str, np.ndarray], state: StateStore | None = None) -> dict[str, np.ndarray]:
        if self.states and state is None:
            raise InputError(f"function {self.name} is stateful: pass a StateStore (make_state())")
        env: dict[str, Any] = {}
        for name, info in self.inputs.items():
            if name not in feeds:
                raise InputError(f"input {name!r} is missing; function {self.name} takes "
                                 f"{', '.join(self.inputs)}")
            value = np.asarray(feeds[name])
            if tuple(value.shape) != info.shape:
                raise InputError(f"input {name} has shape {list(value.shape)}; function {self.name} needs "
                                 f"{list(info.shape)}")
            env[name] = _round(value, info.dtype)
        for step in self.steps:
            args = dict(step.consts)
            for param, ref in step.refs.items():
                if isinstance(ref, list):
                    fixed = args.pop(param + "#const", {})
                    args[param] = [fixed[i] if i in fixed else env[r] for i, r in enumerate(ref)]
                else:
                    args[param] = ref if ref in self.state_vars else env[ref]
            if step.op_type == "read_state":
                result: Any = state.buffers[args["input"]].astype(np.float32)
            elif step.op_type == "coreml_update_state":
                buffer = state.buffers[args["state"]]
                buffer[...] = np.asarray(args["value"]).astype(np.float16)
                result = buffer.astype(np.float32)
            else:
                result = step.kernel(**args)
            results = result if isinstance(result, tuple) else (result,)
            for (name, dtype), value in zip(step.outputs, results):
                env[name] = value if step.exact else self._rounder(value, dtype)
            for name in step.free:
                env.pop(name, None)
        return {name: env[var].astype(_FLOAT_KINDS.get(self.outputs[name].dtype, np.float32), copy=False)
                for name, var in zip(self.outputs, self.output_vars)}


def _is_const(var) -> bool:
    return var.op is not None and var.op.op_type == "const"


def _const_value(var) -> Any:
    value = var.val
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return value.astype(np.float32)  # exact; the program's fp16 weights stay fp16-valued
    if isinstance(value, np.floating):
        return np.float32(value)
    return value


def _round(value: Any, dtype: str) -> Any:
    if dtype == "fp16":
        return np.asarray(value, dtype=np.float32).astype(np.float16).astype(np.float32)
    if dtype == "fp32":
        return np.asarray(value, dtype=np.float32)
    return value


def _features(description) -> dict[str, list[FeatureInfo]]:
    from coremltools.proto import FeatureTypes_pb2

    names = FeatureTypes_pb2.ArrayFeatureType.ArrayDataType
    out: dict[str, list[FeatureInfo]] = {"input": [], "output": [], "state": []}
    for group in ("input", "output", "state"):
        for feature in getattr(description, group):
            kind = feature.type.WhichOneof("Type")
            if kind == "imageType":
                image = feature.type.imageType
                channels = 1 if image.colorSpace == FeatureTypes_pb2.ImageFeatureType.GRAYSCALE else 3
                info = FeatureInfo(feature.name, "image", (1, channels, image.height, image.width), "fp32",
                                   feature.shortDescription)
            else:
                array = feature.type.stateType.arrayType if kind == "stateType" else feature.type.multiArrayType
                name = names.Name(array.dataType)
                dtype = {"FLOAT16": "fp16", "FLOAT32": "fp32"}.get(name, name)
                info = FeatureInfo(feature.name, "state" if kind == "stateType" else "tensor",
                                   tuple(int(d) for d in array.shape), dtype, feature.shortDescription)
            out[group].append(info)
    return out


class MilProgram:
    """Every function of a saved package, ready to run."""

    def __init__(self, path: Path) -> None:
        from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
        from coremltools.proto import Model_pb2

        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(f"not an .mlpackage directory: {self.path}")
        spec = Model_pb2.Model()
        spec.ParseFromString(package_model_file(self.path).read_bytes())
        if spec.WhichOneof("Type") != "mlProgram":
            raise InputError(f"{self.path.name} holds a {spec.WhichOneof('Type')} model, not an mlprogram")
        self.spec_version = spec.specificationVersion
        self.metadata = dict(spec.description.metadata.userDefined)
        weights = self.path / "Data" / "com.apple.CoreML" / "weights"
        program = milproto_load(spec, specification_version=spec.specificationVersion, file_weights_dir=str(weights))
        description = spec.description
        if description.functions:
            per_function = {f.name: _features(f) for f in description.functions}
            self.default_function = description.defaultFunctionName
        else:
            per_function = {"main": _features(description)}
            self.default_function = "main"
        self.functions = {name: MilFunction(name, program.functions[name], per_function[name])
                          for name in program.functions}

    def function(self, name: str | None = None) -> MilFunction:
        name = name or self.default_function
        if name not in self.functions:
            raise InputError(f"{self.path.name} has no function {name!r}; it has {', '.join(self.functions)}")
        return self.functions[name]

    def make_state(self, name: str | None = None) -> StateStore:
        return StateStore(self.function(name).states)
