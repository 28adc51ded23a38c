"""Folding an eval-mode BatchNorm2d into the Conv2d before it, shared by the exporters that need it (CUDA's
``fold_batchnorm``, TFLite's split-precision weights)."""
from __future__ import annotations

__all__ = ["folded_conv_bn"]


def folded_conv_bn(conv, bn):
    """``(weight, bias)`` of one convolution equal to ``bn(conv(x))`` with ``bn``'s running statistics:
    ``w * s`` and ``(b - mean) * s + beta`` per output channel, ``s = gamma / sqrt(var + eps)`` (the eval-mode
    BatchNorm formula). Computed in float64, returned in the conv weight's dtype; ``weight`` has the conv's shape
    ``[out, in / groups, kh, kw]``, ``bias`` ``[out]`` (zeros for a conv without one)."""
    import torch

    scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.double() + bn.eps)
    weight = conv.weight.detach().double() * scale.reshape(-1, 1, 1, 1)
    bias = conv.bias.detach().double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale + bn.bias.detach().double()
    dtype = conv.weight.dtype
    return weight.to(dtype), bias.to(dtype)
