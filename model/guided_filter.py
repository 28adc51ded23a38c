"""Refiners that lift the low-resolution prediction to full resolution.

Each refiner splits into ``coefficients`` (low-res A, b) and :func:`apply_coefficients` (upsample, A*x + b), so that
an exporter can gate the coefficients without re-implementing the filter.

Deep Guided Filter (Wu et al., "Fast End-to-End Trainable Guided Filter", arXiv 1803.05619) with a learned 3x3 box
filter and a small 1x1 conv net for A; Fast Guided Filter (He & Sun, arXiv 1505.00996) with fixed separable box means
and eps 1e-5. Both guide on [RGB, mean(RGB)] and filter [fgr_residual (3), pha (1)].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["DeepGuidedFilterRefiner", "FastGuidedFilterRefiner", "REFINERS", "apply_coefficients"]


def _with_gray(rgb: Tensor) -> Tensor:
    return torch.cat([rgb, rgb.mean(dim=1, keepdim=True)], dim=1)


def _resize_to(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=(like.size(2), like.size(3)), mode="bilinear", align_corners=False)


def apply_coefficients(a: Tensor, b: Tensor, fine_src: Tensor) -> tuple[Tensor, Tensor]:
    """Upsample the low-res coefficients to the full frame and apply them: returns (fgr_residual, pha)."""
    fine_x = _with_gray(fine_src)
    out = _resize_to(a, fine_x) * fine_x + _resize_to(b, fine_x)
    fgr, pha = out.split([3, 1], dim=1)
    return fgr, pha


class _GuidedFilterRefiner(nn.Module):
    """Shared guided-filter algebra; subclasses give the box mean and the slope A from (cov_xy, var_x, hidden)."""

    def _box(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def _slope(self, cov_xy: Tensor, var_x: Tensor, base_hid: Tensor) -> Tensor:
        raise NotImplementedError

    def coefficients(self, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor,
                     base_hid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Low-res linear coefficients (A, b) of out = A * [rgb, gray] + b, and the filtered input y."""
        return self.coefficients_of(base_src, torch.cat([base_fgr, base_pha], dim=1), base_hid)

    def coefficients_of(self, base_src: Tensor, base_y: Tensor, base_hid: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`coefficients` with fgr and pha given as one [N, 4, h, w] tensor ``base_y`` (the projection's
        output as it is: exporters skip the split and concat that give the same tensor back)."""
        base_x = _with_gray(base_src)
        mean_x = self._box(base_x)
        mean_y = self._box(base_y)
        cov_xy = self._box(base_x * base_y) - mean_x * mean_y
        var_x = self._box(base_x * base_x) - mean_x * mean_x
        a = self._slope(cov_xy, var_x, base_hid)
        b = mean_y - a * mean_x
        return a, b, base_y

    def forward(self, fine_src: Tensor, base_src: Tensor, base_fgr: Tensor, base_pha: Tensor,
                base_hid: Tensor) -> tuple[Tensor, Tensor]:
        a, b, _ = self.coefficients(base_src, base_fgr, base_pha, base_hid)
        return apply_coefficients(a, b, fine_src)


class DeepGuidedFilterRefiner(_GuidedFilterRefiner):
    def __init__(self, hid_ch: int = 16) -> None:
        super().__init__()
        self.box_filter = nn.Conv2d(4, 4, kernel_size=3, padding=1, bias=False, groups=4)
        self.box_filter.weight.data.fill_(1.0 / 9.0)  # initial value only: the checkpoint's learned weight replaces it
        self.conv = nn.Sequential(
            nn.Conv2d(4 * 2 + hid_ch, hid_ch, 1, bias=False), nn.BatchNorm2d(hid_ch), nn.ReLU(True),
            nn.Conv2d(hid_ch, hid_ch, 1, bias=False), nn.BatchNorm2d(hid_ch), nn.ReLU(True),
            nn.Conv2d(hid_ch, 4, 1, bias=True),
        )

    def _box(self, x: Tensor) -> Tensor:
        return self.box_filter(x)

    def _slope(self, cov_xy: Tensor, var_x: Tensor, base_hid: Tensor) -> Tensor:
        return self.conv(torch.cat([cov_xy, var_x, base_hid], dim=1))


class FastGuidedFilterRefiner(_GuidedFilterRefiner):
    eps = 1e-5

    def __init__(self, hid_ch: int = 16) -> None:
        super().__init__()
        del hid_ch  # the fast guided filter has no parameters and ignores the hidden features
        # Separable 3-tap box kernels for the 4 guided channels; fixed, so not part of the state dict.
        self.register_buffer("kernel_x", torch.full((4, 1, 1, 3), 1.0 / 3.0), persistent=False)
        self.register_buffer("kernel_y", torch.full((4, 1, 3, 1), 1.0 / 3.0), persistent=False)

    def _box(self, x: Tensor) -> Tensor:
        """Separable zero-padded 3-tap mean, horizontal then vertical, depthwise."""
        x = F.conv2d(x, self.kernel_x.to(x.dtype), padding=(0, 1), groups=4)
        return F.conv2d(x, self.kernel_y.to(x.dtype), padding=(1, 0), groups=4)

    def _slope(self, cov_xy: Tensor, var_x: Tensor, base_hid: Tensor) -> Tensor:
        del base_hid
        return cov_xy / (var_x + self.eps)


REFINERS: dict[str, type[nn.Module]] = {
    "deep_guided_filter": DeepGuidedFilterRefiner,
    "fast_guided_filter": FastGuidedFilterRefiner,
}
