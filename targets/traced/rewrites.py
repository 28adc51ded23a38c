"""Export-only rewrites for the TFLite conversion: the model is patched while litert-torch traces it, then restored.

- Ceil-mode average pool (the decoder's 2x2/2 pool, padding not counted) -> zero pad + AVERAGE_POOL_2D + a
  constant rescale of the border windows. litert-torch otherwise emits STABLEHLO_REDUCE_WINDOW, which AI Edge
  Quantizer cannot quantise and GPU delegates do not run.
The ratio downsample with PyTorch's own taps (slices, multiplies, adds: no Gather) is shared by every static
target: targets/resample.py.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import numpy as np

__all__ = ["export_friendly", "ceil_mode_pool"]


def ceil_mode_pool():
    """2x2/2 average pool with ceil mode and padding not counted, built from TFLite builtins."""
    import torch
    from torch.nn import functional as F

    class CeilModeAvgPool(torch.nn.Module):
        def forward(self, x):
            h, w = int(x.shape[-2]), int(x.shape[-1])  # static shapes: Python ints while exporting
            ph, pw = h % 2, w % 2
            if not (ph or pw):
                return F.avg_pool2d(x, 2, 2)
            y = F.avg_pool2d(F.pad(x, (0, pw, 0, ph)), 2, 2)
            scale = np.ones((1, 1, (h + 1) // 2, (w + 1) // 2), dtype=np.float32)  # a constant, not graph ops
            if ph:
                scale[..., -1, :] *= 2.0  # the last row of windows holds one row of real pixels
            if pw:
                scale[..., :, -1] *= 2.0
            return y * torch.from_numpy(scale)

    return CeilModeAvgPool()


@contextmanager
def export_friendly(model) -> Iterator[None]:
    """Swap the decoder's pool for the builtin-only version above; restore it afterwards."""
    decoder = model.decoder
    pool = decoder.avgpool
    decoder.avgpool = ceil_mode_pool()
    try:
        yield
    finally:
        decoder.avgpool = pool
