"""The I/O contract: names, per-tensor axes, state rule, buckets and their refusals."""
from __future__ import annotations

import pytest

from rvm_export.core.errors import UsageError
from rvm_export.core.bucket import Bucket, lowres_hw, parse_bucket, recommended_ratio
from rvm_export.core.names import INPUT_NAMES, OUTPUT_NAMES
from rvm_export.core.spec import IOSpec, Layout


def test_dynamic_axes_have_unique_names_per_tensor():
    spec = IOSpec("mobilenetv3", "deep_guided_filter")
    names = [name for axes in spec.dynamic_axes.values() for name in axes.values()]
    assert len(names) == len(set(names))
    assert set(spec.dynamic_axes) == set(INPUT_NAMES[:-1]) | set(OUTPUT_NAMES)
    assert spec.input_names == INPUT_NAMES


def test_static_spec_is_fully_concrete():
    spec = IOSpec("resnet50", "deep_guided_filter", Bucket(1920, 1080, 0.25))
    assert spec.dynamic_axes == {}
    assert "downsample_ratio" not in spec.input_names
    shapes = {t.name: t.shape for t in (*spec.inputs, *spec.outputs)}
    assert shapes["src"] == (1, 3, 1080, 1920)
    assert shapes["r1i"] == shapes["r1o"] == (1, 16, 135, 240)
    assert shapes["r4i"] == (1, 128, 17, 30)


def test_nhwc_layout_keeps_states_consistent():
    spec = IOSpec("mobilenetv3", "deep_guided_filter", Bucket(1280, 720, 0.375), layout=Layout.NHWC)
    shapes = {t.name: t.shape for t in (*spec.inputs, *spec.outputs)}
    assert shapes["src"] == (1, 720, 1280, 3)
    for k in range(1, 5):
        assert shapes[f"r{k}i"] == shapes[f"r{k}o"]
    assert shapes["r2i"] == (1, 68, 120, 20)


@pytest.mark.parametrize("text,expected", [("1920x1080", (1920, 1080, 0.25)), ("1280x720", (1280, 720, 0.375)),
                                           ("3840x2160", (3840, 2160, 0.125)), ("512x288", (512, 288, 1.0)),
                                           ("1920x1080@0.4", (1920, 1080, 0.4)), ("241x135@0.5", (241, 135, 0.5))])
def test_parse_bucket(text, expected):
    bucket = parse_bucket(text)
    assert (bucket.width, bucket.height, bucket.ratio) == expected


@pytest.mark.parametrize("text,match", [("1920", "not WxH"), ("axb", "not WxH"), ("640x480@x", "not a number"),
                                        ("640x480@0", r"in \(0, 1\]"), ("640x480@1.5", r"in \(0, 1\]"),
                                        ("0x480", "must be positive"), ("64x64@0.001", "shrinks")])
def test_parse_bucket_refusals(text, match):
    with pytest.raises(UsageError, match=match):
        parse_bucket(text)


def test_exactness_and_suggestions():
    assert Bucket(1920, 1080, 0.25).exact
    odd = Bucket(241, 135, 0.5)
    assert not odd.exact and odd.lowres == (67, 120)
    # k / gcd(1280, 720) = k / 80, minus those whose float32 and float64 floors differ (720 * 0.2875 = 206.99999...)
    assert Bucket(1280, 720, 0.3).nearest_exact_ratios() == [0.3125, 0.275]
    with pytest.raises(UsageError, match=r"float32 runtimes \(368x207\) and PyTorch \(368x206\) round differently"):
        Bucket(1280, 720, 0.2875)
    assert Bucket(1280, 720, 0.3375).exact  # 1280 * 0.3375 = 432.00000000000006 counts as whole
    suggestions = Bucket(1280, 722, 0.3).nearest_exact_ratios()
    assert suggestions and all((1280 * r).is_integer() and (722 * r).is_integer() for r in suggestions)
    for size in odd.nearest_exact_sizes():
        w, h = map(int, size.split("x"))
        assert (w * 0.5).is_integer() and (h * 0.5).is_integer()


def test_recommended_ratio_keeps_long_side_at_most_512_and_exact():
    for w, h in [(1920, 1080), (1280, 720), (3840, 2160), (640, 480), (2560, 1440), (1080, 1920)]:
        r = recommended_ratio(w, h)
        assert max(w, h) * r <= 512 + 1e-9
        assert Bucket(w, h, r).exact


def test_lowres_uses_float32_product():
    assert lowres_hw(1080, 1920, 0.25) == (270, 480)
    assert lowres_hw(135, 241, 0.37) == (49, 89)


def test_io_contract_doc_is_generated_from_the_spec():
    from pathlib import Path

    from rvm_export.docs import render_io_contract

    doc = Path(__file__).resolve().parents[1] / "docs" / "io_contract.md"
    assert doc.read_text() == render_io_contract(), "run: python -m rvm_export.docs > docs/io_contract.md"
