"""The ratio downsample of exported graphs samples where PyTorch samples (targets/resample.py)."""
from __future__ import annotations

import pytest
import torch

from model import MattingNetwork
from rvm_export.core.rollout import MovingScene
from rvm_export.core.bucket import Bucket
from targets.traced.resample import (describe_downsample, dynamic_downsample, reciprocal_is_exact, slice_plan,
                              static_downsample)

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
