"""RVM's recurrent decoder (Lin et al., "Robust High-Resolution Video Matting with Temporal Guidance", arXiv 2108.11515).

Frames travel through the decoder flattened as ``[B*T, C, H, W]``; only the ConvGRUs unflatten them to step through
time. ``time=None`` means single frames (``T`` is not a dimension of the caller's input).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["ConvGRU", "RecurrentDecoder", "upsample2x"]

States = tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]


def upsample2x(x: Tensor) -> Tensor:
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


class ConvGRU(nn.Module):
    """Convolutional GRU: r, z = sigmoid(conv([x, h])); c = tanh(conv([x, r*h])); h' = (1-z)*h + z*c."""

    def __init__(self, channels: int, kernel: int = 3) -> None:
        super().__init__()
        self.channels = channels
        self.ih = nn.Sequential(nn.Conv2d(channels * 2, channels * 2, kernel, padding=kernel // 2), nn.Sigmoid())
        self.hh = nn.Sequential(nn.Conv2d(channels * 2, channels, kernel, padding=kernel // 2), nn.Tanh())

    def cell(self, x: Tensor, h: Tensor) -> Tensor:
        r, z = self.ih(torch.cat([x, h], dim=1)).split(self.channels, dim=1)
        c = self.hh(torch.cat([x, r * h], dim=1))
        return (1 - z) * h + z * c

    def forward(self, x: Tensor, h: Tensor | None, time: int | None) -> tuple[Tensor, Tensor]:
        if time is None:
            h = torch.zeros_like(x) if h is None else h
            h = self.cell(x, h)
            return h, h
        frames = x.unflatten(0, (-1, time))
        h = torch.zeros_like(frames[:, 0]) if h is None else h
        outputs = []
        for t in range(time):
            h = self.cell(frames[:, t], h)
            outputs.append(h)
        return torch.stack(outputs, dim=1).flatten(0, 1), h


class BottleneckBlock(nn.Module):
    """decode4: ConvGRU on the second half of the channels of the LR-ASPP output."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.gru = ConvGRU(channels // 2)

    def forward(self, x: Tensor, r: Tensor | None, time: int | None) -> tuple[Tensor, Tensor]:
        a, b = x.split(self.channels // 2, dim=1)
        b, r = self.gru(b, r, time)
        return torch.cat([a, b], dim=1), r


def _conv_bn_relu(in_ch: int, out_ch: int) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(True)]


class UpsamplingBlock(nn.Module):
    """decode3..1: x2 upsample, crop to the skip's size, concat [x, skip, image], conv-BN-ReLU, ConvGRU on half."""

    def __init__(self, in_ch: int, skip_ch: int, src_ch: int, out_ch: int) -> None:
        super().__init__()
        self.out_ch = out_ch
        self.conv = nn.Sequential(*_conv_bn_relu(in_ch + skip_ch + src_ch, out_ch))
        self.gru = ConvGRU(out_ch // 2)

    def forward(self, x: Tensor, skip: Tensor, s: Tensor, r: Tensor | None,
                time: int | None) -> tuple[Tensor, Tensor]:
        x = upsample2x(x)[:, :, : skip.size(2), : skip.size(3)]
        x = self.conv(torch.cat([x, skip, s], dim=1))
        a, b = x.split(self.out_ch // 2, dim=1)
        b, r = self.gru(b, r, time)
        return torch.cat([a, b], dim=1), r


class OutputBlock(nn.Module):
    """decode0: x2 upsample, crop to the low-res image, concat [x, image], two conv-BN-ReLU."""

    def __init__(self, in_ch: int, src_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(*_conv_bn_relu(in_ch + src_ch, out_ch), *_conv_bn_relu(out_ch, out_ch))

    def forward(self, x: Tensor, s: Tensor) -> Tensor:
        x = upsample2x(x)[:, :, : s.size(2), : s.size(3)]
        return self.conv(torch.cat([x, s], dim=1))


class RecurrentDecoder(nn.Module):
    def __init__(self, feature_ch: Sequence[int], decoder_ch: Sequence[int]) -> None:
        super().__init__()
        self.avgpool = nn.AvgPool2d(2, 2, count_include_pad=False, ceil_mode=True)
        self.decode4 = BottleneckBlock(feature_ch[3])
        self.decode3 = UpsamplingBlock(feature_ch[3], feature_ch[2], 3, decoder_ch[0])
        self.decode2 = UpsamplingBlock(decoder_ch[0], feature_ch[1], 3, decoder_ch[1])
        self.decode1 = UpsamplingBlock(decoder_ch[1], feature_ch[0], 3, decoder_ch[2])
        self.decode0 = OutputBlock(decoder_ch[2], 3, decoder_ch[3])

    def forward(self, s0: Tensor, f1: Tensor, f2: Tensor, f3: Tensor, f4: Tensor, states: States,
                time: int | None) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
        r1, r2, r3, r4 = states
        s1 = self.avgpool(s0)
        s2 = self.avgpool(s1)
        s3 = self.avgpool(s2)
        x4, r4 = self.decode4(f4, r4, time)
        x3, r3 = self.decode3(x4, f3, s3, r3, time)
        x2, r2 = self.decode2(x3, f2, s2, r2, time)
        x1, r1 = self.decode1(x2, f1, s1, r1, time)
        hid = self.decode0(x1, s0)
        return hid, (r1, r2, r3, r4)
