"""Export wrappers compute what MattingNetwork.forward computes (targets/contract.py)."""
from __future__ import annotations

import pytest
import torch

from model.guided_filter import apply_coefficients
from rvm_export.core.bucket import Bucket
from rvm_export.core.spec import IOSpec, Layout
from targets.traced.contract import (DynamicContract, StaticContract, example_inputs, refine_and_compose,
                                     tail_description)
from targets.traced.refiner_tail import TAILS, resolve_tail


def test_refiner_tail_is_the_same_algebra():
    gen = torch.Generator().manual_seed(0)
    src = torch.rand(2, 3, 67, 91, generator=gen)
    a, b = torch.randn(2, 4, 17, 23, generator=gen), torch.randn(2, 4, 17, 23, generator=gen)
    fgr_res, pha = apply_coefficients(a, b, src)
    want = ((fgr_res + src).clamp(0, 1), pha.clamp(0, 1))
    for size in (None, (67, 91)):
        for tail in TAILS:
            for got, expected in zip(refine_and_compose(src, a, b, size, tail), want):
                assert float((got - expected).abs().max()) <= 2e-6


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_phase_tail_equals_the_bilinear_upsample(scale):
    """The phases layout (no full-res resize) is PyTorch's half-pixel bilinear upsample + multiply-add, edges
    included, when the frame is a whole number of times the low-res size."""
    gen = torch.Generator().manual_seed(scale)
    low = (9, 13)
    src = torch.rand(1, 3, low[0] * scale, low[1] * scale, generator=gen)
    a, b = torch.randn(1, 4, *low, generator=gen), torch.randn(1, 4, *low, generator=gen) * 0.5
    fgr_res, pha = apply_coefficients(a, b, src)
    want = ((fgr_res + src).clamp(0, 1), pha.clamp(0, 1))
    size = (low[0] * scale, low[1] * scale)
    assert resolve_tail("phases", size, low) == "phases"
    for got, expected in zip(refine_and_compose(src, a, b, size, "phases"), want):
        assert got.shape == expected.shape
        assert float((got - expected).abs().max()) <= 2e-6


def test_phase_tail_falls_back_where_the_factor_is_fractional():
    assert resolve_tail("phases", (720, 1280), (270, 480)) == "planar"  # 0.375
    assert resolve_tail("phases", None, None) == "planar"  # dynamic
    assert resolve_tail("phases", (1080, 1920), (270, 480)) == "phases"
    with pytest.raises(ValueError, match="unknown refiner tail"):
        resolve_tail("diagonal", None, None)


def test_refiner_tail_is_exact_when_gated_off():
    """A = 0, b = y at the same size (the dynamic graph's ratio-1 gate) gives the unrefined prediction exactly."""
    gen = torch.Generator().manual_seed(1)
    src = torch.rand(1, 3, 40, 56, generator=gen)
    y = torch.randn(1, 4, 40, 56, generator=gen)
    fgr, pha = refine_and_compose(src, torch.zeros_like(y), y)
    assert torch.equal(fgr, (y[:, :3] + src).clamp(0, 1)) and torch.equal(pha, y[:, 3:].clamp(0, 1))


@pytest.mark.parametrize("bucket", [Bucket(256, 144, 0.5), Bucket(241, 135, 1.0), Bucket(320, 180, 0.375)],
                         ids=lambda b: b.label)
@pytest.mark.parametrize("layout", [Layout.NCHW, Layout.NHWC])
def test_wrappers_equal_forward(golden_model, bucket, layout):
    spec = IOSpec("mobilenetv3", "deep_guided_filter", bucket, layout=layout)
    src, *states = example_inputs(spec, bucket)
    nchw = src.permute(0, 3, 1, 2) if layout == Layout.NHWC else src
    with torch.inference_mode():
        want = golden_model(nchw, downsample_ratio=bucket.ratio)
        static = StaticContract(golden_model, spec)(src, *states)
        dynamic = DynamicContract(golden_model, IOSpec("mobilenetv3", "deep_guided_filter"))(
            nchw, *[s.permute(0, 3, 1, 2) if layout == Layout.NHWC else s for s in states],
            torch.tensor([bucket.ratio]))
    for got, expected in zip(static, want):
        got = got.permute(0, 3, 1, 2) if layout == Layout.NHWC else got
        assert float((got - expected).abs().max()) <= 2e-6
    for got, expected in zip(dynamic, want):
        assert float((got - expected).abs().max()) <= 2e-6


@pytest.mark.parametrize("bucket", [Bucket(256, 144, 0.5), Bucket(256, 144, 0.25), Bucket(320, 180, 0.375)],
                         ids=lambda b: b.label)
def test_static_wrapper_with_the_phase_tail_equals_forward(golden_model, bucket):
    """OpenVINO's layout: phases at s = 2 and 4, the planar fallback at 0.375 (s = 2.67)."""
    spec = IOSpec("mobilenetv3", "deep_guided_filter", bucket)
    src, *states = example_inputs(spec, bucket)
    wrapper = StaticContract(golden_model, spec, tail="phases")
    assert wrapper.tail == ("planar" if bucket.ratio == 0.375 else "phases")
    with torch.inference_mode():
        want = golden_model(src, downsample_ratio=bucket.ratio)
        got = wrapper(src, *states)
    for g, w in zip(got, want):
        assert float((g - w).abs().max()) <= 2e-6


def test_tail_description_names_what_the_graph_has():
    phases_bucket, fractional, full = Bucket(1920, 1080, 0.25), Bucket(1280, 720, 0.375), Bucket(256, 144, 1.0)
    spec = lambda bucket: IOSpec("mobilenetv3", "deep_guided_filter", bucket)  # noqa: E731
    assert tail_description(spec(phases_bucket), "phases").startswith("phases")
    assert tail_description(spec(fractional), "phases").startswith("planar")
    assert tail_description(IOSpec("mobilenetv3", "deep_guided_filter"), "phases").startswith("planar")  # dynamic
    assert tail_description(spec(full), "phases").startswith("none")
    assert tail_description(spec(phases_bucket)).startswith("planar")  # NCHW default
