"""Graph edits that let ONNX Runtime's CPU provider run every convolution in its blocked (NCHWc) layout.

ONNX Runtime rewrites a ``Conv`` into its fast NCHWc kernel only when the input channel count is a multiple of the
MLAS block size (8 with AVX2, 16 with AVX-512) or below it (onnxruntime/core/optimizer/nchwc_transformer.cc,
``TransformConv``). RVM's decoder convolves ``concat([x, skip, image])`` with a 3-channel image, so its four widest
convolutions (171, 107, 59 and 35 input channels for MobileNetV3) fell back to im2col + GEMM: a fifth of the frame
at 1920x1080 @ 0.25. :func:`pad_concat_conv_channels` appends zero channels to the last input of each such Concat
and zero input-channel slices to the convolution's weights, so the sums are unchanged: every added product is
``0 * 0``. The zero channels come from a 1x1 ``Conv`` whose weight is the identity over the input's channels and zero
beyond (each output is ``x * 1`` plus exact zeros, so the input's values pass unchanged), not from ``Pad``: ONNX
Runtime's CoreML MLProgram provider lists no ``Pad``, and the static graph must stay whole there
(targets/onnx/mobile.py). :func:`drop_identity_slices` removes the decoder's crops that keep the whole tensor (the
upsampled map already has the skip's size), each a full copy on ONNX Runtime.

Both act on a static-shape or dynamic graph (channel counts are always static); shapes come from ONNX shape
inference. They change no value: the convolution sums the same products (ONNX Runtime's blocked kernel adds them in
its own order, as any kernel choice does: float32 rounding, ~1e-7).
"""
from __future__ import annotations

import numpy as np

__all__ = ["BLOCK", "PAD_SUFFIX", "pad_concat_conv_channels", "drop_identity_slices", "cpu_layout"]

PAD_SUFFIX = "/pad_channels"  # name suffix of the zero-channel 1x1 Convs (int8 keeps them and their Convs float)
BLOCK = 8  # MLAS NCHWc block on AVX2; AVX-512 machines use 16 (a multiple of 8 is still a valid NCHWc input there
# for every decoder convolution but decode0's 40 channels)


def _shapes(model) -> dict[str, list]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    out = {}
    for value in (*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        out[value.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return out


def _consumers(graph) -> dict[str, list]:
    users: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    for value in graph.output:
        users.setdefault(value.name, []).append(None)
    return users


def pad_concat_conv_channels(model, block: int = BLOCK) -> int:
    """Pad with zero channels, in place, every ``Concat -> Conv`` (group 1, constant 4-D float weights,
    ``C >= block`` input channels, ``C % block != 0``, the Concat used by nothing else, along axis 1) to the next
    multiple of ``block``.

    Returns the number of convolutions padded."""
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    users = _consumers(graph)
    shapes = _shapes(model)
    padded = 0
    for conv in list(graph.node):
        if conv.op_type != "Conv" or conv.input[1] not in inits:
            continue
        if any(a.name == "group" and a.i != 1 for a in conv.attribute):
            continue
        weight = numpy_helper.to_array(inits[conv.input[1]])
        if weight.ndim != 4 or weight.dtype != np.float32:
            continue
        channels = weight.shape[1]
        extra = (-channels) % block
        concat = producers.get(conv.input[0])
        if channels < block or extra == 0 or concat is None or concat.op_type != "Concat":
            continue
        axis = next((a.i for a in concat.attribute if a.name == "axis"), None)
        last = concat.input[-1]
        if axis not in (1, -3) or len(users.get(conv.input[0], [])) != 1 or len(shapes.get(last, [])) != 4:
            continue
        if sum(1 for n in graph.node for i in n.input if i == conv.input[1]) != 1:
            continue  # a shared weight: leave it
        width = shapes[last][1]
        if not isinstance(width, int) or width <= 0:
            continue
        eye_name = f"{last}__pad{extra}_channels"
        eye = np.zeros((width + extra, width, 1, 1), np.float32)
        eye[np.arange(width), np.arange(width)] = 1.0
        graph.initializer.append(numpy_helper.from_array(eye, eye_name))
        padded_name = f"{last}__padded{extra}"
        pad = helper.make_node("Conv", [last, eye_name], [padded_name], name=f"{concat.name}{PAD_SUFFIX}",
                               kernel_shape=[1, 1])
        graph.node.insert(list(graph.node).index(concat), pad)
        concat.input[-1] = padded_name
        wide = np.concatenate([weight, np.zeros((weight.shape[0], extra, *weight.shape[2:]), np.float32)], axis=1)
        inits[conv.input[1]].CopyFrom(numpy_helper.from_array(wide, conv.input[1]))
        padded += 1
    if padded:
        # the Concat's output grew: drop stale shape annotations so checkers and runtimes re-infer them
        stale = {n.output[0] for n in graph.node if n.op_type == "Concat"}
        keep = [v for v in graph.value_info if v.name not in stale]
        del graph.value_info[:]
        graph.value_info.extend(keep)
        onnx.checker.check_model(model)
    return padded


def drop_identity_slices(model) -> int:
    """Remove, in place, every ``Slice`` whose output has its input's (fully known) shape: a copy of the whole
    tensor. Returns the number removed."""
    graph = model.graph
    shapes = _shapes(model)
    outputs = {o.name for o in graph.output}
    removed = 0
    for node in list(graph.node):
        if node.op_type != "Slice" or node.output[0] in outputs:
            continue
        src, dst = shapes.get(node.input[0]), shapes.get(node.output[0])
        if not src or src != dst or any(not isinstance(d, int) or d <= 0 for d in src):
            continue
        for other in graph.node:
            for k, name in enumerate(other.input):
                if name == node.output[0]:
                    other.input[k] = node.input[0]
        graph.node.remove(node)
        removed += 1
    if removed:
        used = {i for n in graph.node for i in n.input}
        unused = [t for t in graph.initializer if t.name not in used]
        for tensor in unused:
            graph.initializer.remove(tensor)
    return removed


def cpu_layout(model, pad_channels: bool = True) -> dict[str, int]:
    """Both edits (the padding only with ``pad_channels``: the NCHWc kernels are float32, so a float16 graph gains
    nothing from it; int8 graphs keep the padded convolutions float, quantize.py); returns what was changed (for the
    manifest's details)."""
    return {"convs_padded_to_nchwc": pad_concat_conv_channels(model) if pad_channels else 0,
            "identity_slices_removed": drop_identity_slices(model)}
