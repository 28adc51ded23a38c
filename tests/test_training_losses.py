"""Training losses against values worked out by hand on small tensors."""
from __future__ import annotations

import math

import pytest
import torch

from training.losses import (gaussian_kernel, laplacian_loss, laplacian_pyramid, matting_loss, segmentation_loss,
                             temporal_coherence_loss)

pytestmark = pytest.mark.training


def _checkerboard(size: int) -> torch.Tensor:
    idx = torch.arange(size)
    return ((idx[:, None] + idx[None, :]) % 2 * 2 - 1).float()  # +-1 alternating in both directions


def test_gaussian_kernel_is_binomial_over_256():
    kernel = gaussian_kernel(1)[0, 0]
    assert kernel[2, 2].item() == 36 / 256
    assert kernel[0, 0].item() == 1 / 256
    assert kernel[0, 2].item() == 6 / 256
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-7)


def test_laplacian_of_a_constant_is_zero_at_every_level():
    # Blur of a constant is the constant; zero insertion x4 then blur restores it: every band is 0.
    pyramid = laplacian_pyramid(torch.full((1, 1, 64, 64), 0.7))
    assert len(pyramid) == 5
    assert [p.shape[-1] for p in pyramid] == [64, 32, 16, 8, 4]
    assert all(p.abs().max().item() < 1e-6 for p in pyramid)
    # So two different constants have Laplacian loss 0, whatever their L1 distance.
    assert laplacian_loss(torch.full((1, 1, 1, 64, 64), 0.9), torch.zeros(1, 1, 1, 64, 64)).item() < 1e-6


def test_laplacian_of_a_checkerboard_lives_in_level_zero_only():
    # [1,4,6,4,1]/16 on +-1 alternating gives (1-4+6-4+1)/16 = 0, and reflect padding keeps the alternation:
    # the blur is 0, so level 0 is the checkerboard itself (weight 2^0/5) and levels 1..4 are 0.
    amplitude = 0.25
    pred = 0.5 + amplitude * _checkerboard(64)[None, None, None]
    true = torch.full_like(pred, 0.5)
    pyramid = laplacian_pyramid(pred[:, 0])
    assert torch.allclose(pyramid[0], amplitude * _checkerboard(64)[None, None], atol=1e-6)
    assert all(p.abs().max().item() < 1e-6 for p in pyramid[1:])
    assert laplacian_loss(pred, true).item() == pytest.approx(amplitude * 1 / 5, abs=1e-6)


def test_laplacian_loss_weights_level_l_by_2_to_the_l_over_5(monkeypatch):
    # Replace the pyramid by levels whose L1 distances are known: level l differs by 1 everywhere.
    import training.losses as losses

    def fake_pyramid(x, levels=5):
        return [x.new_full((1, 1, 2, 2), float(x.mean() > 0)) for _ in range(levels)]

    monkeypatch.setattr(losses, "laplacian_pyramid", fake_pyramid)
    value = losses.laplacian_loss(torch.ones(1, 1, 1, 64, 64), torch.zeros(1, 1, 1, 64, 64)).item()
    assert value == pytest.approx((1 + 2 + 4 + 8 + 16) / 5, abs=1e-6)


def test_laplacian_loss_is_linear_in_the_difference():
    # A constant difference contributes nothing; a checkerboard difference of amplitude 0.1 contributes 0.1/5.
    pred = 0.3 + 0.1 * _checkerboard(64)[None, None, None]
    assert laplacian_loss(pred, torch.zeros_like(pred)).item() == pytest.approx(0.1 / 5, abs=1e-6)


def test_laplacian_pyramid_needs_64_pixels():
    with pytest.raises(ValueError, match="at least 64"):
        laplacian_pyramid(torch.zeros(1, 1, 32, 64))


def test_temporal_coherence_by_hand():
    # pred frames 0 -> 1 (difference 1 everywhere), true static (difference 0): MSE = 1.
    pred = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])[None]
    true = torch.zeros_like(pred)
    assert temporal_coherence_loss(pred, true).item() == 1.0
    # Same change in both: 0.
    assert temporal_coherence_loss(pred, pred + 0.3).item() == pytest.approx(0.0, abs=1e-7)


def _clip(values: list[float], channels: int = 1, size: int = 64) -> torch.Tensor:
    """[1, T, C, size, size] with frame t filled with values[t]."""
    return torch.stack([torch.full((channels, size, size), v) for v in values])[None]


def test_matting_loss_terms_by_hand():
    # Constant frames: the Laplacian terms vanish and every other term is a simple mean.
    true_pha = _clip([0.5, 0.5])
    pred_pha = _clip([0.2, 0.6])  # |diff| 0.3 and 0.1 -> L1 0.2; frame difference 0.4 vs 0 -> 5 * 0.16 = 0.8
    true_fgr = _clip([0.4, 0.4], 3)
    pred_fgr = _clip([0.5, 0.4], 3)  # mask is all ones: L1 0.05; difference -0.1 vs 0 -> 5 * 0.01 = 0.05
    losses = matting_loss(pred_fgr, pred_pha, true_fgr, true_pha)
    assert losses["pha_l1"].item() == pytest.approx(0.2, abs=1e-6)
    assert losses["pha_laplacian"].item() == pytest.approx(0.0, abs=1e-6)
    assert losses["pha_coherence"].item() == pytest.approx(0.8, abs=1e-6)
    assert losses["fgr_l1"].item() == pytest.approx(0.05, abs=1e-6)
    assert losses["fgr_coherence"].item() == pytest.approx(0.05, abs=1e-6)
    assert losses["total"].item() == pytest.approx(0.2 + 0.8 + 0.05 + 0.05, abs=1e-6)


def test_foreground_terms_only_count_pixels_where_true_alpha_is_positive():
    true_pha = _clip([0.0, 0.0])
    true_pha[..., :16, :] = 1.0  # a quarter of the rows is foreground
    pred_pha = true_pha.clone()
    true_fgr = _clip([0.0, 0.0], 3)
    pred_fgr = _clip([1.0, 1.0], 3)  # wrong by 1 everywhere, but only the masked quarter counts
    losses = matting_loss(pred_fgr, pred_pha, true_fgr, true_pha)
    assert losses["fgr_l1"].item() == pytest.approx(0.25, abs=1e-6)  # mean over all pixels of the masked error
    assert losses["fgr_coherence"].item() == pytest.approx(0.0, abs=1e-7)
    assert losses["pha_l1"].item() == 0.0
    assert losses["total"].item() == pytest.approx(0.25, abs=1e-6)


def test_segmentation_loss_is_bce_with_logits():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    target = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    expected = (math.log(2) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)) + math.log(2)) / 4
    assert segmentation_loss(logits, target).item() == pytest.approx(expected, abs=1e-6)
