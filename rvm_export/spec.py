"""The declarative I/O contract: names, shapes, dtypes, layouts and the state rule.

Every exported artifact takes ``src`` (RGB in [0, 1]), the four recurrent states ``r1i..r4i`` and, in the dynamic
flavour, ``downsample_ratio``; it returns ``fgr``, ``pha`` and ``r1o..r4o``. ``rKo`` is fed back as ``rKi`` on the
next frame. The first frame's states are zeros of their exact shapes, which :func:`state_shapes` computes.
Export, dummy inputs, validation, the manifest and docs/io_contract.md all read this module.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from fractions import Fraction
from typing import Any, Mapping

import numpy as np

from model.matting import VARIANTS, lowres_size, state_shapes

from .errors import UsageError

__all__ = [
    "Precision", "Layout", "Bucket", "TensorSpec", "IOSpec", "INPUT_NAMES", "OUTPUT_NAMES", "STATE_PAIRS",
    "FRAME_OUTPUTS", "STATE_INPUTS", "STATE_OUTPUTS", "recommended_ratio", "parse_bucket", "lowres_hw",
    "state_shapes",
]

STATE_INPUTS = ("r1i", "r2i", "r3i", "r4i")
STATE_OUTPUTS = ("r1o", "r2o", "r3o", "r4o")
STATE_PAIRS = tuple(zip(STATE_OUTPUTS, STATE_INPUTS))  # (output, input it feeds on the next frame)
FRAME_OUTPUTS = ("fgr", "pha")
INPUT_NAMES = ("src", *STATE_INPUTS, "downsample_ratio")
OUTPUT_NAMES = (*FRAME_OUTPUTS, *STATE_OUTPUTS)

# Documented choices for portrait matting (the original authors' table), keyed by the long side.
_DOCUMENTED_RATIOS = {1280: 0.375, 1920: 0.25, 3840: 0.125}


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"


class Layout(str, Enum):
    NCHW = "NCHW"
    NHWC = "NHWC"  # channels last, for the Android GPU delegate


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
    def exact(self) -> bool:
        """True when H*r and W*r are whole numbers (required by CoreML and TFLite static models), up to float64
        rounding of the decimal ratio (1280 x 0.3375 = 432.00000000000006 counts)."""
        return all(abs(n * self.ratio - round(n * self.ratio)) < 1e-9 for n in (self.width, self.height))

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}@{self.ratio:g}"

    def nearest_exact_ratios(self, count: int = 2) -> list[float]:
        """The valid ratios closest to this one for which H*r and W*r are both integers.

        r*H and r*W are integers exactly when r = k / gcd(H, W) for an integer k; candidates that the constructor
        would refuse (float32 and float64 floors disagree, e.g. 0.325 at 1280x720) are skipped.
        """
        g = math.gcd(self.width, self.height)
        k = math.floor(self.ratio * g)
        candidates = {Fraction(j, g) for j in range(k - 4 * count, k + 4 * count + 2) if 1 <= j <= g}
        candidates.discard(Fraction(self.ratio).limit_denominator(10**6))
        valid = [round(float(c), 6) for c in sorted(candidates, key=lambda c: abs(float(c) - self.ratio))
                 if _is_valid(self.width, self.height, round(float(c), 6))]
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
    if long_side in _DOCUMENTED_RATIOS and min(width, height) * 16 == long_side * 9:
        return _DOCUMENTED_RATIOS[long_side]
    if long_side <= 512:
        return 1.0
    for k in range(64, 0, -1):
        r = k / 64
        if r * long_side <= 512 and (r * width).is_integer() and (r * height).is_integer():
            return r
    return min(512.0 / long_side, 1.0)


def parse_bucket(text: str, default_ratio: float | None = None) -> Bucket:
    """Parse ``WxH`` or ``WxH@R``; without ``@R`` the ratio is ``default_ratio`` or the recommended one."""
    size, _, ratio_text = text.strip().partition("@")
    try:
        w_text, h_text = size.lower().split("x")
        width, height = int(w_text), int(h_text)
    except ValueError:
        raise UsageError(f"resolution {text!r} is not WxH or WxH@RATIO (e.g. 1920x1080 or 1920x1080@0.25)") from None
    if ratio_text:
        try:
            ratio = float(ratio_text)
        except ValueError:
            raise UsageError(f"ratio in {text!r} is not a number") from None
    else:
        ratio = default_ratio if default_ratio is not None else recommended_ratio(width, height)
    return Bucket(width, height, ratio)


@dataclass(frozen=True)
class TensorSpec:
    name: str  # contract name, identical in every runtime
    kind: str  # "frame" | "state" | "ratio"
    shape: tuple[int | str, ...]  # ints are fixed, strings are named dynamic axes (unique per tensor)
    dtype: str  # numpy dtype name at the model boundary
    description: str  # one line for metadata and docs
    pair: str | None = None  # the state this one feeds (rKo -> rKi) or is fed by

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), "dtype": self.dtype,
                "description": self.description, **({"pair": self.pair} if self.pair else {})}


_DESCRIPTIONS = {
    "src": "input frame, RGB in [0, 1]",
    "downsample_ratio": "float32 [1]: the network runs at floor(H*r) x floor(W*r); r in (0, 1]",
    "fgr": "foreground RGB in [0, 1], full resolution",
    "pha": "alpha matte in [0, 1], full resolution",
}


@dataclass(frozen=True)
class IOSpec:
    """The I/O contract of one model (or one function of a multi-function package)."""

    variant: str  # "mobilenetv3" | "resnet50": sets the state channels
    refiner: str  # "deep_guided_filter" | "fast_guided_filter"
    bucket: Bucket | None = None  # fixed resolution and ratio; None = dynamic H, W, batch and runtime ratio
    layout: Layout = Layout.NCHW  # layout of src, fgr, pha and the states (the states keep it in and out)
    io_dtype: str = "float32"  # dtype at the model boundary (fp16 models may keep float32 I/O)
    batch: int = 1  # batch size of static models
    extra: dict[str, Any] = field(default_factory=dict, compare=False)  # target notes carried to the manifest

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UsageError(f"unknown variant {self.variant!r}; expected one of {sorted(VARIANTS)}")

    @property
    def dynamic(self) -> bool:
        return self.bucket is None

    @property
    def input_names(self) -> tuple[str, ...]:
        return INPUT_NAMES if self.dynamic else INPUT_NAMES[:-1]

    def _frame_shape(self, name: str, channels: int) -> tuple[int | str, ...]:
        if self.bucket is None:
            nchw: tuple[int | str, ...] = (f"{name}_batch", channels, f"{name}_height", f"{name}_width")
        else:
            nchw = (self.batch, channels, self.bucket.height, self.bucket.width)
        return self._apply_layout(nchw)

    def _apply_layout(self, nchw: tuple[int | str, ...]) -> tuple[int | str, ...]:
        return nchw if self.layout == Layout.NCHW else (nchw[0], nchw[2], nchw[3], nchw[1])

    def _state_shape(self, name: str, index: int) -> tuple[int | str, ...]:
        channels = VARIANTS[self.variant].state_ch[index]
        if self.bucket is None:
            return self._apply_layout((f"{name}_batch", channels, f"{name}_height", f"{name}_width"))
        b = self.bucket
        return self._apply_layout(state_shapes(self.variant, b.height, b.width, b.ratio, self.batch)[index])

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        specs = [TensorSpec("src", "frame", self._frame_shape("src", 3), self.io_dtype, _DESCRIPTIONS["src"])]
        for k, (out_name, in_name) in enumerate(STATE_PAIRS):
            specs.append(TensorSpec(in_name, "state", self._state_shape(in_name, k), self.io_dtype,
                                    f"recurrent state {k + 1}: zeros on the first frame, then the previous "
                                    f"frame's {out_name}", pair=out_name))
        if self.dynamic:
            specs.append(TensorSpec("downsample_ratio", "ratio", (1,), "float32", _DESCRIPTIONS["downsample_ratio"]))
        return tuple(specs)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        specs = [TensorSpec("fgr", "frame", self._frame_shape("fgr", 3), self.io_dtype, _DESCRIPTIONS["fgr"]),
                 TensorSpec("pha", "frame", self._frame_shape("pha", 1), self.io_dtype, _DESCRIPTIONS["pha"])]
        for k, (out_name, in_name) in enumerate(STATE_PAIRS):
            specs.append(TensorSpec(out_name, "state", self._state_shape(out_name, k), self.io_dtype,
                                    f"recurrent state {k + 1} after this frame: feed it back as {in_name}",
                                    pair=in_name))
        return tuple(specs)

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Per-tensor named dynamic axes (each tensor has its own names), in the torch.onnx format."""
        axes: dict[str, dict[int, str]] = {}
        for t in (*self.inputs, *self.outputs):
            named = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            if named:
                axes[t.name] = named
        return axes

    # -- concrete tensors --------------------------------------------------------------------------------------
    def concrete_state_shapes(self, bucket: Bucket, batch: int = 1) -> dict[str, tuple[int, ...]]:
        shapes = state_shapes(self.variant, bucket.height, bucket.width, bucket.ratio, batch)
        return {name: tuple(self._apply_layout(s)) for name, s in zip(STATE_INPUTS, shapes)}  # type: ignore[misc]

    def zero_states(self, bucket: Bucket, dtype: str | None = None, batch: int = 1) -> dict[str, np.ndarray]:
        dtype = dtype or self.io_dtype
        return {n: np.zeros(s, dtype=dtype) for n, s in self.concrete_state_shapes(bucket, batch).items()}

    def to_layout(self, nchw: np.ndarray) -> np.ndarray:
        """Convert an NCHW array to this spec's layout."""
        return nchw if self.layout == Layout.NCHW else np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))

    def from_layout(self, array: np.ndarray) -> np.ndarray:
        """Convert an array in this spec's layout back to NCHW."""
        return array if self.layout == Layout.NCHW else np.ascontiguousarray(array.transpose(0, 3, 1, 2))

    def feeds(self, src_nchw: np.ndarray, states: Mapping[str, np.ndarray], bucket: Bucket) -> dict[str, np.ndarray]:
        """Inputs for one frame: ``src`` (NCHW float array, converted to this layout/dtype) and states as given."""
        feeds = {"src": self.to_layout(src_nchw).astype(self.io_dtype, copy=False), **states}
        if self.dynamic:
            feeds["downsample_ratio"] = np.array([bucket.ratio], dtype=np.float32)
        return feeds

    def check_bucket(self, bucket: Bucket) -> None:
        if self.bucket is not None and bucket != self.bucket:
            raise UsageError(f"this model is fixed at {self.bucket.label}; cannot run it at {bucket.label}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant, "refiner": self.refiner, "layout": self.layout.value,
            "resolution": None if self.bucket is None else [self.bucket.width, self.bucket.height],
            "downsample_ratio": "dynamic" if self.bucket is None else self.bucket.ratio,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "state_rule": STATE_RULE, **self.extra,
        }


STATE_RULE = (
    "Feed rKo back as rKi on the next frame. On the first frame (and after a cut) pass zeros of shape "
    "[B, C_k, ceil(h/2^k), ceil(w/2^k)] where h = floor(H*r), w = floor(W*r) (float32 product) and "
    "C = (16, 20, 40, 64) for mobilenetv3, (16, 32, 64, 128) for resnet50; layout as the manifest says. "
    "States depend on H, W and r: reset them when any of these changes."
)
