"""Lite R-ASPP head (MobileNetV3 paper, arXiv 1905.02244, section 6.4) as RVM uses it on the stride-16 features.

``aspp1``: 1x1 conv (no bias) + BN + ReLU. ``aspp2``: global average pool + 1x1 conv (no bias) + sigmoid.
Output: ``aspp1(x) * aspp2(x)``.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["LRASPP"]


class LRASPP(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.aspp1 = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(True))
        self.aspp2 = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return self.aspp1(x) * self.aspp2(x)
