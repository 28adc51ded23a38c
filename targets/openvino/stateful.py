"""Stateful OpenVINO IR: the four recurrent states live inside the model as ReadValue/Assign variables.

The IR takes ``src`` (and ``downsample_ratio`` when dynamic) and returns ``fgr`` and ``pha``. Variable ``rK`` holds
state K between inferences of one ``InferRequest``:

- it starts (and restarts after ``request.reset_state()``) as zeros whose shape the model computes from the input:
  ``[B, C_K, ceil(h / 2^K), ceil(w / 2^K)]`` with ``h, w`` the size of the model's own low-res frame (the input shape
  of the backbone's first convolution, so the rounding is the graph's own); a static IR uses the constant shapes;
- each inference reads it, and the Assign stores the new state for the next call.

Call ``reset_state()`` at every cut and whenever H, W or the ratio change (the variables keep the old shape).
States can be read (``query_state()``, ids ``r1..r4``) and set, which is how ``run()`` honours explicit states.

Two OpenVINO 2026.4 CPU-plugin behaviours:
(1) a ReadValue whose initialiser depends on a runtime shape and whose output feeds a Concat (the ConvGRU's
``[x, h]``) fails to compile ("Invalid graph status"); an identity Clamp (±3e38, exact for every finite value) between
the ReadValue and its consumers avoids it (dynamic IR only, where the initialiser is shape-dependent);
(2) in an int8 IR, NNCF quantises each new state (the next decoder stage reads it), and the plugin fuses that
FakeQuantize into the Assign: the variable then holds quantised codes (0..255). Inference is unaffected (equal to the
stateless int8 IR) but ``query_state()`` returns the codes and ``set_state()`` would expect them, so the runner
treats the states of an int8 stateful IR as opaque.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import ExportFailedError
from rvm_export.core.names import FRAME_OUTPUTS, RATIO, SRC, STATE_PAIRS, STATE_VARIABLES
from rvm_export.core.runner import check_frame
from rvm_export.core.spec import IOSpec, StateVariable

__all__ = ["make_stateful", "stateful_spec", "StatefulStream", "read_states", "write_states", "VARIABLE_IDS"]

VARIABLE_IDS = {in_name: in_name[:-1] for _, in_name in STATE_PAIRS}  # r1i -> "r1": the ids query_state() shows
_FLT_MAX = 3.0e38


def stateful_spec(spec: IOSpec) -> IOSpec:
    """The contract of the stateful IR made from ``spec``'s stateless one: inputs ``src`` (and
    ``downsample_ratio`` if dynamic), outputs ``fgr``, ``pha``; states r1..r4 inside, float32, reset by
    ``InferRequest.reset_state()``."""
    shapes = dict(zip(STATE_VARIABLES, (t.shape for t in spec.inputs if t.kind == "state")))
    variables = tuple(StateVariable(VARIABLE_IDS[in_name], f"{in_name}/{out_name}", shapes[VARIABLE_IDS[in_name]],
                                    "float32") for out_name, in_name in STATE_PAIRS)
    return replace(spec, states="internal", state_variables=variables,
                   state_reset="InferRequest.reset_state() (OpenVINO; a new InferRequest also starts from zeros)")


def make_stateful(ov_model, spec: IOSpec):
    """Turn the stateless contract model into the stateful one, in place; returns it."""
    import openvino as ov
    import openvino.opset13 as ops
    from openvino.op.util import Variable, VariableInfo

    params = {p.get_output_tensor(0).get_any_name(): p for p in ov_model.get_parameters()}
    results = {r.get_input_tensor(0).get_any_name(): r for r in ov_model.get_results()}
    shapes = _initial_shapes(ov_model, spec, params)
    variables, sinks = [], []
    for (out_name, in_name), shape in zip(STATE_PAIRS, shapes):
        param, result = params[in_name], results[out_name]
        info = VariableInfo()
        # dynamic: rank only (shape inference cannot always see the constant channel count through the initialiser)
        info.data_shape = param.get_partial_shape() if spec.bucket is not None else ov.PartialShape.dynamic(4)
        info.data_type = ov.Type.f32
        info.variable_id = VARIABLE_IDS[in_name]
        variable = Variable(info)
        zeros = ops.broadcast(ops.constant(np.float32(0.0)), shape)
        read = ops.read_value(zeros, variable, name=f"{VARIABLE_IDS[in_name]}_read")
        value = read if spec.bucket is not None else ops.clamp(read, -_FLT_MAX, _FLT_MAX)  # identity; see (1)
        param.output(0).replace(value.output(0))
        producer = result.input_value(0)
        if len(producer.get_node().outputs()) != 1:
            raise ExportFailedError(f"{out_name} is output {producer.get_index()} of a multi-output node; "
                                    "Assign needs a single-output producer")
        sinks.append(ops.assign(producer.get_node(), variable, name=f"{VARIABLE_IDS[in_name]}_assign"))
        variables.append(variable)
        ov_model.remove_result(result)
        ov_model.remove_parameter(param)
    ov_model.add_variables(variables)
    ov_model.add_sinks(sinks)
    ov_model.validate_nodes_and_infer_types()
    got_in = [p.get_any_name() for p in ov_model.inputs]
    got_out = [p.get_any_name() for p in ov_model.outputs]
    expected_in = [SRC] + ([RATIO] if spec.dynamic else [])
    if got_in != expected_in or got_out != list(FRAME_OUTPUTS):
        raise ExportFailedError(f"stateful IR has inputs {got_in} and outputs {got_out}; expected {expected_in} "
                                f"and {list(FRAME_OUTPUTS)}")
    return ov_model


def _initial_shapes(ov_model, spec: IOSpec, params):
    """Shape tensors (i64 [4]) of the four zero states."""
    import openvino.opset13 as ops

    if spec.bucket is not None:
        shapes = spec.concrete_state_shapes(spec.bucket, spec.batch)
        return [ops.constant(np.array(shapes[in_name], np.int64)) for _, in_name in STATE_PAIRS]
    from .graph import stem_convolution

    # the low-res frame's own shape in the graph: whatever the downsample is built from, its rounding is the graph's
    shape = ops.shape_of(stem_convolution(ov_model).input_value(0), "i64")
    batch = ops.gather(shape, ops.constant(np.array([0], np.int64)), ops.constant(np.int64(0)))
    size = ops.gather(shape, ops.constant(np.array([2, 3], np.int64)), ops.constant(np.int64(0)))
    one, two = ops.constant(np.int64(1)), ops.constant(np.int64(2))
    out = []
    for k, (_, in_name) in enumerate(STATE_PAIRS):
        size = ops.divide(ops.add(size, one), two)  # every stride-2 stage maps n -> ceil(n / 2)
        channels = params[in_name].get_partial_shape()[1].get_length()
        out.append(ops.concat([batch, ops.constant(np.array([channels], np.int64)), size], 0))
    return out


def write_states(request, states: Mapping[str, np.ndarray]) -> None:
    """Load contract-named states (``r1i..r4i``) into the request's variables; absent ones keep their value."""
    import openvino as ov

    by_id = {s.name: s for s in request.query_state()}
    for in_name, array in states.items():
        if in_name in VARIABLE_IDS:
            by_id[VARIABLE_IDS[in_name]].state = ov.Tensor(np.ascontiguousarray(array, np.float32))


def read_states(request) -> dict[str, np.ndarray]:
    """The variables' current values under the contract's output names ``r1o..r4o`` (copies)."""
    by_id = {s.name: s for s in request.query_state()}
    return {out_name: np.array(by_id[VARIABLE_IDS[in_name]].state.data) for out_name, in_name in STATE_PAIRS}


class StatefulStream:
    """Runs a stateful IR frame by frame: only ``src`` goes in; ``reset()`` calls ``InferRequest.reset_state()``.
    Returned ``fgr``/``pha`` are views valid until the next ``step``; states (if asked for) are copies."""

    def __init__(self, runner, bucket: Bucket, states: bool = True) -> None:
        import openvino as ov

        self.ov = ov
        self.runner, self.bucket, self.with_states = runner, bucket, states
        self.request = runner.compiled.create_infer_request()
        if RATIO in runner.input_names:
            self._ratio = np.array([bucket.ratio], np.float32)
            self.request.set_tensor(RATIO, ov.Tensor(self._ratio, shared_memory=True))
        self.reset()

    def reset(self) -> None:
        self.request.reset_state()

    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        check_frame(src, self.bucket)
        frame = np.ascontiguousarray(src, dtype=np.float32)
        self.request.set_tensor(SRC, self.ov.Tensor(frame, shared_memory=True))
        self.request.infer()
        outputs = {name: self.request.get_tensor(name).data for name in FRAME_OUTPUTS}
        if self.with_states:
            outputs.update(read_states(self.request))
        return outputs
