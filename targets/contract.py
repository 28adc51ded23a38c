"""Export wrappers: the network behind the I/O contract (``src, r1i..r4i[, downsample_ratio] -> fgr, pha, r1o..r4o``).

These wrap :class:`model.MattingNetwork` for tracing; the network's own ``forward`` has no export branches.

- Static contract (resolution and ratio fixed): at ratio 1 it calls ``forward`` (no refiner); otherwise it composes
  the network's pieces with :func:`refine_and_compose`, the refiner tail rearranged to touch full resolution less.
- Both sample the low-res frame exactly where PyTorch does (targets/resample.py): the runtime's resize where that
  is exact, PyTorch's own taps otherwise (computed in the graph from the ratio input in the dynamic contract).
- Dynamic contract (any H x W, runtime ratio): the refiner is gated without a branch: at ratio 1 its low-res
  coefficients become A = 0, b = y, so the upsampled output is exactly the unrefined prediction (an identity-size
  bilinear resize copies its input). At any other ratio the gate passes A and b through unchanged. This is what
  makes the dynamic graph equal PyTorch at 1.0.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from model import MattingNetwork
from rvm_export.spec import IOSpec, Layout

from .resample import dynamic_downsample, static_downsample

__all__ = ["StaticContract", "DynamicContract", "contract_module", "example_inputs",
           "refine_and_compose"]


def _up(x: Tensor, size) -> Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def refine_and_compose(src: Tensor, a: Tensor, b: Tensor, size: tuple[int, int] | None = None,
                       planar: bool = True) -> tuple[Tensor, Tensor]:
    """The refiner's full-resolution tail and the final composition in few full-resolution passes.

    Same algebra as ``apply_coefficients`` followed by ``compose`` (the filter is per channel:
    fgr = clamp(A_rgb * src + b_rgb + src), pha = clamp(A_g * mean(src) + b_g)), rearranged so that the ``+ src`` folds
    into the low-res coefficients (bilinear weights sum to one), all eight coefficient planes are upsampled by one
    resize, and no 4-channel guide is concatenated or split at full resolution. The reshape to [N, 2, 4, H, W] lets
    OpenVINO's CPU plugin keep the arithmetic planar (measured ~20 % faster there in f32).
    Differs from PyTorch's order of operations by float32 rounding only (~1e-7); exact at ratio 1 (A = 0, b = y).
    ``size`` is the full-resolution (H, W) as Python ints for static graphs (converters such as coremltools need
    constant resize sizes); None takes it from ``src`` at run time (dynamic graphs). ``planar=False`` upsamples the
    four coefficient groups separately instead: in a channels-last graph (TFLite NHWC) the 5-D view, or one resize
    split along channels, made the converter add transposes (measured: 2-4 TRANSPOSE ops; none this way).
    ONNX Runtime also prefers ``planar=False``: its Gather/Slice on the 5-D view copy full-resolution planes (side by
    side at 1920x1080 @ 0.25, 2 threads: 135 ms grouped vs 158 ms planar per frame).
    """
    size = size or (src.size(2), src.size(3))
    a_rgb, a_gray = a.split([3, 1], dim=1)
    if planar:
        planes = _up(torch.cat([a_rgb + 1.0, a_gray, b], dim=1), size).reshape(-1, 2, 4, size[0], size[1])
        scale_rgb, scale_gray, offset_rgb, offset_gray = (planes[:, 0, 0:3], planes[:, 0, 3:4], planes[:, 1, 0:3],
                                                          planes[:, 1, 3:4])  # [:, 0] scales A', [:, 1] offsets b
    else:
        b_rgb, b_gray = b.split([3, 1], dim=1)
        scale_rgb, scale_gray, offset_rgb, offset_gray = (_up(t, size) for t in (a_rgb + 1.0, a_gray, b_rgb, b_gray))
    fgr = scale_rgb * src + offset_rgb
    pha = scale_gray * src.mean(dim=1, keepdim=True) + offset_gray
    return fgr.clamp(0.0, 1.0), pha.clamp(0.0, 1.0)


class _Contract(nn.Module):
    """``planar``: the layout of the refiner tail (:func:`refine_and_compose`); None picks planar for NCHW graphs and
    grouped for NHWC ones. Targets that measured otherwise pass it explicitly (ONNX: grouped; OpenVINO: planar)."""

    def __init__(self, model: MattingNetwork, spec: IOSpec, planar: bool | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.spec = spec
        self.nhwc = spec.layout == Layout.NHWC
        self.planar = (not self.nhwc) if planar is None else planar

    def _in(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2) if self.nhwc else x

    def _out(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1) if self.nhwc else x


class StaticContract(_Contract):
    """Fixed resolution and ratio: ``forward(src, r1i, r2i, r3i, r4i)``."""

    def __init__(self, model: MattingNetwork, spec: IOSpec, exact_resize: bool = True,
                 planar: bool | None = None) -> None:
        super().__init__(model, spec, planar)
        if spec.bucket is None:
            raise ValueError("StaticContract needs a spec with a fixed bucket")
        self.ratio = spec.bucket.ratio
        self.exact_resize = exact_resize  # False: the runtime's own resize even where it samples elsewhere

    def forward(self, src: Tensor, r1i: Tensor, r2i: Tensor, r3i: Tensor, r4i: Tensor) -> tuple[Tensor, ...]:
        states = [self._in(r) for r in (r1i, r2i, r3i, r4i)]
        src = self._in(src)
        if self.ratio == 1.0:  # no refiner: exactly what forward() runs
            outputs = self.model(src, *states, downsample_ratio=1.0)
            return tuple(self._out(t) for t in outputs)
        m = self.model
        src_sm = (static_downsample(src, self.ratio, m.downsample) if self.exact_resize
                  else m.downsample(src, self.ratio))
        hid, new_states = m.encode_decode(src_sm, states)
        fgr_residual, pha = m.project_mat(hid).split([3, 1], dim=1)
        a, b, _ = m.refiner.coefficients(src_sm, fgr_residual, pha, hid)
        fgr, pha = refine_and_compose(src, a, b, (self.spec.bucket.height, self.spec.bucket.width),
                                      planar=self.planar)
        return tuple(self._out(t) for t in (fgr, pha, *new_states))


class DynamicContract(_Contract):
    """Any resolution, runtime ratio: ``forward(src, r1i, r2i, r3i, r4i, downsample_ratio)``."""

    def forward(self, src: Tensor, r1i: Tensor, r2i: Tensor, r3i: Tensor, r4i: Tensor,
                downsample_ratio: Tensor) -> tuple[Tensor, ...]:
        m = self.model
        src = self._in(src)
        src_sm = dynamic_downsample(src, downsample_ratio)
        hid, states = m.encode_decode(src_sm, [self._in(r) for r in (r1i, r2i, r3i, r4i)])
        fgr_residual, pha = m.project_mat(hid).split([3, 1], dim=1)
        a, b, y = m.refiner.coefficients(src_sm, fgr_residual, pha, hid)
        at_full_res = (downsample_ratio.reshape(1, 1, 1, 1) == 1.0)
        a = torch.where(at_full_res, torch.zeros_like(a), a)
        b = torch.where(at_full_res, y, b)
        fgr, pha = refine_and_compose(src, a, b, planar=self.planar)
        return tuple(self._out(t) for t in (fgr, pha, *states))


def contract_module(model: MattingNetwork, spec: IOSpec, planar: bool | None = None) -> _Contract:
    return DynamicContract(model, spec, planar) if spec.dynamic else StaticContract(model, spec, planar=planar)


def example_inputs(spec: IOSpec, bucket=None, seed: int = 0) -> tuple[Tensor, ...]:
    """Tracing inputs in the contract's order and layout: a random frame, zero states, the ratio if dynamic."""
    bucket = bucket or spec.bucket
    gen = torch.Generator().manual_seed(seed)
    src = torch.rand(1, 3, bucket.height, bucket.width, generator=gen)
    arrays = spec.zero_states(bucket, dtype="float32")
    states = [torch.from_numpy(arrays[k]) for k in ("r1i", "r2i", "r3i", "r4i")]
    src = src.permute(0, 2, 3, 1).contiguous() if spec.layout == Layout.NHWC else src
    inputs: list[Tensor] = [src, *states]
    if spec.dynamic:
        inputs.append(torch.tensor([bucket.ratio], dtype=torch.float32))
    return tuple(inputs)


