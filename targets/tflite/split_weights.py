"""Split-precision weights for integer-only int8 (issue 17): ``conv(x, W)`` as ``conv(x, W_hi) + conv(x, W_lo)``.

``W_hi`` is ``W`` on its own per-output-channel int8 grid (scale ``max|W| / 127``), ``W_lo = W - W_hi`` the
remainder; a per-channel int8 quantiser then stores ``W_hi`` exactly and ``W_lo`` with a grid ~254x finer, so the
pair carries ~15-bit weights while every weight tensor is int8 and every op integer (AI Edge Quantizer 0.10 has no
int16 weights). In float the two convolutions sum to ``W`` up to float32 rounding (the fp32 graph's outputs move
by ~1e-7). Used on ``project_mat`` (16 -> 4 channels, 64 MACs per low-res pixel), whose int8 weights alone moved
alpha by MAD 2.1e-2 on the golden weights (docs/tflite.md, "int8 recipes"), and, in the 16x8 recipe, on every
convolution of MobileNetV3's stem and blocks 1-4, whose int8 weights alone kept the smoke-trained weights' alpha
above 1e-2 (:data:`EARLY_BACKBONE`; a conv followed by a BatchNorm is folded first, so the pair carries the folded
weight and the BN becomes an identity).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

__all__ = ["SplitPrecisionConv", "split_precision", "SPLIT_MODULES", "EARLY_BACKBONE", "early_backbone_convs"]

SPLIT_MODULES = ("project_mat.conv",)  # module paths, state-dict style
# MobileNetV3's stem and inverted-residual blocks 1-4 (1/2 and 1/4 resolution): per-layer weight sensitivity on the
# smoke-trained weights put them first (docs/tflite.md, "int8 recipes"); split from block 5 on changed nothing.
EARLY_BACKBONE = tuple(f"backbone.features.{i}" for i in range(5))


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


def _folded(conv, bn):
    """``bn(conv(x))`` as one Conv2d with a bias (targets.traced.batchnorm.folded_conv_bn)."""
    import torch

    from targets.traced.batchnorm import folded_conv_bn

    fused = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                            conv.dilation, conv.groups, bias=True).to(conv.weight.device)
    weight, bias = folded_conv_bn(conv, bn)
    with torch.no_grad():
        fused.weight.copy_(weight)
        fused.bias.copy_(bias)
    return fused.eval()


def early_backbone_convs(model, prefixes: tuple[str, ...] = EARLY_BACKBONE) -> tuple[str, ...]:
    """Module paths of every conv + BatchNorm pair (``nn.Sequential`` whose items 0 and 1 are ``Conv2d`` and
    ``BatchNorm2d``) at or under ``prefixes``; empty for a model without them (the ResNet-50 variant)."""
    import torch

    found = []
    for name, module in model.named_modules():
        if not any(name == p or name.startswith(p + ".") for p in prefixes):
            continue
        if isinstance(module, torch.nn.Sequential) and len(module) >= 2 and \
                isinstance(module[0], torch.nn.Conv2d) and isinstance(module[1], torch.nn.BatchNorm2d):
            found.append(name)
    return tuple(found)


def SplitPrecisionConv(conv):  # noqa: N802 (a factory named after the module it returns; torch imported lazily)
    """The split-precision module for one ``nn.Conv2d`` (weights copied; the conv itself is not changed)."""
    return _make(conv)


@contextmanager
def split_precision(model, paths: tuple[str, ...] = SPLIT_MODULES) -> Iterator[None]:
    """Replace the convolutions at ``paths`` by their split-precision pair while the block runs; restore them
    afterwards (also on error). A path may name a ``Conv2d`` or a conv + BatchNorm ``nn.Sequential``
    (:func:`early_backbone_convs`), whose BN is folded into the pair and replaced by an identity. Raises
    AttributeError for a path the model does not have."""
    import torch

    swapped = []
    try:
        for path in paths:
            module = model.get_submodule(path)
            if isinstance(module, torch.nn.Sequential):  # conv + BN: fold, split, BN -> identity
                replacements = [(module, "0", _make(_folded(module[0], module[1]))), (module, "1", torch.nn.Identity())]
            else:
                parent_path, _, leaf = path.rpartition(".")
                parent = model.get_submodule(parent_path) if parent_path else model
                replacements = [(parent, leaf, _make(module))]
            for parent, leaf, new in replacements:  # a Sequential's items are attributes "0", "1", ... too
                swapped.append((parent, leaf, getattr(parent, leaf)))
                setattr(parent, leaf, new)
        yield
    finally:
        for parent, leaf, original in reversed(swapped):
            setattr(parent, leaf, original)
