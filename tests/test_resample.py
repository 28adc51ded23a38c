"""The ratio downsample of exported graphs samples where PyTorch samples (targets/resample.py)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model import MattingNetwork
from model.matting import lowres_size
from rvm_export.core.rollout import MovingScene
from rvm_export.core.bucket import Bucket, lowres_hw
from targets.traced.resample import (describe_downsample, dynamic_downsample, pytorch_taps, reciprocal_is_exact,
                                     slice_plan, static_downsample)

CASES = [(1280, 720, 0.375), (512, 288, 0.375), (1280, 720, 0.3375), (1280, 720, 0.6), (241, 135, 0.37),
         (1920, 1080, 0.25), (256, 144, 1.0)]


@pytest.mark.parametrize("width,height,ratio", CASES, ids=[f"{w}x{h}@{r}" for w, h, r in CASES])
def test_static_and_dynamic_match_pytorch(width, height, ratio):
    """To float rounding, where another rounding of the same coordinates (float64) is visibly off."""
    x = torch.from_numpy(MovingScene(width, height, 2, seed=0).frame(1))
    reference = MattingNetwork.downsample(x, ratio)
    static = static_downsample(x, ratio, MattingNetwork.downsample)
    dynamic = dynamic_downsample(x, torch.tensor([ratio], dtype=torch.float32))
    assert static.shape == dynamic.shape == reference.shape
    assert float((static - reference).abs().max()) <= 3e-7
    assert float((dynamic - reference).abs().max()) <= 3e-7
    if not reciprocal_is_exact(ratio):
        other_rounding = MattingNetwork.downsample(x.double(), ratio).float()
        assert float((other_rounding - reference).abs().max()) > 1e-6


def test_plans_and_descriptions():
    assert reciprocal_is_exact(0.25) and reciprocal_is_exact(0.4) and not reciprocal_is_exact(0.375)
    assert slice_plan(1280, 0.375) is not None and slice_plan(1282, 0.375) is None  # 1282: not whole 8-px periods
    assert describe_downsample(Bucket(1920, 1080, 0.4)).startswith("the runtime's bilinear resize")
    assert "slices" in describe_downsample(Bucket(1280, 720, 0.375))
    assert "gather" in describe_downsample(Bucket(241, 135, 0.37))
    assert describe_downsample(Bucket(256, 144, 1.0)) == "none (ratio 1)"


# -- the dynamic graph's taps: exact in float32/int32 (targets/traced/exact_taps.py) --------------------------------
LENGTHS = [1, 2, 3, 5, 7, 16, 53, 97, 135, 144, 180, 241, 288, 360, 541, 720, 1080, 1280, 1920, 2160, 3840, 4321,
           7680, 16384, 32767]


def _ratios(length: int) -> list[float]:
    """float32 ratios in [2**-16, 1]: multiples of 1/64 and of 0.01, and the float32 neighbours of k / length
    (where the low-res length steps, so any rounding of H*r shows)."""
    rng = np.random.default_rng(length)
    values = {np.float32(k / 64) for k in range(1, 65)} | {np.float32(k / 100) for k in range(1, 101)}
    for k in rng.integers(1, length + 1, 6):
        center = np.float32(k / length)
        values |= {center, np.nextafter(center, np.float32(0)), np.nextafter(center, np.float32(2))}
    values |= {np.float32(2.0**-16), np.float32(1.0)}
    return sorted(float(v) for v in values if 2**-16 <= v <= 1)


def test_exact_taps_are_pytorchs_at_the_float32_ratio():
    """floor(H * r) with the float64 product and the once-rounded coordinate, from float32 ops only,
    against exact rational arithmetic (the low-res length) and pytorch_taps (the coordinates)."""
    from fractions import Fraction

    from targets.traced.exact_taps import lowres_length, source_coordinates

    checked = 0
    for length in LENGTHS:
        size = torch.tensor(float(length))
        for ratio in _ratios(length):
            r = torch.tensor(ratio, dtype=torch.float32)
            out = int(lowres_length(size, r))
            assert out == math.floor(length * Fraction(ratio)), (length, ratio)
            if out and length <= 4321:
                src = source_coordinates(torch.tensor(float(out)), r).numpy()
                scale = np.float32(1.0 / ratio)
                want = (np.float64(scale) * (np.arange(out) + 0.5) - 0.5).astype(np.float32)  # exact, then rounded
                assert np.array_equal(src, want), (length, ratio)
            checked += 1
    assert checked > 4000


class _Taps(torch.nn.Module):
    def forward(self, length: torch.Tensor, ratio: torch.Tensor):
        from targets.traced.resample import _runtime_taps

        return _runtime_taps(length.reshape(()), ratio.reshape(()))


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_runtimes_compute_the_taps_exactly(tmp_path, runtime):
    """The traced tap arithmetic run by the runtime itself (its Floor, Cast and float32 kernels: OpenVINO runs int64
    as int32 and divides integers in float32, which is why every value stays a float32 whole number below 2**24)
    equals PyTorch's taps bit for bit."""
    pytest.importorskip(runtime)
    path = tmp_path / "taps.onnx"
    example = (torch.tensor([7]), torch.tensor([0.5]))
    torch.onnx.export(_Taps(), example, str(path), input_names=["length", "ratio"], dynamo=False, opset_version=17,
                      output_names=["i0", "i1", "l0", "l1"],
                      dynamic_axes={k: {0: "n"} for k in ("i0", "i1", "l0", "l1")})
    if runtime == "onnxruntime":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path))
        run = lambda feeds: session.run(None, feeds)  # noqa: E731
    else:
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        run = lambda feeds: [compiled(feeds)[o] for o in compiled.outputs]  # noqa: E731
    for length in LENGTHS:
        for ratio in _ratios(length)[::3]:
            i0, i1, l0, l1 = run({"length": np.array([length]), "ratio": np.array([ratio], np.float32)})
            want = pytorch_taps(length, ratio)
            for got, expected in zip((i0, i1, l0, l1), want):
                assert np.array_equal(got, expected), (runtime, length, ratio)


@pytest.mark.parametrize("width,height,ratio", [(640, 360, 0.35), (1280, 720, 0.45), (320, 180, 0.65),
                                                (180, 100, 0.7), (333, 200, 0.95)])
def test_dynamic_downsample_where_float32_and_float64_floors_differ(width, height, ratio):
    """At ratios where a float32 product floors H*r differently (640x360 @ 0.35: 126 rows, PyTorch 125), the dynamic
    downsample has PyTorch's shape and values for the float32 ratio it receives."""
    r32 = float(np.float32(ratio))
    assert lowres_hw(height, width, ratio) != lowres_size(height, width, r32)  # the case is a real one
    x = torch.from_numpy(MovingScene(width, height, 2, seed=0).frame(1))
    reference = MattingNetwork.downsample(x, r32)
    dynamic = dynamic_downsample(x, torch.tensor([ratio], dtype=torch.float32))
    assert dynamic.shape[2:] == reference.shape[2:] == lowres_size(height, width, r32)
    assert float((dynamic - reference).abs().max()) <= 3e-7
