"""Web target without a browser: request checks, the pool rewrite, the web graph's rules and numbers on ONNX Runtime
CPU, the contract sidecar, golden frames, and the pieces of the runner that need no page."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rvm_export.core.errors import ExportFailedError, UsageError
from rvm_export.golden import read_golden, write_golden_frames
from rvm_export.core.bucket import Bucket
from rvm_export.core.spec import IOSpec, Layout, Precision
from targets import web
from rvm_export.core.request import ExportRequest

pytestmark = pytest.mark.web
ODD = Bucket(90, 54, 0.5)  # low-res 45x27: every decoder pool sees an odd side


def _request(precision="fp32", dynamic=False, layout=Layout.NCHW, options=None, buckets=(ODD,)):
    return ExportRequest("mobilenetv3", "deep_guided_filter", buckets, dynamic, Precision(precision), layout,
                         options=web.WebOptions.parse("web", options))


@pytest.mark.parametrize("text,expected", [
    ("wasm:1,wasm:2,webgpu", (("wasm", 1), ("wasm", 2), ("webgpu", 0))),
    ("wasm", (("wasm", 1),)),
    ("webgpu, wasm:4, webgpu", (("webgpu", 0), ("wasm", 4))),
], ids=["default", "bare-wasm", "dedupe"])
def test_parse_backends(text, expected):
    assert web.parse_backends(text) == expected


@pytest.mark.parametrize("text", ["webgl", "wasm:x", "wasm:0", "webgpu:2", ""], ids=str)
def test_parse_backends_refuses(text):
    with pytest.raises(UsageError):
        web.parse_backends(text)


@pytest.mark.parametrize("kwargs,needle", [
    ({"precision": "int8"}, "int8"),
    ({"dynamic": True}, "static"),
    ({"layout": Layout.NHWC}, "NCHW only"),
    ({"options": {"threads": 2}}, "unknown web option"),
    ({"options": {"backends": "webgl"}}, "unknown web backend"),
    ({"buckets": ()}, "--resolution"),
], ids=["int8", "dynamic", "nhwc", "unknown-option", "bad-backend", "no-bucket"])
def test_check_request_refuses(kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        web.check_request(_request(**kwargs))


@pytest.mark.parametrize("h,w", [(36, 64), (27, 45), (9, 16), (5, 8), (1, 1)], ids=str)
def test_pool_rewrite_equals_ceil_mode_pool(h, w):
    from targets.traced.rewrites import export_friendly

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = torch.nn.Module()
            self.decoder.avgpool = torch.nn.AvgPool2d(2, 2, count_include_pad=False, ceil_mode=True)

    holder = Holder()
    x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    expected = holder.decoder.avgpool(x)
    original = holder.decoder.avgpool
    with export_friendly(holder):
        got = holder.decoder.avgpool(x)
    assert holder.decoder.avgpool is original
    assert got.shape == expected.shape
    assert float((got - expected).abs().max()) <= 1e-7  # x/4*2 and x/2 differ only in the order of the sum


def _graph(node, dtype=1):
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])
    y = helper.make_tensor_value_info("y", dtype, None)
    return helper.make_model(helper.make_graph([node], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("case", ["cast-double", "ceil-pool"])
def test_check_web_graph_refuses(case, tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from targets.web.export import check_web_graph

    if case == "cast-double":
        model = _graph(helper.make_node("Cast", ["x"], ["y"], to=TensorProto.DOUBLE), TensorProto.DOUBLE)
        needle = "float64"
    else:
        model = _graph(helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2],
                                        ceil_mode=1))
        needle = "ceil-mode"
    path = tmp_path / "g.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ExportFailedError, match=needle):
        check_web_graph(path)


@pytest.fixture(scope="module")
def odd_export(golden_model, tmp_path_factory):
    pytest.importorskip("onnxsim")
    from targets.web.export import export_model

    out = tmp_path_factory.mktemp("web_odd")
    spec = IOSpec("mobilenetv3", "deep_guided_filter", ODD)
    path = out / "odd.onnx"
    details = export_model(golden_model, spec, path, _request())
    return path, details, spec


def test_web_graph_at_odd_size_is_clean_and_matches_pytorch(odd_export, golden_model):
    """The web graph at an odd size: no ceil-mode pool, no float64, and on ONNX Runtime CPU the same numbers as
    PyTorch over a rollout with states fed back (the browser tests cover the browser at an even-odd size)."""
    import onnxruntime as ort

    from rvm_export.core.rollout import TorchStream
    from rvm_export.core.rollout import MovingScene
    from targets.web.export import check_web_graph

    path, details, spec = odd_export
    assert check_web_graph(path)["ops"] == details["ops"]
    assert details["ops"]["AveragePool"] == 3
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    states = spec.zero_states(ODD)
    reference = TorchStream(golden_model, ODD)
    worst = 0.0
    for frame in MovingScene(ODD.width, ODD.height, 6, seed=3):
        expected = reference.step(frame)
        got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"src": frame, **states})))
        states = {f"r{k}i": got[f"r{k}o"] for k in range(1, 5)}
        worst = max(worst, max(float(np.abs(got[n] - expected[n]).max()) for n in expected))
    assert worst <= 1e-4, worst


def test_contract_sidecar_has_exact_zero_states(odd_export):
    path, _, spec = odd_export
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["format"] == "rvm-export web contract 1"
    assert sidecar["model"] == path.name and sidecar["precision"] == "fp32"
    assert sidecar["zero_states"] == {k: list(v) for k, v in spec.concrete_state_shapes(ODD).items()}
    assert sidecar["zero_states"]["r1i"] == [1, 16, 14, 23]  # ceil(27/2) x ceil(45/2): never [1, 1, 1, 1]
    assert json.loads((path.parent / "models.json").read_text())["models"][0]["model"] == path.name


def test_golden_frames_round_trip(golden_model, tmp_path):
    from rvm_export.core.rollout import TorchStream
    from rvm_export.core.rollout import MovingScene
    from rvm_export.core.request import Artifact

    bucket = Bucket(64, 36, 0.5)
    spec = IOSpec("mobilenetv3", "deep_guided_filter", bucket)
    artifact = Artifact("web", tmp_path / "web" / "m.onnx", Precision.FP32, spec, "static", (bucket,),
                        {"backend": "wasm", "threads": 2})
    index = write_golden_frames(tmp_path, golden_model, bucket, 3, artifacts=[artifact])
    frames = read_golden(index, bucket)
    reference = TorchStream(golden_model, bucket)
    for frame, src in zip(frames, MovingScene(64, 36, 3, seed=0)):
        assert np.array_equal(frame["src"], src)
        expected = reference.step(src)
        for name in ("fgr", "pha", "r1o", "r2o", "r3o", "r4o"):
            assert np.array_equal(frame[name], expected[name]), name
    entry = json.loads(index.read_text())["buckets"]["64x36@0.5"]
    assert entry["artifacts"] == [{"path": "web/m.onnx", "target": "web", "precision": "fp32", "backend": "wasm:2",
                                   "tolerance": entry["artifacts"][0]["tolerance"]}]
    assert entry["artifacts"][0]["tolerance"]["frame_max"] == 1e-4
    write_golden_frames(tmp_path, golden_model, bucket, 3, artifacts=[])  # same clip: the listed artifact stays
    assert len(json.loads(index.read_text())["buckets"]["64x36@0.5"]["artifacts"]) == 1
    tampered = tmp_path / "golden" / entry["frames"][1]["expected"]["pha"]["file"]
    data = bytearray(tampered.read_bytes())
    data[0] ^= 1
    tampered.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256"):
        read_golden(index, "64x36@0.5")


def test_bench_reports_the_runtime_own_time():
    from rvm_export.bench import BenchEntry, bench_side_by_side

    class Stream:
        timed_ms = None

        def step(self, src):
            self.timed_ms = 42.0
            return {}

    class Runner:
        label = "fake"

        def stream(self, bucket):
            return Stream()

    result = bench_side_by_side([BenchEntry("x", Runner)], Bucket(64, 36, 0.5), frames=3, warmup=0,
                                progress=False, settle_ms=0)[0]
    assert (result.median_ms, result.first_frame_ms) == (42.0, 42.0)


def test_labels_say_where_nodes_ran():
    from targets.web.runtime import backend_label, node_placement

    line = "error: ... VerifyEachNodeIsAssignedToAnEp]  All nodes placed on [JsExecutionProvider]. Number of nodes: 220"
    logs = [line]
    placement = node_placement(logs)
    assert placement == {"JsExecutionProvider": 220}
    info = {"backend": "webgpu", "ortVersion": "1.30.0", "layout": "NCHW",
            "adapter": {"vendor": "google", "architecture": "swiftshader", "fallback": True}}
    label = backend_label(info, "156.0", placement)
    assert "software adapter, not a GPU" in label and "all 220 nodes on WebGPU" in label
    split = node_placement(["Node(s) placed on [JsExecutionProvider]. Number of nodes: 200",
                            "Node(s) placed on [CPUExecutionProvider]. Number of nodes: 3"])
    assert "200 nodes on WebGPU, 3 on CPUExecutionProvider" in backend_label(info, "156.0", split)
    wasm = backend_label({"backend": "wasm", "threads": 2, "ortVersion": "1.30.0"}, "156.0")
    assert wasm == "onnxruntime-web 1.30.0 WASM, 2 threads, Chromium 156.0 headless"


def test_missing_names_the_install_line(monkeypatch, tmp_path):
    monkeypatch.setenv("RVM_EXPORT_CHROMIUM", str(tmp_path / "no-chromium"))
    problem = web.missing()
    if problem and "chromium" not in problem:
        pytest.skip(f"an earlier requirement is missing here: {problem}")
    assert problem is not None and "apt-get install -y chromium" in problem


def test_registered_but_not_in_target_all():
    from targets import REGISTRY, all_targets

    assert REGISTRY["web"] == "targets.web" and "web" not in all_targets()
    d = web.DESCRIPTION
    assert (d.name, d.precisions, d.default_precision, d.dynamic_precisions) == (
        "web", (Precision.FP32, Precision.FP16), Precision.FP32, frozenset())
