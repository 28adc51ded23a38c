"""Split-precision weights for integer-only int8 (issue 17): ``conv(x, W)`` as ``conv(x, W_hi) + conv(x, W_lo)``.

``W_hi`` is ``W`` on its own per-output-channel int8 grid (scale ``max|W| / 127``), ``W_lo = W - W_hi`` the
remainder; a per-channel int8 quantiser then stores ``W_hi`` exactly and ``W_lo`` with a grid ~254x finer, so the
pair carries ~15-bit weights while every weight tensor is int8 and every op integer (AI Edge Quantizer 0.10 has no
int16 weights). In float the two convolutions sum to ``W`` up to float32 rounding (the fp32 graph's outputs move
by ~1e-7). Used on ``project_mat`` (16 -> 4 channels, 64 MACs per low-res pixel), whose int8 weights alone moved
alpha by MAD 2.1e-2 on the golden weights (docs/tflite.md, "int8 recipes").
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

__all__ = ["SplitPrecisionConv", "split_precision", "SPLIT_MODULES"]

SPLIT_MODULES = ("project_mat.conv",)  # module paths, state-dict style


def _make(conv):
    import torch

    class SplitPrecisionConv(torch.nn.Module):
        """``hi(x) + lo(x)``: ``hi`` holds the int8-grid part of the weight and the bias, ``lo`` the remainder."""

        def __init__(self) -> None:
            super().__init__()
            w = conv.weight.detach()
            scale = w.abs().amax(dim=tuple(range(1, w.dim())), keepdim=True).clamp_min(1e-12) / 127
            hi = torch.round(w / scale) * scale
            self.hi = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                      conv.padding, conv.dilation, conv.groups, bias=conv.bias is not None)
            self.lo = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                      conv.padding, conv.dilation, conv.groups, bias=False)
            with torch.no_grad():
                self.hi.weight.copy_(hi)
                self.lo.weight.copy_(w - hi)
                if conv.bias is not None:
                    self.hi.bias.copy_(conv.bias.detach())
            self.to(w.device)

        def forward(self, x):
            return self.hi(x) + self.lo(x)

    return SplitPrecisionConv().eval()


def SplitPrecisionConv(conv):  # noqa: N802 (a factory named after the module it returns; torch imported lazily)
    """The split-precision module for one ``nn.Conv2d`` (weights copied; the conv itself is not changed)."""
    return _make(conv)


@contextmanager
def split_precision(model, paths: tuple[str, ...] = SPLIT_MODULES) -> Iterator[None]:
    """Replace the convolutions at ``paths`` by their split-precision pair while the block runs; restore them
    afterwards (also on error). Raises AttributeError for a path the model does not have."""
    swapped = []
    try:
        for path in paths:
            parent_path, _, leaf = path.rpartition(".")
            parent = model.get_submodule(parent_path) if parent_path else model
            original = getattr(parent, leaf)
            setattr(parent, leaf, _make(original))
            swapped.append((parent, leaf, original))
        yield
    finally:
        for parent, leaf, original in reversed(swapped):
            setattr(parent, leaf, original)
