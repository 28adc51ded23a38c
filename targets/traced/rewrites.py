"""Export-only rewrites: the model (or torch's functions) is patched while a converter traces it, then restored.
None changes a number PyTorch computes (tests compare each with the original); they change which ops a runtime sees.

- Ceil-mode average pool (the decoder's 2x2/2 pool, padding not counted) -> zero pad + AVERAGE_POOL_2D + a
  constant rescale of the border (after the pool for the web export; before it for TFLite, so that no PAD feeds
  the pool, which LiteRT's GPU accelerator would merge into a pool that stops counting the zeros). litert-torch
  otherwise emits STABLEHLO_REDUCE_WINDOW, which AI Edge Quantizer cannot quantise and GPU delegates do not run.
  (TFLite, web)
- ``clamp(x, 0, 1)`` (the final clamps of fgr and pha) -> ``clamp(x, -0.0, 1.0)``: the same values (IEEE -0.0 ==
  0.0; a negative input gives -0.0 instead of 0.0), but the TFLite converter fuses a (0, 1) clamp into RELU_0_TO_1,
  which LiteRT's GPU accelerator refuses and XNNPACK leaves to the interpreter, while these bounds become
  MAXIMUM + MINIMUM, which both run. (TFLite: :func:`gpu_friendly`)
- ONNX mobile providers (:func:`mobile_friendly`): hardswish / hardsigmoid written as PyTorch's own CPU kernels
  compute them (``x * clamp(x + 3, 0, 6) / 6``; ``clamp(x + 3, 0, 6) / 6``: Add, Clip, Mul, Div instead of HardSwish,
  which ONNX Runtime inlines as HardSigmoid, an op NNAPI and CoreML NeuralNetwork lack), and the mean over the 3
  colour channels as PyTorch's reduction sums them (``(r + g + b) / 3``: Split, Add, Div instead of ReduceMean).
- 16-bit integer TFLite (:func:`int16_friendly`): hardswish as ``x * (relu(x + 3) - relu(x - 3)) / 6``, which is
  ``x * clamp(x + 3, 0, 6) / 6`` (for ``x > 3`` the difference of the two ReLUs is 6 up to float32 rounding of
  ``x +- 3``). AI Edge Quantizer 0.10 has no 16-bit recipe for HARD_SWISH (nor for MINIMUM, which a clamp becomes),
  while ADD, SUB, RELU and MUL have one, so with this form every op of a 16x8 file has 16-bit activations. (TFLite
  ``int8_mode=16x8``)
The ratio downsample with PyTorch's own taps (slices, multiplies, adds: no Gather) is shared by every static
target: targets/traced/resample.py.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np

__all__ = ["export_friendly", "ceil_mode_pool", "gpu_friendly", "mobile_friendly", "int16_friendly"]


def ceil_mode_pool(scale_before_pool: bool = False):
    """2x2/2 average pool with ceil mode and padding not counted, built from TFLite builtins.

    Odd sides are zero-padded to even and pooled (AVERAGE_POOL_2D, VALID); a window that holds one row or column
    of real pixels then averaged two zeros in, so it is doubled by a constant (x4 in the corner window). With
    ``scale_before_pool`` the border pixels are doubled before the pool instead (PAD, MUL, AVERAGE_POOL_2D), so
    no PAD feeds a pool directly: LiteRT's GPU accelerator merges a zero PAD into a following pool's padding and
    its average pool leaves padded cells out of the count, which drops the zeros and doubles those windows twice
    (docs/decisions.md). Both forms give PyTorch's values: the sum of a window's real pixels over their count,
    ``(a + b) / 2`` computed as ``(a + b) / 4 * 2`` or ``(2a + 2b) / 4`` (scaling by 2 and 4 is exact in float32).
    """
    import torch
    from torch.nn import functional as F

    class CeilModeAvgPool(torch.nn.Module):
        def forward(self, x):
            h, w = int(x.shape[-2]), int(x.shape[-1])  # static shapes: Python ints while exporting
            ph, pw = h % 2, w % 2
            if not (ph or pw):
                return F.avg_pool2d(x, 2, 2)
            padded = F.pad(x, (0, pw, 0, ph))
            if scale_before_pool:  # the last real row/column: index h-1 / w-1 of the padded input
                return F.avg_pool2d(padded * _border_scale(h + ph, w + pw, h - 1 if ph else None,
                                                           w - 1 if pw else None), 2, 2)
            rows, cols = (h + 1) // 2, (w + 1) // 2  # the pooled output's last row/column
            return F.avg_pool2d(padded, 2, 2) * _border_scale(rows, cols, rows - 1 if ph else None,
                                                              cols - 1 if pw else None)

    return CeilModeAvgPool()


def _border_scale(rows: int, cols: int, row: int | None, col: int | None):
    """A [1, 1, rows, cols] float32 tensor built from numpy (a constant in the graph, not ops): 2 on ``row`` and on
    ``col`` (4 where they cross), 1 elsewhere."""
    import torch

    scale = np.ones((1, 1, rows, cols), dtype=np.float32)
    if row is not None:
        scale[..., row, :] *= 2.0
    if col is not None:
        scale[..., :, col] *= 2.0
    return torch.from_numpy(scale)


@contextmanager
def export_friendly(model, scale_before_pool: bool = False) -> Iterator[None]:
    """Swap the decoder's pool for the builtin-only version above (``scale_before_pool``: its PAD, MUL,
    AVERAGE_POOL_2D form); restore it afterwards."""
    decoder = model.decoder
    pool = decoder.avgpool
    decoder.avgpool = ceil_mode_pool(scale_before_pool)
    try:
        yield
    finally:
        decoder.avgpool = pool


def _function_mode(replace):
    """A TorchFunctionMode that calls ``replace(func, args, kwargs)`` first; a None result runs ``func`` as asked.
    Function modes see every torch call made while they are active, including those inside ``forward()``, so the
    network's code stays as it is."""
    from torch.overrides import TorchFunctionMode

    class _Rewrite(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = replace(func, args, kwargs)
            return func(*args, **kwargs) if out is None else out

    return _Rewrite()


def _bounds(args, kwargs) -> tuple:
    lower = args[1] if len(args) > 1 else kwargs.get("min")
    upper = args[2] if len(args) > 2 else kwargs.get("max")
    return lower, upper


def gpu_friendly():
    """Context manager: every ``clamp(x, 0, 1)`` becomes ``clamp(x, -0.0, 1.0)`` while it is active (see the module
    docstring). Other clamps are left alone. Values are equal; only the sign of a zero output can differ."""
    import torch

    def replace(func, args, kwargs):
        if func in (torch.clamp, torch.Tensor.clamp) and _bounds(args, kwargs) == (0.0, 1.0):
            lower, upper = _bounds(args, kwargs)
            if not (isinstance(lower, float) and isinstance(upper, float)):
                return None
            return func(args[0], -0.0, 1.0)
        return None

    return _function_mode(replace)


def mobile_friendly():
    """Context manager for tracing ONNX graphs meant for mobile providers (see the module docstring): hardswish,
    hardsigmoid and a keepdim mean over 3 channels of a 4-D tensor are traced as the elementary ops PyTorch's CPU
    kernels perform, in the same order, so the numbers are the same and every op is one NNAPI and both CoreML
    providers list."""
    import torch
    from torch.nn import functional as F

    def replace(func, args, kwargs):
        if func is F.hardswish:
            x = args[0]
            return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0
        if func is F.hardsigmoid:
            return torch.clamp(args[0] + 3.0, 0.0, 6.0) / 6.0
        if func in (torch.mean, torch.Tensor.mean):
            x = args[0]
            dim = args[1] if len(args) > 1 else kwargs.get("dim")
            keepdim = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
            if dim in (1, (1,), [1]) and keepdim and "dtype" not in kwargs and x.dim() == 4 and x.shape[1] == 3:
                r, g, b = x.split(1, dim=1)
                return (r + g + b) / 3.0
        return None

    return _function_mode(replace)


def int16_friendly():
    """Context manager for tracing TFLite files with 16-bit activations (see the module docstring): every
    ``F.hardswish(x)`` is traced as ``x * (relu(x + 3) - relu(x - 3)) / 6`` (ADD, SUB, RELU, MUL; no HARD_SWISH or
    MINIMUM). Equal to hardswish up to float32 rounding (~1e-7 relative)."""
    from torch.nn import functional as F

    def replace(func, args, kwargs):
        if func is F.hardswish:
            x = args[0]
            return x * (F.relu(x + 3.0) - F.relu(x - 3.0)) / 6.0
        return None

    return _function_mode(replace)
