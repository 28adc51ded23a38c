"""The network reproduces the original implementation's golden vectors (../shared/golden), states included."""
from __future__ import annotations

import numpy as np
import pytest
import torch

OUTPUTS = ("fgr", "pha", "r1", "r2", "r3", "r4")
FRAME_TOL = 1e-5  # fgr / pha / states (golden README: a faithful re-implementation is within 1e-5)
SEG_TOL = 1e-4  # segmentation logits
FGF_TOL = 1e-4  # fast guided filter (numerically sensitive: thread count alone moves it by ~5e-5)


def _max_err(got: torch.Tensor, want: np.ndarray) -> float:
    assert tuple(got.shape) == want.shape, f"shape {tuple(got.shape)} != golden {want.shape}"
    return float(np.abs(got.detach().numpy() - want).max())


@pytest.mark.parametrize("case,ratio", [("a", 1.0), ("b", 0.5)], ids=["ratio1-no-refiner", "ratio0.5-refiner"])
def test_frame_by_frame(golden_model, golden_npz, case, ratio):
    src = torch.from_numpy(golden_npz["src"])
    states = [None] * 4
    with torch.inference_mode():
        for t in range(src.shape[1]):
            fgr, pha, *states = golden_model(src[:, t], *states, downsample_ratio=ratio)
            for name, value in zip(OUTPUTS, (fgr, pha, *states)):
                err = _max_err(value, golden_npz[f"{case}_{name}"][t])
                assert err <= FRAME_TOL, f"case {case} frame {t} {name}: {err:.3g}"


def test_whole_clip_at_once(golden_model, golden_npz):
    src = torch.from_numpy(golden_npz["src"])
    with torch.inference_mode():
        fgr, pha, *states = golden_model(src, downsample_ratio=0.5)
    assert _max_err(fgr, golden_npz["c_fgr"]) <= FRAME_TOL
    assert _max_err(pha, golden_npz["c_pha"]) <= FRAME_TOL
    for k, state in enumerate(states, start=1):
        assert _max_err(state, golden_npz[f"c_r{k}"]) <= FRAME_TOL, f"r{k}"


def test_segmentation_pass(golden_model, golden_npz):
    src = torch.from_numpy(golden_npz["src"])[:, 0]
    with torch.inference_mode():
        seg, *states = golden_model(src, segmentation_pass=True)
    assert _max_err(seg, golden_npz["d_seg"]) <= SEG_TOL
    for k, state in enumerate(states, start=1):
        assert _max_err(state, golden_npz[f"d_r{k}"]) <= FRAME_TOL, f"r{k}"


def test_fast_guided_filter(golden_fgf_model, golden_fgf_npz):
    src = torch.from_numpy(golden_fgf_npz["src"])
    states = [None] * 4
    with torch.inference_mode():
        for t in range(src.shape[1]):
            fgr, pha, *states = golden_fgf_model(src[:, t], *states, downsample_ratio=0.5)
            for name, value in zip(OUTPUTS, (fgr, pha, *states)):
                err = _max_err(value, golden_fgf_npz[f"b_{name}"][t])
                assert err <= FGF_TOL, f"frame {t} {name}: {err:.3g}"


def test_golden_weights_are_not_trivially_matched(golden_npz, default_model):
    """The golden comparison can fail: other weights give visibly different outputs."""
    src = torch.from_numpy(golden_npz["src"])[:, 0]
    with torch.inference_mode():
        _, pha, *_ = default_model(src, downsample_ratio=0.5)
    assert _max_err(pha, golden_npz["b_pha"][0]) > 1e-2
