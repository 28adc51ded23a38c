"""RVM training losses (Lin et al., arXiv 2108.11515, section 3.3), on clips ``[B,T,C,H,W]``.

Matting: alpha L1 + alpha Laplacian-pyramid L1 + 5 x alpha temporal coherence + foreground L1 where the true alpha
is above 0 + 5 x foreground temporal coherence on the same mask. Segmentation: binary cross-entropy with logits.
Every term is a mean over all elements, so the mean of equal-sized per-process losses is the global-batch loss (DDP).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["matting_loss", "segmentation_loss", "laplacian_loss", "laplacian_pyramid", "temporal_coherence_loss",
           "gaussian_kernel", "LAPLACIAN_LEVELS", "TEMPORAL_WEIGHT"]

LAPLACIAN_LEVELS = 5
TEMPORAL_WEIGHT = 5.0


def gaussian_kernel(channels: int = 1, device=None, dtype=torch.float32) -> Tensor:
    """The 5x5 binomial Gaussian [1,4,6,4,1] x [1,4,6,4,1] / 256 as a depthwise kernel ``[C,1,5,5]``."""
    taps = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0], device=device, dtype=dtype)
    kernel = torch.outer(taps, taps) / 256.0
    return kernel.expand(channels, 1, 5, 5).contiguous()


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=x.size(1))


def _downsample(x: Tensor, kernel: Tensor) -> Tensor:
    return _blur(x, kernel)[:, :, ::2, ::2]


def _upsample(x: Tensor, kernel: Tensor) -> Tensor:
    """Zero-insertion x2 followed by the Gaussian scaled by 4, so a constant image stays constant."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, h * 2, w * 2)
    up[:, :, ::2, ::2] = x * 4.0
    return _blur(up, kernel)


def laplacian_pyramid(x: Tensor, levels: int = LAPLACIAN_LEVELS) -> list[Tensor]:
    """Band-pass levels of ``x`` ``[N,C,H,W]``: ``level_l = g_l - up(down(g_l))``, ``g_{l+1} = down(g_l)``.

    Each ``g_l`` is first cropped to even height and width (bottom/right) so that up(down(.)) fits it.
    The low-pass residual is not part of the pyramid.
    """
    kernel = gaussian_kernel(x.size(1), x.device, x.dtype)
    pyramid = []
    current = x
    for _ in range(levels):
        h, w = current.shape[-2:]
        if min(h, w) < 4:
            raise ValueError(f"laplacian_pyramid: {levels} levels need H and W of at least {4 * 2 ** (levels - 1)} "
                             f"(got {tuple(x.shape[-2:])})")
        current = current[:, :, : h - h % 2, : w - w % 2]
        down = _downsample(current, kernel)
        pyramid.append(current - _upsample(down, kernel))
        current = down
    return pyramid


def laplacian_loss(pred: Tensor, true: Tensor, levels: int = LAPLACIAN_LEVELS) -> Tensor:
    """sum_l 2^l / levels * L1(pyramid_l(pred), pyramid_l(true)); inputs ``[..., C, H, W]``."""
    pred = pred.reshape(-1, *pred.shape[-3:])
    true = true.reshape(-1, *true.shape[-3:])
    loss = pred.new_zeros(())
    for level, (p, t) in enumerate(zip(laplacian_pyramid(pred, levels), laplacian_pyramid(true, levels))):
        loss = loss + (2 ** level) / levels * F.l1_loss(p, t)
    return loss


def temporal_coherence_loss(pred: Tensor, true: Tensor) -> Tensor:
    """MSE between frame-to-frame differences of ``pred`` and ``true`` ``[B,T,...]`` (T >= 2)."""
    return F.mse_loss(pred[:, 1:] - pred[:, :-1], true[:, 1:] - true[:, :-1])


def matting_loss(pred_fgr: Tensor, pred_pha: Tensor, true_fgr: Tensor, true_pha: Tensor,
                 fgr_alpha_threshold: float = 0.0) -> dict[str, Tensor]:
    """All matting terms on ``[B,T,C,H,W]`` clips, computed in float32; ``total`` is what is optimised.

    The foreground terms count where ``true_pha > fgr_alpha_threshold`` (the paper: > 0). The user's clips have no
    separate foreground, only the frame, which equals the foreground where alpha is 1: they use 0.99.
    """
    pred_fgr, pred_pha, true_fgr, true_pha = (t.float() for t in (pred_fgr, pred_pha, true_fgr, true_pha))
    mask = (true_pha > fgr_alpha_threshold).float()
    pred_fgr_masked = pred_fgr * mask
    true_fgr_masked = true_fgr * mask
    losses = {
        "pha_l1": F.l1_loss(pred_pha, true_pha),
        "pha_laplacian": laplacian_loss(pred_pha, true_pha),
        "pha_coherence": TEMPORAL_WEIGHT * temporal_coherence_loss(pred_pha, true_pha),
        "fgr_l1": F.l1_loss(pred_fgr_masked, true_fgr_masked),
        "fgr_coherence": TEMPORAL_WEIGHT * temporal_coherence_loss(pred_fgr_masked, true_fgr_masked),
    }
    losses["total"] = sum(losses.values())
    return losses


def segmentation_loss(pred_logits: Tensor, true_mask: Tensor) -> Tensor:
    """Binary cross-entropy with logits (mean over all pixels); ``true_mask`` in {0, 1}."""
    return F.binary_cross_entropy_with_logits(pred_logits.float(), true_mask.float())
