"""MattingNetwork: RVM (Lin et al., arXiv 2108.11515), encoder + LR-ASPP + recurrent decoder + refiner.

forward(src, r1..r4, downsample_ratio, segmentation_pass) follows the original contract: ``src`` is RGB in [0, 1],
``[B,3,H,W]`` or a clip ``[B,T,3,H,W]``; ``None`` states mean zeros; a clip returns the last frame's states.
The refiner runs only when ``downsample_ratio != 1``. Export wrappers compose the public pieces below
(:meth:`downsample`, :meth:`encode_decode`, :meth:`compose`) instead of branching inside ``forward``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .decoder import RecurrentDecoder
from .errors import ModelInputError
from .guided_filter import REFINERS
from .lraspp import LRASPP
from .mobilenetv3 import MobileNetV3LargeEncoder
from .resnet import ResNet50Encoder

__all__ = ["MattingNetwork", "VariantConfig", "VARIANTS", "lowres_size",
           "state_shapes", "Projection"]

Variant = Literal["mobilenetv3", "resnet50"]
Refiner = Literal["deep_guided_filter", "fast_guided_filter"]


@dataclass(frozen=True)
class VariantConfig:
    encoder: type[nn.Module]  # backbone class, torchvision key names
    aspp_in: int  # channels of the stride-16 backbone output
    aspp_out: int  # channels after LR-ASPP (the decoder's deepest feature)
    decoder_ch: tuple[int, int, int, int]  # output channels of decode3, decode2, decode1, decode0

    @property
    def feature_ch(self) -> tuple[int, int, int, int]:
        f1, f2, f3, _ = self.encoder.channels  # type: ignore[attr-defined]
        return (f1, f2, f3, self.aspp_out)

    @property
    def state_ch(self) -> tuple[int, int, int, int]:
        """Channels of r1..r4: the ConvGRU halves of decode1, decode2, decode3 and decode4."""
        d3, d2, d1, _ = self.decoder_ch
        return (d1 // 2, d2 // 2, d3 // 2, self.aspp_out // 2)


VARIANTS: dict[str, VariantConfig] = {
    "mobilenetv3": VariantConfig(MobileNetV3LargeEncoder, 960, 128, (80, 40, 32, 16)),
    "resnet50": VariantConfig(ResNet50Encoder, 2048, 256, (128, 64, 32, 16)),
}


def lowres_size(height: int, width: int, ratio: float) -> tuple[int, int]:
    """Size of ``src_sm``: ``floor(H*ratio), floor(W*ratio)`` as PyTorch computes it (in double precision)."""
    if ratio == 1.0:
        return height, width
    return math.floor(float(height) * ratio), math.floor(float(width) * ratio)


def _half(n: int) -> int:
    return (n + 1) // 2  # every stride-2 stage maps n -> ceil(n / 2)


def state_shapes(variant: str, height: int, width: int, ratio: float,
                 batch: int = 1) -> tuple[tuple[int, int, int, int], ...]:
    """Shapes of r1..r4 for a ``height x width`` input at ``ratio`` (r_k lives at 1/2^k of the low-res size)."""
    h, w = lowres_size(height, width, ratio)
    shapes = []
    for channels in VARIANTS[variant].state_ch:
        h, w = _half(h), _half(w)
        shapes.append((batch, channels, h, w))
    return tuple(shapes)


class Projection(nn.Module):
    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


def _as_float_ratio(ratio: float | Tensor) -> float:
    if isinstance(ratio, Tensor):
        if ratio.numel() != 1:
            raise ModelInputError(f"downsample_ratio must be a number, got a tensor of shape {tuple(ratio.shape)}")
        ratio = float(ratio.item())
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise ModelInputError(f"downsample_ratio must be a number in (0, 1], got {type(ratio).__name__}")
    ratio = float(ratio)
    if not (0.0 < ratio <= 1.0) or math.isnan(ratio):
        raise ModelInputError(f"downsample_ratio must be in (0, 1], got {ratio}")
    return ratio


class MattingNetwork(nn.Module):
    def __init__(self, variant: Variant = "mobilenetv3", refiner: Refiner = "deep_guided_filter") -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; expected one of {sorted(VARIANTS)}")
        if refiner not in REFINERS:
            raise ValueError(f"unknown refiner {refiner!r}; expected one of {sorted(REFINERS)}")
        self.variant = variant
        self.refiner_name = refiner
        cfg = VARIANTS[variant]
        self.config = cfg
        self.backbone = cfg.encoder()
        self.aspp = LRASPP(cfg.aspp_in, cfg.aspp_out)
        self.decoder = RecurrentDecoder(cfg.feature_ch, cfg.decoder_ch)
        self.project_mat = Projection(cfg.decoder_ch[3], 4)
        self.project_seg = Projection(cfg.decoder_ch[3], 1)
        self.refiner = REFINERS[refiner](cfg.decoder_ch[3])

    # -- pieces shared by forward() and the export wrappers -------------------------------------------------------
    @staticmethod
    def downsample(frames: Tensor, ratio: float) -> Tensor:
        """Bilinear resize by ``ratio`` with the scale (not the rounded size) driving the sampling grid."""
        return F.interpolate(frames, scale_factor=ratio, mode="bilinear", align_corners=False,
                             recompute_scale_factor=False)

    def encode_decode(self, src_sm: Tensor, states: Sequence[Tensor | None],
                      time: int | None = None) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Backbone, LR-ASPP and recurrent decoder on flattened low-res frames ``[B*T,3,h,w]``."""
        f1, f2, f3, f4 = self.backbone(src_sm)
        f4 = self.aspp(f4)
        r1, r2, r3, r4 = states
        return self.decoder(src_sm, f1, f2, f3, f4, (r1, r2, r3, r4), time)

    @staticmethod
    def compose(src: Tensor, fgr_residual: Tensor, pha: Tensor) -> tuple[Tensor, Tensor]:
        return (fgr_residual + src).clamp(0.0, 1.0), pha.clamp(0.0, 1.0)

    # -- the public contract ---------------------------------------------------------------------------------------
    def forward(self, src: Tensor, r1: Tensor | None = None, r2: Tensor | None = None, r3: Tensor | None = None,
                r4: Tensor | None = None, downsample_ratio: float = 1.0,
                segmentation_pass: bool = False) -> list[Tensor]:
        ratio = self.check_inputs(src, (r1, r2, r3, r4), downsample_ratio)
        time = src.size(1) if src.dim() == 5 else None
        frames = src.flatten(0, 1) if time is not None else src
        src_sm = self.downsample(frames, ratio) if ratio != 1.0 else frames
        hid, states = self.encode_decode(src_sm, (r1, r2, r3, r4), time)
        if segmentation_pass:
            return [self._unflatten(self.project_seg(hid), time), *states]
        fgr_residual, pha = self.project_mat(hid).split([3, 1], dim=1)
        if ratio != 1.0:
            fgr_residual, pha = self.refiner(frames, src_sm, fgr_residual, pha, hid)
        fgr, pha = self.compose(frames, fgr_residual, pha)
        return [self._unflatten(fgr, time), self._unflatten(pha, time), *states]

    @staticmethod
    def _unflatten(x: Tensor, time: int | None) -> Tensor:
        return x if time is None else x.unflatten(0, (-1, time))

    def check_inputs(self, src: Tensor, states: Sequence[Tensor | None], downsample_ratio: float | Tensor) -> float:
        """Validate the forward contract; return the ratio as a float. Raises :class:`ModelInputError`."""
        if not isinstance(src, Tensor):
            raise ModelInputError(f"src must be a torch.Tensor, got {type(src).__name__}")
        if src.dim() not in (4, 5):
            raise ModelInputError(f"src must be [B,3,H,W] or [B,T,3,H,W] (rank 4 or 5), got rank {src.dim()} "
                                  f"with shape {tuple(src.shape)}")
        channel_dim = src.dim() - 3
        if src.size(channel_dim) != 3:
            raise ModelInputError(f"src must have 3 (RGB) channels in dim {channel_dim}, got {src.size(channel_dim)} "
                                  f"(shape {tuple(src.shape)}); drop alpha or convert to RGB first")
        if not src.is_floating_point():
            raise ModelInputError(f"src must be a floating-point tensor with values in [0, 1], got {src.dtype}")
        ratio = _as_float_ratio(downsample_ratio)
        height, width = src.shape[-2:]
        low_h, low_w = lowres_size(int(height), int(width), ratio)
        if low_h < 1 or low_w < 1:
            raise ModelInputError(f"downsample_ratio {ratio} shrinks {width}x{height} to {low_w}x{low_h}; "
                                  f"use a ratio of at least {1.0 / min(int(height), int(width)):.4g}")
        expected = state_shapes(self.variant, int(height), int(width), ratio, batch=src.size(0))
        for index, (state, shape) in enumerate(zip(states, expected), start=1):
            if state is None:
                continue
            if not isinstance(state, Tensor):
                raise ModelInputError(f"r{index} must be a Tensor or None, got {type(state).__name__}")
            if tuple(state.shape) != shape:
                raise ModelInputError(f"r{index} must have shape {list(shape)} for a {width}x{height} input at "
                                      f"downsample_ratio {ratio} ({self.variant}), got {list(state.shape)}; "
                                      f"pass None to start from zeros")
        return ratio
