"""The OpenVINO export's one graph rewrite: the refiner's full-resolution tail laid out for OpenVINO's CPU plugin.

``targets.contract.refine_and_compose`` (upsample A and b per channel group, then multiply-add) is what the ONNX
target exports. OpenVINO's CPU plugin runs those full-resolution Resizes channels-last and then splits channels with
a reference kernel; measured side by side at 1920x1080 @ 0.25 (2 threads, shared machine, interleaved, medians) the
layout below is ~20 % faster in f32 and ~33 % faster in bf16 than that tail, and not slower on ONNX Runtime:

- one bilinear Resize of all eight low-res coefficient channels ``[A_rgb + 1, A_gray, b_rgb, b_gray]``;
- a reshape to ``[N, 2, 4, H, W]``, after which the plugin keeps the arithmetic planar (channel slices are free);
- fgr = clamp(A'_rgb * src + b_rgb), pha = clamp(A_gray * mean(src) + b_gray).

Same algebra as ``refine_and_compose`` (the ``+ src`` folded into A since bilinear weights sum to one); differs from
PyTorch by float32 rounding (~1e-7). Applied only while this target traces, through :func:`openvino_tail`.

Also here: graph walks shared by the int8 and stateful steps, which must not depend on how the ratio downsample is
built (a Resize, or PyTorch's taps as Gather/Multiply): :func:`stem_convolution` finds the backbone's first
convolution (the only one reading 3 channels), whose input is the low-res frame.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

__all__ = ["refine_and_compose_planar", "openvino_tail", "stem_convolution", "ancestors", "descendants"]


def refine_and_compose_planar(src, a, b, size: tuple[int, int] | None = None):
    """Drop-in for ``targets.contract.refine_and_compose`` (same signature: ``size`` as Python ints for static
    graphs, None to take it from ``src`` at run time)."""
    import torch
    from torch.nn import functional as F

    size = size or (src.size(2), src.size(3))
    a_rgb, a_gray = a.split([3, 1], dim=1)
    coeffs = F.interpolate(torch.cat([a_rgb + 1.0, a_gray, b], dim=1), size=size, mode="bilinear",
                           align_corners=False)
    coeffs = coeffs.reshape(src.size(0), 2, 4, size[0], size[1])  # [:, 0] = A' (scale), [:, 1] = b (offset)
    fgr = coeffs[:, 0, 0:3] * src + coeffs[:, 1, 0:3]
    pha = coeffs[:, 0, 3:4] * src.mean(dim=1, keepdim=True) + coeffs[:, 1, 3:4]
    return fgr.clamp(0.0, 1.0), pha.clamp(0.0, 1.0)


@contextmanager
def openvino_tail() -> Iterator[None]:
    """Export wrappers use :func:`refine_and_compose_planar` inside this block (process-wide; exports are serial)."""
    from . import contract

    original = contract.refine_and_compose
    contract.refine_and_compose = refine_and_compose_planar
    try:
        yield
    finally:
        contract.refine_and_compose = original


def stem_convolution(ov_model):
    """The backbone's first convolution: the only Convolution with 3 input channels (MobileNetV3 and ResNet-50)."""
    from rvm_export.errors import ExportFailedError

    found = [op for op in ov_model.get_ordered_ops() if op.get_type_name() == "Convolution"
             and op.input_value(1).get_partial_shape().rank.get_length() == 4
             and op.input_value(1).get_partial_shape()[1].is_static
             and op.input_value(1).get_partial_shape()[1].get_length() == 3]
    if len(found) != 1:
        raise ExportFailedError(f"expected one convolution reading the 3-channel low-res frame, found {len(found)}")
    return found[0]


def ancestors(nodes) -> dict[str, object]:
    """{unique name: node} of every node the given nodes depend on (themselves excluded)."""
    seen: dict[str, object] = {}
    frontier = list(nodes)
    while frontier:
        for value in frontier.pop().input_values():
            producer = value.get_node()
            if producer.get_name() not in seen:
                seen[producer.get_name()] = producer
                frontier.append(producer)
    return seen


def descendants(nodes) -> dict[str, object]:
    """{unique name: node} of every node that depends on the given nodes (themselves excluded)."""
    seen: dict[str, object] = {}
    frontier = list(nodes)
    while frontier:
        for output in frontier.pop().outputs():
            for target in output.get_target_inputs():
                consumer = target.get_node()
                if consumer.get_name() not in seen:
                    seen[consumer.get_name()] = consumer
                    frontier.append(consumer)
    return seen
