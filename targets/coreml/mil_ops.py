"""NumPy kernels for the MIL ops a converted RVM program uses, following the MIL op definitions (coremltools
``mil/ops/defs``): parameter names, defaults and semantics, not Apple's kernels.

Every kernel takes and returns float32 arrays (an fp16 program's values are float32 arrays holding float16 values;
the executor rounds each op's output in place, so a kernel outside ``EXACT_OPS`` must return a new array, never
one of its inputs or constants). Parameters are keyword arguments named as in MIL; defaults are MIL's.
Convolutions are im2col + one BLAS matmul per group (depthwise: one multiply-add per tap over all channels);
resizes are separable gathers. Any parameter value a kernel does not implement raises :class:`UnsupportedOpError`.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from rvm_export.core.errors import ExportFailedError

__all__ = ["KERNELS", "PREPARE", "EXACT_OPS", "UnsupportedOpError", "ConvWeights", "conv", "upsample_bilinear",
           "avg_pool"]

F32 = np.float32


class UnsupportedOpError(ExportFailedError):
    """The MIL program uses an op (or an op setting) the reference executor does not implement."""


# -- elementwise ---------------------------------------------------------------------------------------------------
def _f(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=F32)


def sigmoid(x):
    return (0.5 * (1.0 + np.tanh(0.5 * _f(x)))).astype(F32, copy=False)  # no overflow for large |x|


def sigmoid_hard(x, alpha=0.2, beta=0.5):
    return np.clip(F32(alpha) * _f(x) + F32(beta), 0.0, 1.0).astype(F32, copy=False)


def thresholded_relu(x, alpha=1.0):
    x = _f(x)
    return np.where(x >= F32(alpha), x, F32(0.0))


def clip(x, alpha, beta):
    return np.minimum(np.maximum(_f(x), F32(alpha)), F32(beta))


def cast(x, dtype):
    if dtype in ("fp16", "fp32"):
        return np.array(x, dtype=F32)  # a fresh copy: the executor rounds fp16 outputs in place
    if dtype in ("int32", "int16", "bool") and np.issubdtype(np.asarray(x).dtype, np.integer):
        return np.asarray(x).astype({"int32": np.int32, "int16": np.int16, "bool": np.bool_}[dtype])
    raise UnsupportedOpError(f"cast from {np.asarray(x).dtype} to {dtype} is not implemented")


# -- shapes --------------------------------------------------------------------------------------------------------
def concat(values, axis, interleave=False):
    if interleave:
        raise UnsupportedOpError("concat with interleave=True is not implemented")
    return np.concatenate(values, axis=int(axis))


def split(x, axis, num_splits=None, split_sizes=None):
    axis = int(axis)
    if split_sizes is None:
        if num_splits is None:
            raise UnsupportedOpError("split needs num_splits or split_sizes")
        split_sizes = [x.shape[axis] // int(num_splits)] * int(num_splits)
    return tuple(np.split(x, np.cumsum(split_sizes)[:-1], axis=axis))


def _slices(shape, begin, end, stride=None, begin_mask=None, end_mask=None) -> tuple[slice, ...]:
    rank = len(shape)
    stride = [1] * rank if stride is None else [int(s) for s in stride]
    begin_mask = [False] * rank if begin_mask is None else list(begin_mask)
    end_mask = [False] * rank if end_mask is None else list(end_mask)
    out = []
    for axis in range(rank):
        b = None if begin_mask[axis] else int(begin[axis])
        e = None if end_mask[axis] else int(end[axis])
        out.append(slice(b, e, stride[axis]))
    return tuple(out)


def slice_by_index(x, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    y = x[_slices(x.shape, begin, end, stride, begin_mask, end_mask)]
    if squeeze_mask is not None and any(squeeze_mask):
        y = y.squeeze(axis=tuple(i for i, s in enumerate(squeeze_mask) if s))
    return np.ascontiguousarray(y)


def slice_update(x, update, begin, end, stride=None, begin_mask=None, end_mask=None, squeeze_mask=None):
    y = np.array(x, copy=True)
    index = _slices(x.shape, begin, end, stride, begin_mask, end_mask)
    y[index] = np.asarray(update).reshape(y[index].shape)
    return y


def reduce_mean(x, axes=None, keep_dims=False):
    axes = None if axes is None else tuple(int(a) for a in np.atleast_1d(axes))
    return np.mean(x, axis=axes, keepdims=bool(keep_dims), dtype=F32)


def shape(x):
    return np.array(np.shape(x), dtype=np.int32)


def gather(x, indices, axis=0, batch_dims=0, validate_indices=False):
    if int(batch_dims) != 0:
        raise UnsupportedOpError("gather with batch_dims != 0 is not implemented")
    return np.take(x, np.asarray(indices).astype(np.int64), axis=int(axis))


def reshape(x, shape):
    return np.reshape(x, [int(s) for s in shape])


def transpose(x, perm):
    return np.ascontiguousarray(np.transpose(x, [int(p) for p in perm]))


# -- convolution ---------------------------------------------------------------------------------------------------
def _pads(pad_type: str, pad, in_hw: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
          dilations: Sequence[int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) for MIL's pad_type."""
    if pad_type == "valid":
        return (0, 0, 0, 0)
    if pad_type == "custom":
        values = [int(p) for p in pad]
        if len(values) != 4:
            raise UnsupportedOpError(f"custom pad {values} is not 2-D")
        return tuple(values)  # type: ignore[return-value]
    if pad_type in ("same", "same_lower"):
        pads: list[int] = []
        for n, k, s, d in zip(in_hw, kernel, strides, dilations):
            total = max((math.ceil(n / s) - 1) * s + (k - 1) * d + 1 - n, 0)
            low = total // 2 if pad_type == "same" else total - total // 2
            pads += [low, total - low]
        return tuple(pads)  # type: ignore[return-value]
    raise UnsupportedOpError(f"pad_type {pad_type!r} is not implemented")


def _padded(x: np.ndarray, pads: Sequence[int], value: float = 0.0) -> np.ndarray:
    top, bottom, left, right = pads
    if not any(pads):
        return x
    n, c, h, w = x.shape
    out = np.full((n, c, h + top + bottom, w + left + right), value, dtype=x.dtype)
    out[:, :, top:top + h, left:left + w] = x
    return out


class ConvWeights:
    """A conv weight prepared once: per-group (O_g, kh*kw*C_g) matrices in tap-major order, or depthwise taps."""

    def __init__(self, weight: np.ndarray, groups: int) -> None:
        w = np.asarray(weight, dtype=F32)
        if w.ndim != 4:
            raise UnsupportedOpError(f"conv weight of rank {w.ndim} (only 2-D convolutions are implemented)")
        self.out_ch, self.group_in, self.kh, self.kw = w.shape
        self.groups = int(groups)
        self.depthwise = self.groups > 1 and self.group_in == 1 and self.out_ch == self.groups
        if self.depthwise:
            self.taps = np.ascontiguousarray(w[:, 0])  # (C, kh, kw)
        else:
            og = self.out_ch // self.groups
            self.mats = [np.ascontiguousarray(w[g * og:(g + 1) * og].transpose(0, 2, 3, 1).reshape(og, -1))
                         for g in range(self.groups)]


def conv(x, weight, bias=None, strides=(1, 1), pad_type="valid", pad=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    """MIL ``conv``: NCHW float32 ``x`` [N, C, H, W] with ``weight`` [O, C/groups, kh, kw]; im2col + one matmul
    per group (depthwise: one multiply-add per tap). Raises UnsupportedOpError for a setting it does not implement."""
    x = _f(x)
    if x.ndim != 4:
        raise UnsupportedOpError(f"conv on a rank-{x.ndim} input (only 2-D convolutions are implemented)")
    cw = weight if isinstance(weight, ConvWeights) else ConvWeights(weight, int(groups))
    (sh, sw), (dh, dw) = (int(s) for s in strides), (int(d) for d in dilations)
    n, c, h, w = x.shape
    if c != cw.group_in * cw.groups:
        raise UnsupportedOpError(f"conv input has {c} channels, weight expects {cw.group_in * cw.groups}")
    pads = _pads(str(pad_type), pad, (h, w), (cw.kh, cw.kw), (sh, sw), (dh, dw))
    xp = _padded(x, pads)
    ho = (h + pads[0] + pads[1] - dh * (cw.kh - 1) - 1) // sh + 1
    wo = (w + pads[2] + pads[3] - dw * (cw.kw - 1) - 1) // sw + 1

    def window(img: np.ndarray, ky: int, kx: int) -> np.ndarray:
        return img[..., ky * dh: ky * dh + sh * (ho - 1) + 1: sh, kx * dw: kx * dw + sw * (wo - 1) + 1: sw]

    if cw.depthwise:
        out = np.zeros((n, cw.out_ch, ho, wo), dtype=F32)
        tmp = np.empty((cw.out_ch, ho, wo), dtype=F32)
        for b in range(n):
            for ky in range(cw.kh):
                for kx in range(cw.kw):
                    np.multiply(window(xp[b], ky, kx), cw.taps[:, ky, kx, None, None], out=tmp)
                    out[b] += tmp
    else:
        og, cg = cw.out_ch // cw.groups, cw.group_in
        out = np.empty((n, cw.out_ch, ho * wo), dtype=F32)
        for b in range(n):
            for g in range(cw.groups):
                img = xp[b, g * cg:(g + 1) * cg]
                if cw.kh == cw.kw == 1 and sh == sw == 1:
                    cols = img.reshape(cg, -1)
                else:
                    cols = np.empty((cw.kh * cw.kw, cg, ho, wo), dtype=F32)
                    for ky in range(cw.kh):
                        for kx in range(cw.kw):
                            cols[ky * cw.kw + kx] = window(img, ky, kx)
                    cols = cols.reshape(cw.kh * cw.kw * cg, ho * wo)
                np.matmul(cw.mats[g], cols, out=out[b, g * og:(g + 1) * og])
        out = out.reshape(n, cw.out_ch, ho, wo)
    if bias is not None:
        out += _f(bias)[None, :, None, None]
    return out


def _prepare_conv(consts: dict[str, Any]) -> dict[str, Any]:
    if isinstance(consts.get("weight"), np.ndarray):
        consts["weight"] = ConvWeights(consts["weight"], int(consts.get("groups", 1)))
    return consts


# -- pooling -------------------------------------------------------------------------------------------------------
def _pool_geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode):
    kh, kw = (int(k) for k in kernel_sizes)
    sh, sw = (int(s) for s in strides)
    h, w = x.shape[-2:]
    pads = _pads(str(pad_type), pad, (h, w), (kh, kw), (sh, sw), (1, 1))
    sizes = []
    for n, k, s, lo, hi in ((h, kh, sh, pads[0], pads[1]), (w, kw, sw, pads[2], pads[3])):
        span = n + lo + hi - k
        out = (-(-span // s) if ceil_mode else span // s) + 1
        if ceil_mode and (out - 1) * s >= n + lo:  # PyTorch: the last window must start inside the input
            out -= 1
        sizes.append(out)
    ho, wo = sizes
    extra_b = max((ho - 1) * sh + kh - (h + pads[0] + pads[1]), 0)
    extra_r = max((wo - 1) * sw + kw - (w + pads[2] + pads[3]), 0)
    return (kh, kw, sh, sw, ho, wo), pads, (extra_b, extra_r)


def _pool(x, geometry, reduce: Callable[[np.ndarray, np.ndarray], np.ndarray]):
    kh, kw, sh, sw, ho, wo = geometry
    acc = None
    for ky in range(kh):
        for kx in range(kw):
            tap = x[..., ky: ky + sh * (ho - 1) + 1: sh, kx: kx + sw * (wo - 1) + 1: sw]
            acc = np.array(tap, dtype=x.dtype) if acc is None else reduce(acc, tap)
    return acc


def avg_pool(x, kernel_sizes, strides, pad_type="valid", pad=(0, 0, 0, 0), exclude_padding_from_average=False,
             ceil_mode=False):
    """MIL ``avg_pool`` of NCHW float32 ``x`` (ceil mode and exclude-padding as the program sets them)."""
    x = _f(x)
    geometry, pads, (extra_b, extra_r) = _pool_geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    full = (pads[0], pads[1] + extra_b, pads[2], pads[3] + extra_r)
    total = _pool(_padded(x, full), geometry, np.add)
    h, w = x.shape[-2:]
    counted = np.zeros((1, 1, h + full[0] + full[1], w + full[2] + full[3]), dtype=F32)
    if exclude_padding_from_average:
        counted[..., pads[0]:pads[0] + h, pads[2]:pads[2] + w] = 1.0
    else:  # explicit padding counts, the ceil-mode overhang does not
        counted[..., :h + pads[0] + pads[1], :w + pads[2] + pads[3]] = 1.0
    count = _pool(counted, geometry, np.add)
    return (total / count).astype(F32, copy=False)


def max_pool(x, kernel_sizes, strides, pad_type="valid", pad=(0, 0, 0, 0), ceil_mode=False):
    x = _f(x)
    geometry, pads, (extra_b, extra_r) = _pool_geometry(x, kernel_sizes, strides, pad_type, pad, ceil_mode)
    full = (pads[0], pads[1] + extra_b, pads[2], pads[3] + extra_r)
    return _pool(_padded(x, full, -np.inf), geometry, np.maximum)


# -- resizing ------------------------------------------------------------------------------------------------------
def _source_coords(n_in: int, n_out: int, align_corners: bool, half_pixel: bool):
    """Bilinear sampling positions per MIL upsample_bilinear: the spacing comes from the sizes (n_in / n_out)."""
    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(i)
    elif half_pixel:
        src = (i + 0.5) * (n_in / n_out) - 0.5
    else:
        src = i * (n_in / n_out)
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(F32)


def _lerp(x: np.ndarray, axis: int, lo, hi, weight: np.ndarray) -> np.ndarray:
    """(1 - w) * x[lo] + w * x[hi] along ``axis`` (-1 or -2), with two gathers and in-place arithmetic."""
    shape = (-1, 1) if axis == -2 else (-1,)
    out = np.take(x, lo, axis=axis)
    out *= (1.0 - weight).reshape(shape)
    upper = np.take(x, hi, axis=axis)
    upper *= weight.reshape(shape)
    out += upper
    return out


def upsample_bilinear(x, scale_factor_height=1.0, scale_factor_width=1.0, align_corners=True,
                      half_pixel_centers=None):
    """MIL ``upsample_bilinear`` of NCHW float32 ``x`` by its scale factors (separable gathers); only the
    half-pixel (align_corners=False) mode this network uses, else UnsupportedOpError."""
    x = _f(x)
    h, w = x.shape[-2:]
    ho = int(math.floor(h * float(np.float32(scale_factor_height))))
    wo = int(math.floor(w * float(np.float32(scale_factor_width))))
    align = bool(align_corners)
    half = (not align) if half_pixel_centers is None else bool(half_pixel_centers)
    if align and half:
        raise UnsupportedOpError("upsample_bilinear with align_corners and half_pixel_centers both true")
    rows = _source_coords(h, ho, align, half)
    cols = _source_coords(w, wo, align, half)
    if wo > w:  # upsampling: the element gather on the small tensor first, then contiguous row copies
        return _lerp(_lerp(x, -1, *cols), -2, *rows)
    return _lerp(_lerp(x, -2, *rows), -1, *cols)


KERNELS: dict[str, Callable[..., Any]] = {
    "add": lambda x, y: np.add(x, y, dtype=F32),
    "sub": lambda x, y: np.subtract(x, y, dtype=F32),
    "mul": lambda x, y: np.multiply(x, y, dtype=F32),
    "real_div": lambda x, y: np.divide(x, y, dtype=F32),
    "maximum": lambda x, y: np.maximum(x, y, dtype=F32),
    "minimum": lambda x, y: np.minimum(x, y, dtype=F32),
    "relu": lambda x: np.maximum(x, F32(0.0)),
    "tanh": lambda x: np.tanh(x, dtype=F32),
    "sqrt": lambda x: np.sqrt(x, dtype=F32),
    "identity": lambda x: x,
    "sigmoid": sigmoid, "sigmoid_hard": sigmoid_hard, "thresholded_relu": thresholded_relu, "clip": clip,
    "cast": cast, "concat": concat, "split": split, "slice_by_index": slice_by_index, "slice_update": slice_update,
    "reduce_mean": reduce_mean, "shape": shape, "gather": gather, "reshape": reshape, "transpose": transpose,
    "conv": conv, "avg_pool": avg_pool, "max_pool": max_pool, "upsample_bilinear": upsample_bilinear,
}
# Ops whose output holds only values of their inputs or constants (no rounding needed in an fp16 program).
EXACT_OPS = frozenset({"relu", "clip", "thresholded_relu", "maximum", "minimum", "identity", "concat", "split",
                       "slice_by_index", "slice_update", "shape", "gather", "reshape", "transpose", "max_pool"})
# Run once at load on an op's constant parameters (e.g. reorder a conv weight for the matmul).
PREPARE: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {"conv": _prepare_conv}
