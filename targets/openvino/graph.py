"""Graph walks of the OpenVINO export, shared by the int8 and stateful steps, which must not depend on how the ratio
downsample is built (a Resize, or PyTorch's taps as Gather/Multiply): :func:`stem_convolution` finds the backbone's
first convolution (the only one reading 3 channels), whose input is the low-res frame.
"""
from __future__ import annotations

from rvm_export.core.errors import ExportFailedError

__all__ = ["stem_convolution", "ancestors", "descendants"]


def stem_convolution(ov_model):
    """The backbone's first convolution: the only Convolution with 3 input channels (MobileNetV3 and ResNet-50)."""
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
