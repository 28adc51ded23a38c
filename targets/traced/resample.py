"""The ratio downsample, sampled exactly where PyTorch samples it, for exported graphs.

PyTorch's bilinear kernel maps output pixel j to ``(j + 0.5) * float(1/r) - 0.5`` in float32. ONNX ``Resize``,
TFLite ``RESIZE_BILINEAR`` and CoreML compute the same coordinate with their own float32 arithmetic
(``(j + 0.5) / r - 0.5``, or ``in/out`` as the scale). Where ``1/r`` is exact in binary (r = p/q with p a power of two:
0.5, 0.25, 0.125, 0.4) every formula gives the same numbers. Elsewhere (0.375: 1/r = 2.666...) they differ by up to
~6e-5 of a pixel across a 1280-wide frame, which moved a trained model's states by 1.7e-4 at 1280x720 @ 0.375 on
ONNX Runtime, over the 1e-4 bound. So:

- static graphs keep the runtime's resize where it is exact, and otherwise use PyTorch's own float32 taps as
  constants: periodic slices, multiplies and adds (no Gather: every delegate runs it; :func:`slice_plan`), or, when the
  size is not a whole number of periods, a constant-index gather;
- dynamic graphs compute PyTorch's taps at run time from the ratio input (Range, Mul, Floor, Gather), gathering the
  source rows before the W lerp so that full-resolution rows are never touched twice.

Both lerp along W first, then H, as PyTorch's kernel does.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import torch
from torch import Tensor

from .exact_taps import lowres_length, source_coordinates

__all__ = ["reciprocal_is_exact", "pytorch_taps", "upsample_phase_weights", "slice_plan", "static_downsample",
           "dynamic_downsample", "describe_downsample"]


def reciprocal_is_exact(ratio: float) -> bool:
    """True when 1/r is exact in binary, so every runtime's resize samples where PyTorch does."""
    if ratio == 1.0:
        return True
    p = Fraction(ratio).limit_denominator(1 << 16).numerator
    return p & (p - 1) == 0


def pytorch_taps(in_size: int, ratio: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(index0, index1, lambda0, lambda1) of PyTorch's CPU bilinear kernel for one axis (``area_pixel_compute_*``)
    at ``ratio`` as PyTorch receives it (a Python float; pass ``float(np.float32(r))`` for a float32 input)."""
    out = math.floor(in_size * ratio)  # PyTorch: floor(double(H) * scale_factor)
    scale = np.float32(1.0 / ratio)  # PyTorch: (float)(1.0 / scale_factor), computed in double
    # scale * (j + 0.5) - 0.5 with one rounding, as the fused multiply-add of PyTorch's vectorised CPU kernel gives
    # (the float64 product of two float32 values is exact).
    src = (np.float64(scale) * (np.arange(out, dtype=np.float64) + 0.5) - 0.5).astype(np.float32)
    src = np.maximum(src, np.float32(0.0))
    index0 = src.astype(np.int64)
    lambda1 = (src - index0.astype(np.float32)).astype(np.float32)
    lambda0 = (np.float32(1.0) - lambda1).astype(np.float32)
    index1 = np.minimum(index0 + 1, in_size - 1)
    return index0, index1, lambda0, lambda1


def upsample_phase_weights(scale: int) -> np.ndarray:
    """[3, scale] float32: output ``scale*k + i`` of a half-pixel bilinear upsample by the whole number ``scale`` is
    ``sum_t weights[t, i] * x[k - 1 + t]``, with x replicate-padded (PyTorch clamps the source coordinate at 0 and the
    upper index at the last pixel: the same values). The source coordinate is ``k + (i + 0.5) / scale - 0.5``, whose
    fractional part lies in (-0.5, 0.5), so three taps cover every phase. Exact in float32 for power-of-two scales; for
    others PyTorch's per-position float32 coordinate differs from this exact one by ~1e-7 of a pixel."""
    weights = np.zeros((3, scale), np.float64)
    for i in range(scale):
        frac = (i + 0.5) / scale - 0.5
        if frac < 0:
            weights[0, i], weights[1, i] = -frac, 1.0 + frac
        else:
            weights[1, i], weights[2, i] = 1.0 - frac, frac
    return weights.astype(np.float32)


def slice_plan(in_size: int, ratio: float) -> tuple[int, int, list[int], np.ndarray] | None:
    """For one axis, (q, p, offsets, weights) such that output ``p*g + t`` is
    ``weights[g, t, 0] * x[q*g + offsets[t]] + weights[g, t, 1] * x[q*g + offsets[t] + 1]``: the taps repeat every
    q inputs / p outputs (r = p/q). None when ``in_size`` is not a whole number of periods or a tap leaves its
    period."""
    frac = Fraction(ratio).limit_denominator(in_size)
    p, q = frac.numerator, frac.denominator
    if abs(float(frac) - ratio) > 1e-12 or in_size % q or p >= q:
        return None
    index0, _, lambda0, lambda1 = pytorch_taps(in_size, ratio)
    groups = np.arange(len(index0)) // p
    per_phase = (index0 - q * groups).reshape(-1, p)
    if (per_phase != per_phase[0]).any() or per_phase.min() < 0 or per_phase.max() + 1 >= q:
        return None
    weights = np.stack([lambda0, lambda1], axis=-1).reshape(-1, p, 2)
    return q, p, [int(o) for o in per_phase[0]], weights


def _slices_along(x: Tensor, axis: int, plan) -> Tensor:
    q, p, offsets, weights = plan
    n, c, h, w = (int(v) for v in x.shape)
    groups = (h if axis == 2 else w) // q
    grouped = x.reshape(n * c, groups, q, w) if axis == 2 else x.reshape(n * c, h, groups, q)
    phases = []
    for t, offset in enumerate(offsets):
        w0 = torch.from_numpy(np.ascontiguousarray(weights[:, t, 0])).to(x.dtype)
        w1 = torch.from_numpy(np.ascontiguousarray(weights[:, t, 1])).to(x.dtype)
        if axis == 2:
            x0, x1 = grouped[:, :, offset:offset + 1, :], grouped[:, :, offset + 1:offset + 2, :]
            phases.append(x0 * w0.reshape(groups, 1, 1) + x1 * w1.reshape(groups, 1, 1))
        else:
            x0, x1 = grouped[..., offset:offset + 1], grouped[..., offset + 1:offset + 2]
            phases.append(x0 * w0.reshape(groups, 1) + x1 * w1.reshape(groups, 1))
    joined = torch.cat(phases, dim=axis)
    return joined.reshape(n, c, groups * p, w) if axis == 2 else joined.reshape(n, c, h, groups * p)


def _gather_along(x: Tensor, axis: int, in_size: int, ratio: float) -> Tensor:
    index0, index1, lambda0, lambda1 = (torch.from_numpy(a) for a in pytorch_taps(in_size, ratio))
    shape = (1, 1, -1, 1) if axis == 2 else (1, 1, 1, -1)
    return (x.index_select(axis, index0) * lambda0.to(x.dtype).reshape(shape)
            + x.index_select(axis, index1) * lambda1.to(x.dtype).reshape(shape))


def describe_downsample(bucket, exact: bool = True) -> str:
    """What a static graph uses for the ratio downsample (recorded in the manifest's details)."""
    if bucket.ratio == 1.0:
        return "none (ratio 1)"
    if not exact or reciprocal_is_exact(bucket.ratio):
        return "the runtime's bilinear resize (half-pixel)" + ("" if exact else ", not PyTorch's taps")
    planned = slice_plan(bucket.width, bucket.ratio) and slice_plan(bucket.height, bucket.ratio)
    return "PyTorch's float32 taps as constants (" + ("slices, mul, add)" if planned else "gather, mul, add)")


def static_downsample(x: Tensor, ratio: float, runtime_resize) -> Tensor:
    """Fixed shapes and ratio (Python numbers while tracing). ``runtime_resize(x, ratio)`` is used where exact."""
    if reciprocal_is_exact(ratio):
        return runtime_resize(x, ratio)
    out = x
    for axis in (3, 2):  # W first, then H: PyTorch's order of the two lerps
        size = int(out.shape[axis])
        plan = slice_plan(size, ratio)
        out = _slices_along(out, axis, plan) if plan else _gather_along(out, axis, size, ratio)
    return out


def _runtime_taps(in_size: Tensor, ratio: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(index0, index1: int64 [out]; lambda0, lambda1: float32 [out]) for one axis of length ``in_size`` (an int64
    0-d tensor) at the float32 ``ratio``: PyTorch's for that value, computed exactly in float32 (exact_taps.py)."""
    out = lowres_length(in_size.to(torch.float32), ratio)
    src = source_coordinates(out, ratio)  # never negative: PyTorch's clamp at 0 is a no-op
    index0 = src.to(torch.int64)  # truncation of a non-negative value: floor
    lambda1 = src - index0.to(torch.float32)  # exact: the fraction of a float32
    lambda0 = 1.0 - lambda1
    index1 = torch.minimum(index0 + 1, in_size - 1)
    return index0, index1, lambda0, lambda1


def dynamic_downsample(x: Tensor, ratio: Tensor) -> Tensor:
    """Runtime ratio (a float32 tensor of one element): PyTorch's taps computed in the graph.

    The two source rows of every output row are gathered first (a copy, no arithmetic), then each is lerped along W
    and the pair along H: the same operations in the same order as PyTorch's kernel (W first, then H), but the W
    gathers and multiply-adds run on the selected rows only, not on every full-resolution row (side by side at
    1920x1080 @ 0.25 on ONNX Runtime this halves the downsample's cost)."""
    r = ratio.reshape(()).to(torch.float32)
    shape = torch._shape_as_tensor(x)  # traced as a Shape op, so H and W stay dynamic in the graph
    h0, h1, h_lambda0, h_lambda1 = _runtime_taps(shape[2], r)
    w0, w1, w_lambda0, w_lambda1 = _runtime_taps(shape[3], r)
    w_lambda0, w_lambda1 = w_lambda0.reshape(1, 1, 1, -1), w_lambda1.reshape(1, 1, 1, -1)

    def lerp_w(rows: Tensor) -> Tensor:
        return rows.index_select(3, w0) * w_lambda0 + rows.index_select(3, w1) * w_lambda1

    return (lerp_w(x.index_select(2, h0)) * h_lambda0.reshape(1, 1, -1, 1)
            + lerp_w(x.index_select(2, h1)) * h_lambda1.reshape(1, 1, -1, 1))
