"""Bad input to forward raises ModelInputError naming what was expected."""
from __future__ import annotations

import pytest
import torch

from model import ModelInputError


@pytest.mark.parametrize("src,ratio,match", [
    (torch.rand(3, 64, 64), 1.0, r"rank 4 or 5.*rank 3"),
    (torch.rand(1, 1, 1, 3, 64, 64), 1.0, r"rank 4 or 5.*rank 6"),
    (torch.rand(1, 4, 64, 64), 1.0, r"3 \(RGB\) channels.*got 4"),
    (torch.rand(1, 2, 4, 64, 64), 1.0, r"3 \(RGB\) channels.*got 4"),
    (torch.rand(1, 3, 64, 64), 0.0, r"downsample_ratio must be in \(0, 1\], got 0.0"),
    (torch.rand(1, 3, 64, 64), -0.5, r"downsample_ratio must be in \(0, 1\], got -0.5"),
    (torch.rand(1, 3, 64, 64), 1.5, r"downsample_ratio must be in \(0, 1\], got 1.5"),
    (torch.rand(1, 3, 64, 64), float("nan"), r"downsample_ratio must be in \(0, 1\]"),
    (torch.rand(1, 3, 64, 64), "0.5", r"downsample_ratio must be a number"),
    (torch.rand(1, 3, 64, 64), 0.001, r"shrinks 64x64"),
    (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), 1.0, r"floating-point.*uint8"),
], ids=["rank3", "rank6", "4ch", "4ch-clip", "ratio0", "ratio-neg", "ratio>1", "ratio-nan", "ratio-str", "ratio-tiny",
        "uint8"])
def test_bad_src_or_ratio(golden_model, src, ratio, match):
    with pytest.raises(ModelInputError, match=match):
        golden_model(src, downsample_ratio=ratio)


def test_wrong_state_shape_names_the_state_and_expected_shape(golden_model):
    src = torch.rand(1, 3, 144, 256)
    r1 = torch.zeros(1, 16, 36, 64)  # the shape for ratio 0.5, used at ratio 1
    with pytest.raises(ModelInputError, match=r"r1 must have shape \[1, 16, 72, 128\].*got \[1, 16, 36, 64\]"):
        golden_model(src, r1, downsample_ratio=1.0)
    r3 = torch.zeros(1, 41, 18, 32)
    with pytest.raises(ModelInputError, match=r"r3 must have shape \[1, 40, 18, 32\]"):
        golden_model(src, None, None, r3, downsample_ratio=1.0)


def test_state_of_wrong_type(golden_model):
    with pytest.raises(ModelInputError, match="r2 must be a Tensor or None"):
        golden_model(torch.rand(1, 3, 64, 64), None, [0.0])


def test_tensor_ratio_accepted(golden_model):
    src = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        a = golden_model(src, downsample_ratio=0.5)[1]
        b = golden_model(src, downsample_ratio=torch.tensor([0.5]))[1]
    assert torch.equal(a, b)


def test_unknown_variant_or_refiner():
    from model import MattingNetwork

    with pytest.raises(ValueError, match="unknown variant 'mobilenetv2'"):
        MattingNetwork("mobilenetv2")
    with pytest.raises(ValueError, match="unknown refiner 'box'"):
        MattingNetwork("mobilenetv3", "box")
