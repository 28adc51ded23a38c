"""Export wrappers: the network behind the I/O contract (``src, r1i..r4i[, downsample_ratio] -> fgr, pha, r1o..r4o``).

These wrap :class:`model.MattingNetwork` for tracing; the network's own ``forward`` has no export branches.

- Static contract (resolution and ratio fixed): at ratio 1 it calls ``forward`` (no refiner); otherwise it composes
  the network's pieces with :func:`targets.refiner_tail.refine_and_compose`, the refiner tail rearranged to touch
  full resolution less, in the layout the target asks for (``tail``).
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

from model import MattingNetwork
from rvm_export.core.spec import IOSpec, Layout

from .refiner_tail import describe_tail, refine_and_compose, resolve_tail
from .resample import dynamic_downsample, static_downsample

__all__ = ["StaticContract", "DynamicContract", "contract_module", "example_inputs", "effective_tail",
           "tail_description", "refine_and_compose"]


def default_tail(spec: IOSpec) -> str:
    return "grouped" if spec.layout == Layout.NHWC else "planar"


def effective_tail(spec: IOSpec, tail: str | None = None) -> str:
    """The refiner-tail layout a graph for ``spec`` gets when ``tail`` is asked for (None: the layout's default)."""
    bucket = spec.bucket
    full = (bucket.height, bucket.width) if bucket is not None and bucket.ratio != 1.0 else None
    return resolve_tail(tail or default_tail(spec), full, bucket.lowres if full else None)


def tail_description(spec: IOSpec, tail: str | None = None) -> str:
    """For the manifest's details: which tail a graph for ``spec`` has (a static graph at ratio 1 has none)."""
    if spec.bucket is not None and spec.bucket.ratio == 1.0:
        return "none (ratio 1: no refiner)"
    return describe_tail(effective_tail(spec, tail))


class _Contract(nn.Module):
    """``tail``: the layout of the refiner tail (targets/refiner_tail.py); None picks planar for NCHW graphs and
    grouped for NHWC ones. Targets that measured otherwise pass it explicitly (ONNX: grouped; OpenVINO: phases)."""

    def __init__(self, model: MattingNetwork, spec: IOSpec, tail: str | None = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.spec = spec
        self.nhwc = spec.layout == Layout.NHWC
        self.tail = effective_tail(spec, tail)

    def _in(self, x: Tensor) -> Tensor:
        return x.permute(0, 3, 1, 2) if self.nhwc else x

    def _out(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1) if self.nhwc else x


class StaticContract(_Contract):
    """Fixed resolution and ratio: ``forward(src, r1i, r2i, r3i, r4i)``."""

    def __init__(self, model: MattingNetwork, spec: IOSpec, exact_resize: bool = True,
                 tail: str | None = None) -> None:
        super().__init__(model, spec, tail)
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
        a, b, _ = m.refiner.coefficients_of(src_sm, m.project_mat(hid), hid)  # y = [fgr_residual, pha] as is
        fgr, pha = refine_and_compose(src, a, b, (self.spec.bucket.height, self.spec.bucket.width), self.tail)
        return tuple(self._out(t) for t in (fgr, pha, *new_states))


class DynamicContract(_Contract):
    """Any resolution, runtime ratio: ``forward(src, r1i, r2i, r3i, r4i, downsample_ratio)``."""

    def forward(self, src: Tensor, r1i: Tensor, r2i: Tensor, r3i: Tensor, r4i: Tensor,
                downsample_ratio: Tensor) -> tuple[Tensor, ...]:
        m = self.model
        src = self._in(src)
        src_sm = dynamic_downsample(src, downsample_ratio)
        hid, states = m.encode_decode(src_sm, [self._in(r) for r in (r1i, r2i, r3i, r4i)])
        a, b, y = m.refiner.coefficients_of(src_sm, m.project_mat(hid), hid)
        at_full_res = (downsample_ratio.reshape(1, 1, 1, 1) == 1.0)
        a = torch.where(at_full_res, torch.zeros_like(a), a)
        b = torch.where(at_full_res, y, b)
        fgr, pha = refine_and_compose(src, a, b, tail=self.tail)
        return tuple(self._out(t) for t in (fgr, pha, *states))


def contract_module(model: MattingNetwork, spec: IOSpec, tail: str | None = None) -> _Contract:
    """The module traced for ``spec``: :class:`DynamicContract` for a dynamic spec, :class:`StaticContract`
    otherwise; ``tail``: the refiner tail's layout (targets/traced/refiner_tail.py)."""
    return DynamicContract(model, spec, tail) if spec.dynamic else StaticContract(model, spec, tail=tail)


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


