"""The refiner's full-resolution tail and the final composition, in three layouts a target can choose from.

All three compute ``apply_coefficients`` followed by ``compose`` (the filter is per channel:
fgr = clamp(A_rgb * src + b_rgb + src), pha = clamp(A_g * mean(src) + b_g)) with the ``+ src`` folded into the low-res
coefficients (bilinear weights sum to one), and no 4-channel guide concatenated or split at full resolution. They
differ from PyTorch's order of operations by float32 rounding only (~1e-7), and are exact at ratio 1 (A = 0, b = y)
except ``phases``, which is only built for a whole-number upsampling factor (never 1).

- ``grouped``: one bilinear resize per coefficient group. ONNX Runtime's choice (side by side at 1920x1080 @ 0.25,
  2 threads: 135 ms grouped vs 158 ms planar per frame: the planar view's Gather/Slice copy full-res planes there),
  and the NHWC graphs' (TFLite: the 5-D view, or one resize split along channels, added 2-4 TRANSPOSE ops).
- ``grouped_sum``: ``grouped`` with the channel mean of ``src`` as a MatMul (``ones[1, 3] @ src[N, 3, H*W]``, the
  1/3 folded into the low-res ``A_gray``). ONNX Runtime's choice: its ReduceMean over the channel axis of a
  full-resolution frame took ~4 ms at 1080p (a strided reduction), the MatMul a tenth of that (one pass, MLAS).
- ``planar``: all eight coefficient planes in one resize, viewed as [N, 2, 4, H, W]. Used where ``phases`` does not
  apply (dynamic graphs, fractional factors) by targets that asked for it.
- ``grouped4``: channels last, TFLite's choice (XNNPACK; docs/decisions.md 52, docs/tflite.md): A' = [A_rgb + 1,
  A_gray / 3] and b each in one 4-channel resize (XNNPACK's resize costs about as much per pixel for 1 channel as
  for 4), ``src`` extended to [r, g, b, r + g + b] by a [3, 4] linear map (FULLY_CONNECTED: XNNPACK's channel MEAN of
  a full-res frame took about as long as a resize), one 4-channel multiply-add and clamp, and ``fgr`` / ``pha``
  taken out by [4, 3] / [4, 1] 0-1 linear maps (exact: each output is one product by 1 plus zeros). ``F.linear``,
  not ``matmul``: the converter made the [4, 1] matmul a BATCH_MATMUL, which LiteRT's GPU accelerator computed
  wrong. Its permutes cancel against an NHWC graph's boundary permutes (no TRANSPOSE at full resolution); an NCHW
  graph keeps two (src in, fgr out).
- ``phases``: no full-resolution resize at all. When the frame is exactly ``s`` times the low-res size
  (1920x1080 @ 0.25: s = 4; 3840x2160 @ 0.125: s = 8), full-res row ``s*k + i`` of a bilinear upsample is a fixed
  blend of low-res rows k-1, k, k+1 (the weights of :func:`targets.resample.upsample_phase_weights`, edges by
  replicate padding, which is PyTorch's clamping), and likewise for columns. So the column blend makes the eight
  coefficient planes full width at low-res rows ([N, 8, h+2, W]: a quarter of the full-res planes at s = 4), and the
  row blend happens inside each channel's final multiply-add on the [N, 1, h, s, W] view of ``src`` (a free
  reshape), reading three row-shifted views of a plane. On OpenVINO's CPU plugin every step stays planar, the views
  are in-place splits and each blend fuses with its multiply-add; its bilinear Interpolate on eight channels, plus the
  reorder to planar after it, had taken ~23 of ~70 ms per frame (bf16, 1080p).
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from .resample import upsample_phase_weights

__all__ = ["TAILS", "refine_and_compose", "integer_scale", "resolve_tail", "describe_tail"]

TAILS = ("grouped", "grouped_sum", "planar", "phases", "grouped4")


def integer_scale(full: tuple[int, int], low: tuple[int, int]) -> int | None:
    """``s`` when the full-res size is exactly ``s`` (>= 2) times the low-res size on both axes, else None."""
    (height, width), (low_h, low_w) = full, low
    s = height // low_h
    return s if s >= 2 and height == s * low_h and width == s * low_w else None


def resolve_tail(tail: str, full: tuple[int, int] | None, low: tuple[int, int] | None) -> str:
    """The layout a graph really gets: ``phases`` falls back to ``planar`` where its factor is not a whole number
    (or unknown: dynamic graphs)."""
    if tail not in TAILS:
        raise ValueError(f"unknown refiner tail {tail!r}; expected one of {TAILS}")
    if tail == "phases" and (full is None or low is None or integer_scale(full, low) is None):
        return "planar"
    return tail


def describe_tail(tail: str) -> str:
    """For the manifest's details."""
    return {"grouped": "grouped (one resize per coefficient group)",
            "grouped_sum": "grouped, channel sum as a MatMul (one resize per coefficient group)",
            "planar": "planar (one 8-plane resize)",
            "phases": "phases (no full-resolution resize: row/column blends fused with the multiply-add)",
            "grouped4": "grouped4 (two 4-channel resizes, channels last; gray and the outputs' split as matmuls)"}[tail]


def _up(x: Tensor, size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def refine_and_compose(src: Tensor, a: Tensor, b: Tensor, size: tuple[int, int] | None = None,
                       tail: str = "planar") -> tuple[Tensor, Tensor]:
    """(fgr, pha) at full resolution from the low-res coefficients ``a``, ``b`` [N, 4, h, w].

    ``size`` is the full-resolution (H, W) as Python ints for static graphs (converters such as coremltools need
    constant resize sizes); None takes it from ``src`` at run time (dynamic graphs, where ``phases`` is ``planar``).
    """
    low = (int(a.shape[2]), int(a.shape[3])) if size is not None else None
    tail = resolve_tail(tail, size, low)
    if tail == "phases":
        return _phases(src, a, b, size, integer_scale(size, low))
    size = size or (src.size(2), src.size(3))
    if tail == "grouped4":
        return _grouped4(src, a, b, size)
    a_rgb, a_gray = a.split([3, 1], dim=1)
    if tail == "planar":
        planes = _up(torch.cat([a_rgb + 1.0, a_gray, b], dim=1), size).reshape(-1, 2, 4, size[0], size[1])
        scale_rgb, scale_gray, offset_rgb, offset_gray = (planes[:, 0, 0:3], planes[:, 0, 3:4], planes[:, 1, 0:3],
                                                          planes[:, 1, 3:4])  # [:, 0] scales A', [:, 1] offsets b
    else:
        b_rgb, b_gray = b.split([3, 1], dim=1)
        a_gray = a_gray * (1.0 / 3.0) if tail == "grouped_sum" else a_gray
        scale_rgb, scale_gray, offset_rgb, offset_gray = (_up(t, size) for t in (a_rgb + 1.0, a_gray, b_rgb, b_gray))
    fgr = scale_rgb * src + offset_rgb
    gray = _channel_sum(src) if tail == "grouped_sum" else src.mean(dim=1, keepdim=True)
    pha = scale_gray * gray + offset_gray
    return fgr.clamp(0.0, 1.0), pha.clamp(0.0, 1.0)


def _scale_and_shift(a: Tensor) -> Tensor:
    """``cat([A_rgb + 1, A_gray / 3])`` as ``A * [1, 1, 1, 1/3] + [1, 1, 1, 0]`` per channel: the same values (a
    product by 1 and a sum with 0 are exact), without the Split and Concat at low resolution that OpenVINO's CPU
    plugin runs as reference copy kernels."""
    scale = torch.tensor([1.0, 1.0, 1.0, 1.0 / 3.0], dtype=a.dtype).reshape(1, 4, 1, 1)
    shift = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=a.dtype).reshape(1, 4, 1, 1)
    return a * scale + shift


def _channel_sum(src: Tensor) -> Tensor:
    """``src.sum(dim=1, keepdim=True)`` as ``ones[1, 3] @ src[N, 3, H*W]`` (exported as one MatMul): r + g + b
    accumulated in that order, as the sum is."""
    n, channels = src.shape[0], src.shape[1]
    ones = torch.ones(1, int(channels), dtype=src.dtype)
    return torch.matmul(ones, src.reshape(n, channels, -1)).reshape(n, 1, src.shape[2], src.shape[3])


def _shifted(x: Tensor, dim: int, t: int) -> Tensor:
    """``x[.., t:t + n, ..]`` along ``dim`` (size n + 2) as a Split, not a Slice: OpenVINO's CPU plugin runs a Split
    whose leading dimensions are all 1 in place (no copy), and its Slice is a reference kernel (~1.5 ms per
    full-width copy at 1080p)."""
    n = int(x.shape[dim]) - 2
    if t == 0:
        return x.split([n, 2], dim)[0]
    return x.split([1, n, 1], dim)[1] if t == 1 else x.split([2, n], dim)[1]


def _blend(views: list[Tensor], weights) -> Tensor:
    """``sum_t views[t] * weights[t]`` over the three taps, written out (no ``sum()``'s leading ``0 +``)."""
    return views[0] * weights[0] + views[1] * weights[1] + views[2] * weights[2]


def _phases(src: Tensor, a: Tensor, b: Tensor, size: tuple[int, int], s: int) -> tuple[Tensor, Tensor]:
    n, (height, width), h = int(src.shape[0]), size, int(a.shape[2])
    weights = torch.from_numpy(upsample_phase_weights(s)).to(src.dtype)  # [3, s]: taps k-1, k, k+1 per phase
    # Channels g: 0-2 A_rgb + 1, 3 A_gray / 3 (the mean's division folded in), 4-6 b_rgb, 7 b_gray.
    coef = F.pad(torch.cat([_scale_and_shift(a), b], dim=1), (1, 1, 1, 1), mode="replicate")
    coef = coef.unsqueeze(-1)  # [N, 8, h+2, w+2, 1]
    # Column blend: [N, 8, h+2, w, s] with the s column phases innermost, i.e. [N, 8, h+2, W] (low-res rows).
    cols = _blend([_shifted(coef, 3, u) for u in range(3)], weights).reshape(n, 8, h + 2, width)
    row_weights = weights.reshape(3, 1, 1, 1, s, 1)
    planes = cols.split(1, dim=1)  # one [N, 1, h+2, W] plane per coefficient, so the row shifts below are in place

    def upsampled(g: int) -> Tensor:  # coefficient g at full resolution, as [N, 1, h, s, W] (row s*k + i = [k, i])
        return _blend([_shifted(planes[g], 2, t).reshape(n, 1, h, 1, width) for t in range(3)], row_weights)

    srcs = [plane.reshape(n, 1, h, s, width) for plane in src.split(1, dim=1)]
    fgr = torch.cat([(upsampled(c) * srcs[c] + upsampled(4 + c)).clamp(0.0, 1.0) for c in range(3)], dim=1)
    pha = (upsampled(3) * (srcs[0] + srcs[1] + srcs[2]) + upsampled(7)).clamp(0.0, 1.0)
    return fgr.reshape(n, 3, height, width), pha.reshape(n, 1, height, width)


# grouped4's constant 0/1 matrices: src [.., 3] @ _EXTEND -> [r, g, b, r + g + b]; out [.., 4] @ _PICK_* -> fgr, pha.
_EXTEND = ((1.0, 0.0, 0.0, 1.0), (0.0, 1.0, 0.0, 1.0), (0.0, 0.0, 1.0, 1.0))
_PICK_RGB = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 0.0))
_PICK_ALPHA = ((0.0,), (0.0,), (0.0,), (1.0,))


def _grouped4(src: Tensor, a: Tensor, b: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
    def last(x: Tensor) -> Tensor:  # NCHW view -> channels last
        return x.permute(0, 2, 3, 1)

    def matrix(rows) -> Tensor:
        return torch.tensor(rows, dtype=src.dtype)

    scale = last(_up(_scale_and_shift(a), size))  # [N, H, W, 4]
    offset = last(_up(b, size))
    out = (scale * F.linear(last(src), matrix(_EXTEND).t()) + offset).clamp(0.0, 1.0)
    fgr, pha = F.linear(out, matrix(_PICK_RGB).t()), F.linear(out, matrix(_PICK_ALPHA).t())
    return fgr.permute(0, 3, 1, 2), pha.permute(0, 3, 1, 2)
