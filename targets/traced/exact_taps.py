"""PyTorch's low-res size and bilinear source coordinates from a float32 ratio, exactly, in float32 arithmetic.

The dynamic graph receives ``downsample_ratio`` as a float32 ``r``. For that same value PyTorch computes (ATen
``upsample_bilinear2d`` with ``scale_factor=r``, ``recompute_scale_factor=False``; the ratio widened to a double):

- the low-res length ``floor(double(H) * double(r))``: a float64 product (a float32 product rounds 360 x 0.35 up
  to 126, PyTorch gets 125);
- the scale ``(float)(1.0 / double(r))``, which equals the float32 reciprocal ``1 / r`` for every float32 r in
  [2**-16, 1] (all 134M values checked against IEEE float32 division, docs/decisions.md 39);
- the source coordinate of output ``j``, ``scale * (j + 0.5) - 0.5`` rounded once to float32 (the fused multiply-add
  of its vectorised CPU kernel).

Web and mobile runtimes have no float64, OpenVINO's CPU plugin runs int64 as int32 (``360 * int64(float32(0.35) *
2**40)`` came out -360 there) and divides int32 values in float32 (16777217 / 1 gave 16777216). So every value here
is a float32 whole number below 2**24 (or that times a power of two), and every step is exact in float32 whatever
the runtime does with it: a product of two such numbers that stays below 2**24, a sum of them, a multiplication by a
power of two, ``floor``, and a subtraction whose result is representable. A fused multiply-add gives the same
results. The one rounding is the last addition of :func:`source_coordinates`, PyTorch's own.

Valid for ``2**-16 <= r <= 1`` and lengths below 2**15 (the CLI caps a side at 16384); below 2**-16 every length
under 2**15 is 0 either way.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["lowres_length", "source_coordinates", "MAX_LENGTH"]

MAX_LENGTH = 2**15  # lengths below this keep every product and sum below 2**24


def _digits(x: Tensor, bits: int, count: int) -> list[Tensor]:
    """``x = sum(d[i] * 2**(bits*i))`` with ``0 <= d[i] < 2**bits`` for ``i < count - 1`` (the last takes the rest).
    ``x``: a whole float32 number (any shape). Exact: ``high * 2**bits`` only clears low bits of ``x``, and the
    difference is a whole number below 2**bits, so representable."""
    digits = []
    for _ in range(count - 1):
        high = torch.floor(x * 2.0**-bits)
        digits.append(x - high * 2.0**bits)
        x = high
    return [*digits, x]


def lowres_length(length: Tensor, ratio: Tensor) -> Tensor:
    """``floor(length * r)`` with the product exact (PyTorch's float64 one). ``length``: float32 0-d tensor holding a
    whole number below 2**15 (pixels); ``ratio``: float32 0-d tensor in [2**-16, 1]. Returns a float32 0-d tensor
    holding a whole number (pixels).

    ``X = r * 2**40`` is a whole number (r's 24-bit mantissa shifted up; ../shared/TOOLCHAIN.md "Exact low-res size
    without float64") of at most 41 bits. In base 2**9 (digits x0..x3 < 2**9, x4 <= 16) ``floor(length * X / 2**40)`` is
    long multiplication with carries: every ``length * x_i + carry`` stays below 2**24.
    """
    digits = _digits(ratio * 2.0**40, 9, 5)
    carry = torch.zeros_like(length)
    for digit in digits[:-1]:
        carry = torch.floor((length * digit + carry) * 2.0**-9)
    return torch.floor((length * digits[-1] + carry) * 2.0**-4)


def source_coordinates(count: Tensor, ratio: Tensor) -> Tensor:
    """float32 ``[count]``: PyTorch's source coordinate ``(j + 0.5) * scale - 0.5`` of outputs ``j = 0..count-1``,
    rounded once, for ``scale = float32(1 / r)``. ``count``: float32 0-d tensor, the low-res length from
    :func:`lowres_length` of a length below 2**15; ``ratio``: float32 0-d tensor in [2**-16, 1].

    With ``S = scale * 2**23`` (a whole number below 2**39: scale >= 1 has a 24-bit mantissa) and ``k = 2j + 1 <
    2**16``, the coordinate is ``N * 2**-24`` for the whole number ``N = k * S - 2**23``, and ``0 <= N < 2 * length
    * 2**23 <= 2**39``. Long multiplication in base 2**8 gives N's digits (every step below 2**24), from which
    ``hi = floor(N / 2**15) < 2**24`` and ``lo = N mod 2**15``: both exact in float32, so ``hi * 2**-9 + lo *
    2**-24`` is one float32 addition of exact terms, the correctly rounded coordinate. It is never negative, so
    PyTorch's clamp at 0 changes nothing.
    """
    digits = _digits(torch.reciprocal(ratio) * 2.0**23, 8, 5)
    k = torch.arange(count, dtype=torch.float32) * 2.0 + 1.0
    carry = torch.zeros_like(k)
    n = []  # N's base-2**8 digits d0..d3
    for i, digit in enumerate(digits[:-1]):
        u = k * digit + carry
        if i == 2:
            u = u - 128.0  # - 2**23 = -128 * 2**16 (a borrow carries on as carry = -1)
        carry = torch.floor(u * 2.0**-8)
        n.append(u - carry * 2.0**8)
    top = k * digits[-1] + carry  # floor(N / 2**32) < 2**7
    d1_high = torch.floor(n[1] * 2.0**-7)
    hi = top * 2.0**17 + n[3] * 2.0**9 + n[2] * 2.0 + d1_high
    lo = (n[1] - d1_high * 2.0**7) * 2.0**8 + n[0]
    return hi * 2.0**-9 + lo * 2.0**-24
