"""Keys and shapes equal the released checkpoints'; shapes and self-consistency on cases not in the golden set."""
from __future__ import annotations

import json
import math

import pytest
import torch

from model import MattingNetwork, state_shapes

COMBOS = [(v, r) for v in ("mobilenetv3", "resnet50") for r in ("deep_guided_filter", "fast_guided_filter")]


@pytest.mark.parametrize("variant,refiner", COMBOS, ids=[f"{v}-{r}" for v, r in COMBOS])
def test_state_dict_matches_reference(shared_dir, variant, refiner):
    reference = json.loads((shared_dir / "reference" / f"state_dict_{variant}_{refiner}.json").read_text())
    model = MattingNetwork(variant, refiner)
    ours = model.state_dict()
    expected = reference["state_dict"]
    assert list(ours) == list(expected), "key names or order differ"
    for key, tensor in ours.items():
        assert list(tensor.shape) == expected[key]["shape"], key
        assert str(tensor.dtype).replace("torch.", "") == expected[key]["dtype"], key
    assert sum(p.numel() for p in model.parameters()) == reference["meta"]["num_params"]


@pytest.fixture(scope="module")
def feature_shapes(shared_dir):
    return json.loads((shared_dir / "reference" / "feature_shapes.json").read_text())


@pytest.mark.parametrize("key", ["mobilenetv3_1920x1080@0.25", "resnet50_1280x720@0.375", "mobilenetv3_640x480@0.8",
                                 "resnet50_256x144@0.5", "mobilenetv3_3840x2160@0.125"])
def test_state_shapes_match_reference(feature_shapes, key):
    variant, rest = key.split("_", 1)
    size, ratio = rest.split("@")
    width, height = map(int, size.split("x"))
    expected = [tuple(s) for s in feature_shapes[key]["hid,r1..r4"][1:]]
    assert list(state_shapes(variant, height, width, float(ratio))) == expected


@pytest.mark.parametrize("variant", ["mobilenetv3", "resnet50"])
def test_forward_shapes_match_reference(feature_shapes, variant):
    """A real forward at 640x480 @ 0.8 gives the reference output and state shapes (ResNet-50 included)."""
    entry = feature_shapes[f"{variant}_640x480@0.8"]
    model = MattingNetwork(variant).eval()
    with torch.inference_mode():
        fgr, pha, *states = model(torch.rand(1, 3, 480, 640), downsample_ratio=0.8)
    assert [list(fgr.shape), list(pha.shape)] == entry["fgr,pha"]
    assert [list(s.shape) for s in states] == entry["hid,r1..r4"][1:]


ODD_CASES = [((135, 241), 1.0), ((135, 241), 0.5), ((135, 241), 0.37), ((99, 161), 0.3), ((144, 256), 0.7)]


@pytest.mark.parametrize("variant", ["mobilenetv3", "resnet50"])
@pytest.mark.parametrize("size,ratio", ODD_CASES, ids=[f"{w}x{h}@{r}" for (h, w), r in ODD_CASES])
def test_odd_sizes_clip_equals_frames(variant, size, ratio):
    """Every crop path (odd sizes, non-integer low-res sizes): a clip in one call equals frame by frame, and the
    states have the documented shapes."""
    torch.manual_seed(0)
    model = MattingNetwork(variant, "deep_guided_filter").eval()
    height, width = size
    clip = torch.rand(1, 5, 3, height, width)
    with torch.inference_mode():
        fgr_c, pha_c, *states_c = model(clip, downsample_ratio=ratio)
        states = [None] * 4
        for t in range(clip.shape[1]):
            fgr, pha, *states = model(clip[:, t], *states, downsample_ratio=ratio)
            assert float((fgr - fgr_c[:, t]).abs().max()) <= 1e-5
            assert float((pha - pha_c[:, t]).abs().max()) <= 1e-5
    assert fgr_c.shape == (1, 5, 3, height, width) and pha_c.shape == (1, 5, 1, height, width)
    low_h, low_w = math.floor(height * ratio), math.floor(width * ratio)
    for got, want, expected in zip(states, states_c, state_shapes(variant, height, width, ratio)):
        assert tuple(got.shape) == expected
        assert float((got - want).abs().max()) <= 1e-5
    assert expected[2] == math.ceil(low_h / 16) and expected[3] == math.ceil(low_w / 16)


def test_longer_clip_states_carry_over(golden_model):
    """Two half clips with the states passed on equal one long clip."""
    clip = torch.rand(1, 12, 3, 96, 160, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        fgr_all, pha_all, *states_all = golden_model(clip, downsample_ratio=0.5)
        fgr_a, pha_a, *states = golden_model(clip[:, :6], downsample_ratio=0.5)
        fgr_b, pha_b, *states = golden_model(clip[:, 6:], *states, downsample_ratio=0.5)
    assert float((torch.cat([pha_a, pha_b], 1) - pha_all).abs().max()) <= 1e-5
    assert float((torch.cat([fgr_a, fgr_b], 1) - fgr_all).abs().max()) <= 1e-5
    for a, b in zip(states, states_all):
        assert float((a - b).abs().max()) <= 1e-5


def test_refiner_skipped_only_at_ratio_one(golden_model):
    """At ratio 1 the output is the clamped low-res prediction (no refiner); the refiner changes it elsewhere."""
    src = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        fgr, pha, *_ = golden_model(src, downsample_ratio=1.0)
        hid, _ = golden_model.encode_decode(src, [None] * 4)
        fgr_res, pha_raw = golden_model.project_mat(hid).split([3, 1], dim=1)
    assert torch.equal(pha, pha_raw.clamp(0, 1))
    assert torch.equal(fgr, (fgr_res + src).clamp(0, 1))


def test_batch_of_two_equals_two_batches_of_one(golden_model):
    src = torch.rand(2, 3, 72, 128, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        fgr, pha, *_ = golden_model(src, downsample_ratio=0.5)
        fgr0, pha0, *_ = golden_model(src[:1], downsample_ratio=0.5)
    assert float((pha[:1] - pha0).abs().max()) <= 1e-5


