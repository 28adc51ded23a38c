"""MobileNetV3-Large encoder (Howard et al., "Searching for MobileNetV3", arXiv 1905.02244), as RVM uses it.

The last three inverted-residual blocks are dilated (stride 1, dilation 2) so the output stride is 16.
Submodule names follow torchvision's ``mobilenet_v3_large`` so that its ImageNet weights and the released
RVM checkpoints load unchanged (``features.N.block.M...``). The input is RGB in [0, 1]; ImageNet
normalisation happens inside.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["MobileNetV3LargeEncoder", "BlockConfig", "LARGE_BLOCKS", "make_divisible"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPS = 1e-3  # MobileNetV3 uses eps 1e-3 (and momentum 0.01) in every BatchNorm of the backbone.
BN_MOMENTUM = 0.01


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round ``value`` to a multiple of ``divisor``, never going below 90 % of it (MobileNet convention)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


@dataclass(frozen=True)
class BlockConfig:
    in_ch: int  # channels entering the block
    kernel: int  # depthwise kernel size
    expanded: int  # channels after the 1x1 expansion
    out_ch: int  # channels after the projection
    use_se: bool  # squeeze-and-excitation after the depthwise conv
    hardswish: bool  # hardswish (True) or ReLU (False) activations
    stride: int  # nominal stride (replaced by dilation in the dilated tail)
    dilation: int  # depthwise dilation


# MobileNetV3-Large, with the last three blocks dilated for output stride 16.
LARGE_BLOCKS: tuple[BlockConfig, ...] = (
    BlockConfig(16, 3, 16, 16, False, False, 1, 1),
    BlockConfig(16, 3, 64, 24, False, False, 2, 1),
    BlockConfig(24, 3, 72, 24, False, False, 1, 1),
    BlockConfig(24, 5, 72, 40, True, False, 2, 1),
    BlockConfig(40, 5, 120, 40, True, False, 1, 1),
    BlockConfig(40, 5, 120, 40, True, False, 1, 1),
    BlockConfig(40, 3, 240, 80, False, True, 2, 1),
    BlockConfig(80, 3, 200, 80, False, True, 1, 1),
    BlockConfig(80, 3, 184, 80, False, True, 1, 1),
    BlockConfig(80, 3, 184, 80, False, True, 1, 1),
    BlockConfig(80, 3, 480, 112, True, True, 1, 1),
    BlockConfig(112, 3, 672, 112, True, True, 1, 1),
    BlockConfig(112, 5, 672, 160, True, True, 2, 2),
    BlockConfig(160, 5, 960, 160, True, True, 1, 2),
    BlockConfig(160, 5, 960, 160, True, True, 1, 2),
)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class ConvBNAct(nn.Sequential):
    """conv (no bias) + BN + optional activation; indices 0/1/2 match torchvision's Conv2dNormActivation."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1,
                 dilation: int = 1, act: type[nn.Module] | None = nn.ReLU) -> None:
        padding = (kernel - 1) // 2 * dilation
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride, padding, dilation=dilation, groups=groups, bias=False),
            _bn(out_ch),
        ]
        if act is not None:
            layers.append(act(inplace=True))
        super().__init__(*layers)


class SqueezeExcitation(nn.Module):
    """Global pool -> fc1 (1x1, bias) -> ReLU -> fc2 (1x1, bias) -> hardsigmoid, used as a channel gate."""

    def __init__(self, channels: int, squeeze: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = self.fc2(F.relu(self.fc1(scale)))
        return x * F.hardsigmoid(scale)


class InvertedResidual(nn.Module):
    def __init__(self, cfg: BlockConfig) -> None:
        super().__init__()
        act = nn.Hardswish if cfg.hardswish else nn.ReLU
        stride = 1 if cfg.dilation > 1 else cfg.stride
        self.use_residual = cfg.stride == 1 and cfg.in_ch == cfg.out_ch
        layers: list[nn.Module] = []
        if cfg.expanded != cfg.in_ch:
            layers.append(ConvBNAct(cfg.in_ch, cfg.expanded, 1, act=act))
        layers.append(ConvBNAct(cfg.expanded, cfg.expanded, cfg.kernel, stride, groups=cfg.expanded,
                                dilation=cfg.dilation, act=act))
        if cfg.use_se:
            layers.append(SqueezeExcitation(cfg.expanded, make_divisible(cfg.expanded // 4, 8)))
        layers.append(ConvBNAct(cfg.expanded, cfg.out_ch, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        y = self.block(x)
        return x + y if self.use_residual else y


class MobileNetV3LargeEncoder(nn.Module):
    """Returns features at strides 2, 4, 8, 16 with 16, 24, 40, 960 channels."""

    channels = (16, 24, 40, 960)
    # features[i] indices after which f1, f2, f3 and f4 are tapped.
    taps = (1, 3, 6, 16)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [ConvBNAct(3, 16, 3, stride=2, act=nn.Hardswish)]
        layers += [InvertedResidual(cfg) for cfg in LARGE_BLOCKS]
        layers.append(ConvBNAct(160, 960, 1, act=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> list[Tensor]:
        x = (x - self.mean) / self.std
        feats: list[Tensor] = []
        start = 0
        for tap in self.taps:
            for index in range(start, tap + 1):
                x = self.features[index](x)
            feats.append(x)
            start = tap + 1
        return feats
