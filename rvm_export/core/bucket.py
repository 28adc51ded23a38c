"""Buckets: a frame size and a downsample ratio, the unit a static model is built for and parity is checked at.

Also the one rule for the recommended ratio of a frame size, and the parser of ``WxH[@R]``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from model.matting import lowres_size

from .errors import UsageError

__all__ = ["Bucket", "lowres_hw", "recommended_ratio", "parse_bucket", "DOCUMENTED_RATIOS", "MAX_SIDE"]

# Documented choices for portrait matting (the original authors' table), keyed by the long side of a 16:9 frame.
MAX_SIDE = 16384  # larger than any runtime's texture or tensor limit we know of (and than any camera's frame)

DOCUMENTED_RATIOS = {1280: 0.375, 1920: 0.25, 3840: 0.125}


def lowres_hw(height: int, width: int, ratio: float) -> tuple[int, int]:
    """Low-res size ``floor(H*r), floor(W*r)`` with the product in float32, as ONNX/OpenVINO/TFLite Resize do.

    PyTorch computes it in float64; :class:`Bucket` refuses the rare ratio where the two disagree.
    """
    if ratio == 1.0:
        return height, width
    r32 = np.float32(ratio)
    return int(math.floor(np.float32(height) * r32)), int(math.floor(np.float32(width) * r32))


@dataclass(frozen=True)
class Bucket:
    """A frame size and downsample ratio: the unit a static model is built for and parity is checked at."""

    width: int  # full-resolution frame width in pixels
    height: int  # full-resolution frame height in pixels
    ratio: float  # downsample_ratio in (0, 1]; the network runs at floor(H*r) x floor(W*r)

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise UsageError(f"resolution must be positive, got {self.width}x{self.height}")
        if not (0.0 < self.ratio <= 1.0):
            raise UsageError(f"downsample ratio must be in (0, 1], got {self.ratio}")
        low = self.lowres
        if min(low) < 1:
            raise UsageError(f"ratio {self.ratio} shrinks {self.width}x{self.height} to {low[1]}x{low[0]}")
        if low != lowres_size(self.height, self.width, self.ratio):
            torch_h, torch_w = lowres_size(self.height, self.width, self.ratio)
            raise UsageError(
                f"ratio {self.ratio} at {self.width}x{self.height} gives a low-res size that float32 runtimes "
                f"({low[1]}x{low[0]}) and PyTorch ({torch_w}x{torch_h}) round differently; choose one of "
                f"{self.nearest_exact_ratios()}")

    @property
    def lowres(self) -> tuple[int, int]:
        """(h, w) the network runs at."""
        return lowres_hw(self.height, self.width, self.ratio)

    @property
    def float32_ratio_agrees(self) -> bool:
        """True when PyTorch computes the same at this ratio and at its float32 value, the only thing a dynamic model
        receives (``downsample_ratio`` is a float32 input): the same low-res size (float64 products) and the same
        float32 scale ``1/r`` for its sampling grid. A dynamic graph equals PyTorch at the float32 value it receives
        (targets/traced/exact_taps.py), so it equals PyTorch at this ratio exactly when this holds. False e.g. at
        1280x720 @ 0.45 (float32 0.449999988: PyTorch then computes 575x323, not 576x324) and at any size @ 0.55
        (float32 scale 1.81818175 instead of 1.81818187). Always True for ratios float32 holds exactly (k / 2**n)."""
        r32 = float(np.float32(self.ratio))
        return (lowres_size(self.height, self.width, r32) == lowres_size(self.height, self.width, self.ratio)
                and bool(np.float32(1.0 / r32) == np.float32(1.0 / self.ratio)))

    def float32_ratio_problem(self) -> str | None:
        """Why a dynamic model cannot be checked at this bucket (None when :attr:`float32_ratio_agrees`)."""
        if self.float32_ratio_agrees:
            return None
        r32 = float(np.float32(self.ratio))
        (h32, w32), (h, w) = (lowres_size(self.height, self.width, r) for r in (r32, self.ratio))
        what = (f"a {w32}x{h32} low-res frame ({w}x{h} at {self.ratio:g})" if (h32, w32) != (h, w) else
                f"a sampling scale of {float(np.float32(1.0 / r32)):.9g} ({float(np.float32(1.0 / self.ratio)):.9g} at "
                f"{self.ratio:g})")
        return (f"{self.label}: a dynamic model receives the ratio as the float32 {r32!r}, for which PyTorch computes "
                f"{what}; a dynamic model equals PyTorch at the float32 value it receives, so it cannot reproduce "
                f"PyTorch at {self.ratio:g} here. Export static models (--downsample-ratio {self.ratio:g}) or choose "
                f"one of {self.nearest_exact_ratios(dynamic=True)}")

    @property
    def exact(self) -> bool:
        """True when H*r and W*r are whole numbers (required by CoreML and TFLite static models), up to float64
        rounding of the decimal ratio (1280 x 0.3375 = 432.00000000000006 counts)."""
        return all(abs(n * self.ratio - round(n * self.ratio)) < 1e-9 for n in (self.width, self.height))

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}@{self.ratio:g}"

    def nearest_exact_ratios(self, count: int = 2, dynamic: bool = False) -> list[float]:
        """The valid ratios closest to this one for which H*r and W*r are both integers.

        r*H and r*W are integers exactly when r = k / gcd(H, W) for an integer k; candidates that the constructor
        would refuse (float32 and float64 floors disagree, e.g. 0.325 at 1280x720) are skipped, and with
        ``dynamic`` those a dynamic model cannot reproduce (:attr:`float32_ratio_agrees`).
        """
        g = math.gcd(self.width, self.height)
        k = math.floor(self.ratio * g)
        candidates = {Fraction(j, g) for j in range(k - 4 * count, k + 4 * count + 2) if 1 <= j <= g}
        candidates.discard(Fraction(self.ratio).limit_denominator(10**6))
        valid = [round(float(c), 6) for c in sorted(candidates, key=lambda c: abs(float(c) - self.ratio))
                 if _is_valid(self.width, self.height, round(float(c), 6))
                 and (not dynamic or Bucket(self.width, self.height, round(float(c), 6)).float32_ratio_agrees)]
        return valid[:count]

    def nearest_exact_sizes(self) -> list[str]:
        """Frame sizes near this one for which this ratio gives integer low-res sizes."""
        q = Fraction(self.ratio).limit_denominator(4096).denominator

        def snap(n: int) -> list[int]:
            lo = n // q * q
            return [v for v in (lo, lo + q) if v > 0]

        return [f"{w}x{h}" for w in snap(self.width) for h in snap(self.height)
                if _is_valid(w, h, self.ratio)][:4]


def _is_valid(width: int, height: int, ratio: float) -> bool:
    """A bucket the constructor accepts (float32 and float64 low-res sizes agree, both >= 1) and that is exact."""
    if not 0.0 < ratio <= 1.0 or width < 1 or height < 1:
        return False
    low = lowres_hw(height, width, ratio)
    exact = all(abs(n * ratio - round(n * ratio)) < 1e-9 for n in (width, height))
    return exact and min(low) >= 1 and low == lowres_size(height, width, ratio)


def recommended_ratio(width: int, height: int) -> float:
    """The documented ratio for 720p/1080p/4K; otherwise the largest multiple of 1/64 that keeps the long side at
    most 512 px and makes both low-res sides integers (falls back to min(512/long, 1))."""
    long_side = max(width, height)
    if long_side in DOCUMENTED_RATIOS and min(width, height) * 16 == long_side * 9:
        return DOCUMENTED_RATIOS[long_side]
    if long_side <= 512:
        return 1.0
    for k in range(64, 0, -1):
        r = k / 64
        if r * long_side <= 512 and (r * width).is_integer() and (r * height).is_integer():
            return r
    return min(512.0 / long_side, 1.0)


def _ascii_number(text: str) -> bool:
    """True for text made of ASCII digits with at most one point (Python's int/float also take '９６' and '1_0')."""
    return bool(text) and text.isascii() and text.replace(".", "", 1).isdigit()


def parse_bucket(text: str, default_ratio: float | None = None) -> Bucket:
    """Parse ``WxH`` or ``WxH@R`` (ASCII digits; each side 1 .. :data:`MAX_SIDE`); without ``@R`` the ratio is
    ``default_ratio`` or the recommended one. Raises UsageError naming what is wrong."""
    size, at, ratio_text = text.strip().partition("@")
    w_text, x, h_text = size.lower().partition("x")
    if not (x and _ascii_number(w_text) and _ascii_number(h_text) and "." not in w_text + h_text):
        raise UsageError(f"resolution {text!r} is not WxH or WxH@RATIO in ASCII digits (e.g. 1920x1080 or "
                         "1920x1080@0.25)")
    width, height = int(w_text), int(h_text)
    if min(width, height) < 1:
        raise UsageError(f"resolution {text!r}: each side must be positive (at least 1 px)")
    if max(width, height) > MAX_SIDE:
        raise UsageError(f"resolution {width}x{height} is larger than {MAX_SIDE} px on a side, beyond what the "
                         "runtimes take")
    if at:
        if not ratio_text:
            raise UsageError(f"resolution {text!r} ends with '@' but gives no ratio (e.g. {size}@0.25, or drop the "
                             "'@' for the recommended ratio)")
        try:
            if not ratio_text.isascii() or "_" in ratio_text:
                raise ValueError(ratio_text)
            ratio = float(ratio_text)
        except ValueError:
            raise UsageError(f"ratio in {text!r} is not a number like 0.25 (ASCII digits after '@')") from None
    elif default_ratio is not None:
        ratio = default_ratio
    else:
        ratio = recommended_ratio(width, height)
        if min(lowres_hw(height, width, ratio)) < 1:
            low_h, low_w = lowres_hw(height, width, ratio)
            raise UsageError(f"resolution {width}x{height}: the recommended ratio {ratio:g} (long side at most 512 px) "
                             f"shrinks it to {low_w}x{low_h}; give a ratio, e.g. {width}x{height}@1")
    return Bucket(width, height, ratio)
