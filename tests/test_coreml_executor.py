"""The reference MIL executor: kernels against PyTorch, float16 rounding, states, and loud refusal of unknown ops.

These build tiny programs (no RVM conversion), so they are fast.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")

from targets.coreml.mil_executor import MilFunction, MilProgram  # noqa: E402
from targets.coreml.mil_ops import (UnsupportedOpError, avg_pool, conv, upsample_bilinear)  # noqa: E402

pytestmark = pytest.mark.coreml
RNG = np.random.default_rng(0)

# (in_ch, out_ch, kernel, stride, pad, dilation, groups, height, width)
CONV_CASES = {
    "3x3": (5, 7, 3, 1, 1, 1, 1, 13, 11),
    "1x1-stride2": (6, 4, 1, 2, 0, 1, 1, 13, 11),
    "depthwise5x5-stride2": (8, 8, 5, 2, 2, 1, 8, 13, 11),
    "depthwise5x5-dilated": (8, 8, 5, 1, 4, 2, 8, 13, 11),
    "grouped3x3": (6, 4, 3, 1, 1, 1, 2, 9, 10),
    "3x3-stride2-odd": (3, 16, 3, 2, 1, 1, 1, 135, 241),
}


@pytest.mark.parametrize("case", CONV_CASES.values(), ids=CONV_CASES.keys())
def test_conv_matches_torch(case):
    cin, cout, k, stride, pad, dil, groups, h, w = case
    x = RNG.standard_normal((1, cin, h, w)).astype(np.float32)
    weight = RNG.standard_normal((cout, cin // groups, k, k)).astype(np.float32)
    bias = RNG.standard_normal(cout).astype(np.float32)
    got = conv(x, weight, bias, strides=(stride, stride), pad_type="custom", pad=(pad,) * 4,
               dilations=(dil, dil), groups=groups)
    want = F.conv2d(torch.from_numpy(x), torch.from_numpy(weight), torch.from_numpy(bias), stride, pad, dil,
                    groups).numpy()
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 2e-5


RESIZE_CASES = {
    "down-by-0.375": ((16, 24), 0.375, "scale"),
    "down-by-0.25": ((12, 20), 0.25, "scale"),
    "up-by-2-odd": ((5, 7), 2.0, "scale"),
    "to-size-2.667x": ((9, 15), (24, 40), "size"),  # the refiner's resize back to 720p from 270p
}


@pytest.mark.parametrize("case", RESIZE_CASES.values(), ids=RESIZE_CASES.keys())
def test_upsample_bilinear_matches_torch_half_pixel(case):
    (h, w), how, kind = case
    x = RNG.standard_normal((1, 3, h, w)).astype(np.float32)
    t = torch.from_numpy(x)
    if kind == "scale":
        got = upsample_bilinear(x, how, how, align_corners=False)
        want = F.interpolate(t, scale_factor=how, mode="bilinear", align_corners=False,
                             recompute_scale_factor=False).numpy()
    else:  # coremltools turns interpolate(size=...) into scale factors (out + 1e-4) / in
        oh, ow = how
        got = upsample_bilinear(x, (oh + 1e-4) / h, (ow + 1e-4) / w, align_corners=False)
        want = F.interpolate(t, size=how, mode="bilinear", align_corners=False).numpy()
    assert got.shape == want.shape
    # PyTorch computes source coordinates in float32 (e.g. (i + 0.5) * 2.6666667 - 0.5), the executor in float64:
    # on unit-variance noise that moves a sample by a few 1e-6.
    assert float(np.abs(got - want).max()) <= 1e-5


def test_upsample_bilinear_align_corners_mode():
    x = RNG.standard_normal((1, 2, 5, 6)).astype(np.float32)
    got = upsample_bilinear(x, 2.0, 2.0, align_corners=True)
    want = F.interpolate(torch.from_numpy(x), scale_factor=2.0, mode="bilinear", align_corners=True).numpy()
    assert float(np.abs(got - want).max()) <= 2e-6


@pytest.mark.parametrize("size", [(8, 8), (9, 15), (135, 241)], ids=["even", "odd", "odd-large"])
def test_avg_pool_ceil_mode_excludes_padding_like_torch(size):
    x = RNG.standard_normal((1, 3, *size)).astype(np.float32)
    got = avg_pool(x, (2, 2), (2, 2), "custom", (0, 0, 0, 0), exclude_padding_from_average=True, ceil_mode=True)
    want = torch.nn.AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)(torch.from_numpy(x)).numpy()
    assert got.shape == want.shape
    assert float(np.abs(got - want).max()) <= 1e-6


def test_float16_rounding_is_bit_exact_including_subnormals():
    values = np.concatenate([RNG.standard_normal(20000) * s for s in (1e-8, 1e-6, 3e-5, 1e-3, 1.0, 3e4)])
    edges = [2.0 ** -14, -(2.0 ** -14), 2.0 ** -24, 2.0 ** -25, 3 * 2.0 ** -25, -3 * 2.0 ** -25, 0.0, 65504.0,
             65519.0, 65520.0, -70000.0]
    x = np.concatenate([values, edges]).astype(np.float32)
    holder = type("Holder", (), {"_scratch": np.empty(0, np.float16)})()
    got = MilFunction._rounder(holder, x.copy(), "fp16")
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).astype(np.float32)
    assert np.array_equal(got, want)


def _save(mlmodel, path):
    mlmodel.save(str(path))
    return path


def test_unknown_op_is_refused_naming_it(tmp_path):
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 4))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.erf(x=x)

    model = ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT32,
                       minimum_deployment_target=ct.target.iOS16, skip_model_load=True)
    path = _save(model, tmp_path / "erf.mlpackage")
    with pytest.raises(UnsupportedOpError, match="'erf'"):
        MilProgram(path)


def test_fp16_program_rounds_every_intermediate(tmp_path):
    from coremltools.converters.mil import Builder as mb

    @mb.program(input_specs=[mb.TensorSpec(shape=(1, 64))], opset_version=ct.target.iOS16)
    def prog(x):
        return mb.mul(x=mb.add(x=x, y=np.float32(1.0 / 3.0)), y=np.float32(3.0))

    model = ct.convert(prog, convert_to="mlprogram", compute_precision=ct.precision.FLOAT16,
                       minimum_deployment_target=ct.target.iOS16, skip_model_load=True,
                       inputs=[ct.TensorType(name="x", shape=(1, 64), dtype=np.float32)],
                       outputs=[ct.TensorType(name="y", dtype=np.float32)])
    function = MilProgram(_save(model, tmp_path / "fp16.mlpackage")).function()
    x = RNG.uniform(-2, 2, (1, 64)).astype(np.float32)
    (got,) = function.run({"x": x}).values()
    h = np.float16
    want = ((x.astype(h) + h(1.0 / 3.0)).astype(h) * h(3.0)).astype(np.float32)  # float16 at every step
    assert np.array_equal(got, want)
    assert not np.array_equal(got, (x + np.float32(1 / 3)) * np.float32(3))  # and it is not float32


def test_stateful_program_keeps_float16_states_and_resets(tmp_path):
    class Accumulate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("acc", torch.zeros(1, 3))

        def forward(self, x):
            self.acc[:] = self.acc + x
            return self.acc * 2.0

    traced = torch.jit.trace(Accumulate().eval(), (torch.zeros(1, 3),))
    model = ct.convert(traced, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                       compute_precision=ct.precision.FLOAT32, skip_model_load=True,
                       inputs=[ct.TensorType(name="x", shape=(1, 3), dtype=np.float32)],
                       outputs=[ct.TensorType(name="y", dtype=np.float32)],
                       states=[ct.StateType(wrapped_type=ct.TensorType(shape=(1, 3), dtype=np.float16), name="acc")])
    program = MilProgram(_save(model, tmp_path / "acc.mlpackage"))
    state = program.make_state()
    x = np.array([[0.1, 1000.3, -2.5]], np.float32)
    expected = np.zeros((1, 3), np.float16)
    for _ in range(3):
        y = program.function().run({"x": x}, state)["y"]
        expected = (expected.astype(np.float32) + x).astype(np.float16)  # the state is stored as float16
        assert np.array_equal(y, expected.astype(np.float32) * 2.0)
    state.reset()
    assert np.array_equal(program.function().run({"x": x}, state)["y"],
                          x.astype(np.float16).astype(np.float32) * 2.0)
