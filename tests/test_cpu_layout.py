"""targets/onnx/cpu_layout.py: the channel padding and identity-slice removal change no value, and the padded
convolution really runs in ONNX Runtime's blocked (NCHWc) kernel."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from targets.onnx.cpu_layout import cpu_layout  # noqa: E402


def _decoder_like(seed: int = 0):
    """x [1,32,6,8] upsampled-and-cropped stand-in (an identity Slice), concat with a 3-channel image, 3x3 conv to
    16 channels: decode0's shape pattern (35 input channels)."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((16, 35, 3, 3)).astype(np.float32)
    bias = rng.standard_normal(16).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b"),
             numpy_helper.from_array(np.array([0, 0], np.int64), "starts"),
             numpy_helper.from_array(np.array([6, 8], np.int64), "ends"),
             numpy_helper.from_array(np.array([2, 3], np.int64), "axes")]
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["xc"], name="crop"),
             helper.make_node("Concat", ["xc", "s"], ["cat"], name="cat", axis=1),
             helper.make_node("Conv", ["cat", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["y"], ["out"], name="relu")]
    graph = helper.make_graph(nodes, "decoder_like",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 6, 8]),
                               helper.make_tensor_value_info("s", TensorProto.FLOAT, [1, 3, 6, 8])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 16, 6, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _run(model, feeds, optimized=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimized:
        so.optimized_model_filepath = str(optimized)
    session = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def test_padding_keeps_values_and_reaches_the_nchwc_kernel(tmp_path):
    model = _decoder_like()
    rng = np.random.default_rng(1)
    feeds = {"x": rng.random((1, 32, 6, 8), dtype=np.float32), "s": rng.random((1, 3, 6, 8), dtype=np.float32)}
    before = _run(model, feeds, tmp_path / "before.onnx")
    changes = cpu_layout(model)
    assert changes == {"convs_padded_to_nchwc": 1, "identity_slices_removed": 1}
    weight = next(numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "w")
    assert weight.shape == (16, 40, 3, 3) and not weight[:, 35:].any()
    assert not any(n.op_type == "Slice" for n in model.graph.node)
    after = _run(model, feeds, tmp_path / "after.onnx")
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)  # same products, another summation order

    def nchwc_convs(path):
        return sum(n.op_type == "Conv" and n.domain == "com.microsoft.nchwc" for n in onnx.load(str(path)).graph.node)

    assert nchwc_convs(tmp_path / "before.onnx") == 0  # 35 input channels: ORT's im2col path
    # the padded convolution, and the 1x1 convolution that makes the zero channels (3 inputs: below the block)
    assert nchwc_convs(tmp_path / "after.onnx") == 2
    assert not any(n.op_type == "Pad" for n in model.graph.node)  # CoreML MLProgram lists no Pad


def test_leaves_aligned_and_shared_inputs_alone():
    model = _decoder_like()
    model.graph.node[2].output[0] = "y"
    extra = helper.make_node("Identity", ["cat"], ["cat_copy"], name="second_use")  # the Concat has another user
    model.graph.node.append(extra)
    model.graph.output.append(helper.make_tensor_value_info("cat_copy", TensorProto.FLOAT, [1, 35, 6, 8]))
    assert cpu_layout(model, pad_channels=True)["convs_padded_to_nchwc"] == 0
    assert cpu_layout(_decoder_like(), pad_channels=False)["convs_padded_to_nchwc"] == 0
