"""The I/O contract: names, per-tensor axes, state rule, buckets and their refusals."""
from __future__ import annotations

from pathlib import Path

import numpy as np
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


@pytest.mark.parametrize("bucket,agrees", [
    (Bucket(1280, 720, 0.45), False),  # float32 0.449999988: PyTorch computes 575x323 there, 576x324 at 0.45
    (Bucket(1920, 1080, 0.35), False),  # 671x377 against 672x378
    (Bucket(1280, 720, 0.55), False),  # same size, but float32 scale 1.81818175 against 1.81818187
    (Bucket(1280, 720, 0.375), True), (Bucket(1920, 1080, 0.25), True), (Bucket(241, 135, 0.37), True),
    (Bucket(1280, 720, 0.6), True), (Bucket(512, 288, 1.0), True)], ids=lambda v: getattr(v, "label", str(v)))
def test_float32_ratio_agreement(bucket, agrees):
    """A dynamic model receives the ratio as float32; it can reproduce PyTorch at the bucket's ratio only where
    PyTorch computes the same for both values (low-res size and sampling scale)."""
    from model.matting import lowres_size

    assert bucket.float32_ratio_agrees is agrees
    assert (bucket.float32_ratio_problem() is None) is agrees
    same_size = lowres_size(bucket.height, bucket.width, float(np.float32(bucket.ratio))) == bucket.lowres
    assert same_size is (bucket.ratio != 0.45 and bucket.ratio != 0.35)


def test_dynamic_requests_refuse_ratios_float32_changes():
    from rvm_export.core.request import ExportRequest
    from rvm_export.core.spec import Precision

    bad = Bucket(1280, 720, 0.45)
    message = (r"1280x720@0.45: a dynamic model receives the ratio as the float32 0.44999998807907104, for which "
               r"PyTorch computes a 575x323 low-res frame \(576x324 at 0.45\).*\(--downsample-ratio 0.45\) or "
               r"choose one of \[0.4375, 0.4625\]")
    with pytest.raises(UsageError, match=message):
        ExportRequest("mobilenetv3", "deep_guided_filter", (Bucket(1280, 720, 0.375), bad), True, Precision.FP32)
    static = ExportRequest("mobilenetv3", "deep_guided_filter", (bad,), False, Precision.FP32)
    assert static.specs[0].bucket == bad  # static models bake the ratio in: nothing to refuse
    with pytest.raises(UsageError, match="sampling scale of 1.81818175"):
        IOSpec("mobilenetv3", "deep_guided_filter").check_bucket(Bucket(1280, 720, 0.55))
    IOSpec("mobilenetv3", "deep_guided_filter", bad).check_bucket(bad)
    for ratio in Bucket(1280, 720, 0.45).nearest_exact_ratios(dynamic=True):
        assert Bucket(1280, 720, ratio).float32_ratio_agrees


def test_auto_picks_static_models_where_a_dynamic_one_cannot_be_checked():
    from rvm_export.pipeline import RunConfig, plan_export

    def flavours(*buckets):
        config = RunConfig(("onnx",), Path("unused"), buckets)
        plan = plan_export(config, "mobilenetv3", "deep_guided_filter", {"weights": "test"})
        return [item.request.dynamic for item in plan]

    assert flavours(Bucket(1280, 720, 0.375), Bucket(1920, 1080, 0.25)) == [True]
    assert flavours(Bucket(1280, 720, 0.375), Bucket(1280, 720, 0.45)) == [False]
    with pytest.raises(UsageError, match="float32 0.44999998807907104"):
        plan_export(RunConfig(("onnx",), Path("unused"), (Bucket(1280, 720, 0.45),), ratio_mode="dynamic"),
                    "mobilenetv3", "deep_guided_filter", {"weights": "test"})


def test_io_contract_doc_is_generated_from_the_spec():
    from pathlib import Path

    from rvm_export.docs import render_io_contract

    doc = Path(__file__).resolve().parents[1] / "docs" / "io_contract.md"
    assert doc.read_text() == render_io_contract(), "run: python -m rvm_export.docs > docs/io_contract.md"
