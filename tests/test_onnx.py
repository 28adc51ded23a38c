"""ONNX target: golden cases through ONNX Runtime, the I/O contract in the file, rollout parity per precision."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from rvm_export.core.errors import ToleranceError, UsageError  # noqa: E402
from rvm_export.parity import compare_rollout  # noqa: E402
from rvm_export.core.rollout import TorchStream  # noqa: E402
from rvm_export.core.rollout import MovingScene  # noqa: E402
from rvm_export.core.bucket import Bucket  # noqa: E402
from rvm_export.core.names import OUTPUT_NAMES  # noqa: E402
from rvm_export.core.spec import Layout, Precision  # noqa: E402
from rvm_export.tolerances import tolerance_for  # noqa: E402
from targets import onnx as onnx_target  # noqa: E402
from rvm_export.core.request import ExportRequest, RuntimeOptions  # noqa: E402

pytestmark = pytest.mark.onnx
OPTIONS = RuntimeOptions(threads=2)
SMALL = Bucket(256, 144, 0.5)
ODD = Bucket(241, 135, 0.37)


def _export(model, tmp_path_factory, dynamic, precision=Precision.FP32, buckets=(SMALL,), name="onnx"):
    request = ExportRequest(model.variant, model.refiner_name, tuple(buckets), dynamic, precision,
                            checkpoint_sha256="ab" * 32, checkpoint_label="golden")
    onnx_target.check_request(request)
    return onnx_target.export(model, request, tmp_path_factory.mktemp(name))


@pytest.fixture(scope="session")
def dynamic_fp32(golden_model, tmp_path_factory):
    return _export(golden_model, tmp_path_factory, True, buckets=(SMALL, Bucket(256, 144, 1.0), ODD))[0]


@pytest.fixture(scope="session")
def dynamic_fp16(golden_model, tmp_path_factory):
    return _export(golden_model, tmp_path_factory, True, Precision.FP16, buckets=(SMALL,), name="dyn_fp16")[0]


@pytest.fixture(scope="session")
def static_fp32(golden_model, tmp_path_factory):
    return _export(golden_model, tmp_path_factory, False, buckets=(SMALL, ODD))


@pytest.mark.parametrize("case,ratio", [("a", 1.0), ("b", 0.5)], ids=["ratio1", "ratio0.5"])
def test_dynamic_onnx_reproduces_golden(dynamic_fp32, golden_npz, case, ratio):
    runner = onnx_target.load(dynamic_fp32, OPTIONS)
    stream = runner.stream(Bucket(256, 144, ratio))
    src = golden_npz["src"]
    for t in range(src.shape[1]):
        outputs = stream.step(src[:, t])
        for name in OUTPUT_NAMES:
            key = f"{case}_{name[:2] if name.startswith('r') else name}"
            err = float(np.abs(outputs[name] - golden_npz[key][t]).max())
            assert err <= 1e-4, f"{name} frame {t}: {err:.3g}"


def test_dynamic_fast_guided_filter_reproduces_golden(golden_fgf_model, golden_fgf_npz, tmp_path_factory):
    artifact = _export(golden_fgf_model, tmp_path_factory, True, name="fgf")[0]
    stream = onnx_target.load(artifact, OPTIONS).stream(SMALL)
    for t in range(golden_fgf_npz["src"].shape[1]):
        outputs = stream.step(golden_fgf_npz["src"][:, t])
        assert float(np.abs(outputs["pha"] - golden_fgf_npz["b_pha"][t]).max()) <= 1e-4
        assert float(np.abs(outputs["fgr"] - golden_fgf_npz["b_fgr"][t]).max()) <= 1e-4


def test_contract_in_the_file(dynamic_fp32, static_fp32):
    graph = onnx.load(str(dynamic_fp32.path))
    assert [i.name for i in graph.graph.input] == ["src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"]
    assert [o.name for o in graph.graph.output] == list(OUTPUT_NAMES)
    axis_names = [d.dim_param for v in (*graph.graph.input, *graph.graph.output)
                  for d in v.type.tensor_type.shape.dim if d.dim_param]
    assert len(axis_names) == len(set(axis_names)) == 33  # 11 tensors x (batch, height, width)
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["rvm_export.checkpoint_sha256"] == "ab" * 32
    assert json.loads(meta["rvm_export.io_contract"])["downsample_ratio"] == "dynamic"
    assert meta["rvm_export.opset"] == "17" and "rvm_export.version" in meta
    for artifact in static_fp32:
        static = onnx.load(str(artifact.path))
        assert all(d.dim_value > 0 for v in (*static.graph.input, *static.graph.output)
                   for d in v.type.tensor_type.shape.dim), "static graph has a dynamic axis"
        assert not any(n.op_type == "Shape" for n in static.graph.node), "static graph computes shapes"
        assert "downsample_ratio" not in [i.name for i in static.graph.input]


@pytest.mark.parametrize("bucket", [SMALL, Bucket(256, 144, 1.0), ODD], ids=lambda b: b.label)
def test_dynamic_rollout_parity(golden_model, dynamic_fp32, bucket):
    """At every ratio, 1.0 included (where PyTorch skips the refiner), over a rollout with states fed back."""
    runner = onnx_target.load(dynamic_fp32, OPTIONS)
    report = compare_rollout(TorchStream(golden_model, bucket), runner.stream(bucket),
                             MovingScene(bucket.width, bucket.height, 8), target="onnx", artifact="dyn",
                             precision="fp32", bucket=bucket, label=runner.label,
                             tolerance=tolerance_for("onnx", "fp32"))
    report.raise_if_failed()
    assert set(report.errors) == set(OUTPUT_NAMES)
    assert report.max_abs <= 1e-4


def test_static_rollout_parity(golden_model, static_fp32):
    for artifact in static_fp32:
        bucket = artifact.spec.bucket
        runner = onnx_target.load(artifact, OPTIONS)
        report = compare_rollout(TorchStream(golden_model, bucket), runner.stream(bucket),
                                 MovingScene(bucket.width, bucket.height, 6), target="onnx", artifact=artifact.name,
                                 precision="fp32", bucket=bucket, label=runner.label,
                                 tolerance=tolerance_for("onnx", "fp32"))
        assert report.passed and report.max_abs <= 1e-4, report.failures()


def test_refiner_tail_is_grouped_for_onnx_runtime(static_fp32):
    """One Resize per coefficient group, no Gather/Slice of full-resolution planes (ORT copies them: ~15 % slower)."""
    onnx = pytest.importorskip("onnx")
    artifact = static_fp32[0]  # 256x144 @ 0.5: the downsample is the runtime's Resize
    assert artifact.details["refiner_tail"].startswith("grouped")
    graph = onnx.load(str(artifact.path)).graph
    ops = [n.op_type for n in graph.node]
    assert "Gather" not in ops
    full_res = [n for n in graph.node if n.op_type == "Resize" and not n.name.startswith("/decoder")]
    assert len(full_res) == 5  # the ratio downsample of src + the four coefficient groups


def test_static_model_refuses_other_buckets(static_fp32):
    runner = onnx_target.load(static_fp32[0], OPTIONS)
    with pytest.raises(UsageError, match="fixed at 256x144@0.5"):
        runner.stream(Bucket(512, 288, 0.5))


# -- exact at every ratio, without float64; fp16 with float32 ratio arithmetic (issue 15, items 8 and 9) -----------
def _doubles(graph) -> list[str]:
    """Every place a float64 tensor could hide: inputs, outputs, value_info, initializers, Cast targets, constants."""
    double = onnx.TensorProto.DOUBLE
    found = [v.name for v in (*graph.graph.input, *graph.graph.output, *graph.graph.value_info)
             if v.type.tensor_type.elem_type == double]
    found += [t.name for t in graph.graph.initializer if t.data_type == double]
    for node in graph.graph.node:
        for attr in node.attribute:
            if (attr.name == "to" and attr.i == double) or (attr.type == attr.TENSOR and attr.t.data_type == double):
                found.append(node.name)
    return found


def test_dynamic_graphs_hold_no_float64(dynamic_fp32, dynamic_fp16):
    for artifact in (dynamic_fp32, dynamic_fp16):
        graph = onnx.shape_inference.infer_shapes(onnx.load(str(artifact.path)))
        assert _doubles(graph) == [], artifact.name
        assert "double" not in onnx.printer.to_text(graph.graph).lower(), artifact.name


def test_fp16_dynamic_stores_float16_weights_and_float32_ratio_arithmetic(dynamic_fp32, dynamic_fp16):
    from targets.onnx.graph import ratio_path_nodes, rounded_reads

    fp32, fp16 = (onnx.load(str(a.path)) for a in (dynamic_fp32, dynamic_fp16))
    weights = [t for t in fp32.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
               and "__pad" not in t.name]  # the fp32 file's zero-channel convs (cpu_layout.py) are fp32-only
    stored = {t.name: t.data_type for t in fp16.graph.initializer}
    assert len(weights) == 155 and all(stored[t.name] == onnx.TensorProto.FLOAT16 for t in weights)
    sizes = [a.path.stat().st_size for a in (dynamic_fp16, dynamic_fp32)]
    assert sizes[0] < 0.52 * sizes[1], sizes  # 7.6 MB against 15.1 MB
    ratio_nodes = ratio_path_nodes(fp16)
    assert len(ratio_nodes) > 40 and rounded_reads(fp16.graph, ratio_nodes) == []
    typed = {v.name: v.type.tensor_type.elem_type for v in onnx.shape_inference.infer_shapes(fp16).graph.value_info}
    # the one float16 value a ratio node may make: the Cast handing the lambdas to the float16 pixel lerps
    handoffs = [n for n in fp16.graph.node if n.name in ratio_nodes and n.op_type == "Cast"
                and n.attribute[0].i == onnx.TensorProto.FLOAT16]
    outputs = [out for node in fp16.graph.node if node.name in ratio_nodes and node not in handoffs
               for out in node.output]
    assert outputs and onnx.TensorProto.FLOAT16 not in {typed.get(out) for out in outputs}
    assert len(handoffs) == 4  # lambda0/lambda1 along H and W
    handed = {h.output[0] for h in handoffs}
    assert not [n.name for n in fp16.graph.node if n.name in ratio_nodes and handed & set(n.input)]


# What each case gets from rvm-export (a Bucket) where PyTorch at the decimal ratio (a float64) and at the float32
# value the graph receives compute different low-res sizes: "bucket" refuses it for every model (float32 and float64
# floors differ), "dynamic" refuses it for dynamic models only (Bucket.float32_ratio_problem), None accepts it.
RUNTIME_CASES = [(640, 360, 0.35, "bucket"), (640, 360, 0.375, None), (640, 360, 0.45, "dynamic"),
                 (640, 360, 0.3, None), (640, 360, 0.25, None), (1280, 720, 0.35, "bucket"),
                 (1280, 720, 0.375, None), (1280, 720, 0.45, "dynamic"), (1280, 720, 0.3, None),
                 (1280, 720, 0.25, None)]


def _probed_session(artifact):
    """An ONNX Runtime session over ``artifact`` that also returns the low-res frame (the backbone's first Conv
    input), and the name of that extra output."""
    import onnxruntime as ort

    graph = onnx.load(str(artifact.path))
    lowres = next(node for node in graph.graph.node if node.op_type == "Conv").input[0]
    graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(lowres))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(graph.SerializeToString(), options), lowres


@pytest.mark.parametrize("width,height,ratio,refused", RUNTIME_CASES, ids=lambda v: str(v))
def test_dynamic_equals_pytorch_at_the_ratio_it_receives(golden_model, dynamic_fp32, float32_ratio_rollout, width,
                                                         height, ratio, refused):
    """Issue 15 item 8: the graph's low-res size and outputs are PyTorch's for the float32 ratio it is fed (the old
    graph floored a float32 product: 126 rows at 640x360 @ 0.35 where PyTorch has 125, alpha off by 0.34). Where
    PyTorch at the decimal ratio differs (0.35: 224 columns at 640 wide; 0.45: 162 x 288), rvm-export refuses the
    bucket for dynamic models with a one-line reason."""
    from model.matting import lowres_size

    r32 = float(np.float32(ratio))
    session, lowres = _probed_session(dynamic_fp32)
    names, seen = [o.name for o in session.get_outputs()], []

    def run(feeds):
        outputs = dict(zip(names, session.run(None, feeds)))
        seen.append(outputs[lowres].shape[2:])
        return outputs

    errors, _ = float32_ratio_rollout(run, width, height, ratio, frames=1)
    assert seen == [lowres_size(height, width, r32)]
    assert max(errors.values()) <= 1e-4, errors
    assert (refused is None) == (lowres_size(height, width, ratio) == seen[0])  # PyTorch at 0.45 differs, etc.
    if refused == "bucket":
        with pytest.raises(UsageError, match="round differently"):
            Bucket(width, height, ratio)
    elif refused == "dynamic":
        with pytest.raises(UsageError, match=f"receives the ratio as the float32 {r32!r}, for which PyTorch computes "
                                             f"a {seen[0][1]}x{seen[0][0]} low-res frame"):
            onnx_target.load(dynamic_fp32, OPTIONS).stream(Bucket(width, height, ratio))
    else:
        assert Bucket(width, height, ratio).float32_ratio_agrees


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16], ids=["fp32", "fp16"])
def test_dynamic_rollout_where_float32_and_float64_floors_differ(dynamic_fp32, dynamic_fp16, float32_ratio_rollout,
                                                                 precision):
    """640x360 @ 0.35 over 3 frames with the states fed back: a float32 product gives 126 rows, PyTorch 125. Run
    directly: Bucket refuses such ratios, and PyTorch gets the float32 ratio the graph gets."""
    from model.matting import lowres_size
    from rvm_export.core.bucket import lowres_hw

    width, height, ratio = 640, 360, 0.35
    assert lowres_hw(height, width, ratio) != lowres_size(height, width, float(np.float32(ratio)))
    artifact = dynamic_fp32 if precision == Precision.FP32 else dynamic_fp16
    session = onnx_target.load(artifact, OPTIONS).session
    names = [o.name for o in session.get_outputs()]
    errors, pha_mad = float32_ratio_rollout(lambda feeds: dict(zip(names, session.run(None, feeds))),
                                            width, height, ratio)
    bound = 1e-4 if precision == Precision.FP32 else tolerance_for("onnx", "fp16").frame_max  # 5e-2
    print(f"EXACT {precision.value} {width}x{height}@{ratio}: max abs {max(errors.values()):.2e}, "
          f"pha MAD {pha_mad:.2e}")
    assert max(errors.values()) <= bound, errors
    assert precision == Precision.FP32 or pha_mad <= 2e-3


@pytest.mark.parametrize("bucket", [Bucket(640, 360, 0.375), Bucket(256, 144, 1.0)],
                         ids=lambda b: b.label)
def test_fp16_dynamic_rollout_parity(golden_model, dynamic_fp16, bucket):
    """Issue 15 item 9: 640x360 @ 0.375 exited 1 (alpha 0.113 off: the ratio went through float16); now within the
    fp16 tolerance row, and so is ratio 1 (the refiner gate)."""
    runner = onnx_target.load(dynamic_fp16, OPTIONS)
    report = compare_rollout(TorchStream(golden_model, bucket), runner.stream(bucket),
                             MovingScene(bucket.width, bucket.height, 8), target="onnx", artifact="dyn16",
                             precision="fp16", bucket=bucket, label=runner.label,
                             tolerance=tolerance_for("onnx", "fp16"))
    print(f"PARITY fp16 dynamic {bucket.label}: max abs {report.max_abs:.2e}, pha MAD {report.pha_mad:.2e}")
    assert report.passed, report.failures()
    assert 1e-5 < report.max_abs <= 5e-2 and report.pha_mad <= 2e-3


@pytest.mark.parametrize("precision", [Precision.FP16, Precision.INT8], ids=["fp16", "int8"])
def test_reduced_precision_within_stated_tolerance(golden_model, tmp_path_factory, precision):
    artifact = _export(golden_model, tmp_path_factory, False, precision, name=precision.value)[0]
    graph = onnx.load(str(artifact.path))
    assert graph.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept
    runner = onnx_target.load(artifact, OPTIONS)
    tolerance = tolerance_for("onnx", precision.value)
    report = compare_rollout(TorchStream(golden_model, SMALL), runner.stream(SMALL), MovingScene(256, 144, 8),
                             target="onnx", artifact=artifact.name, precision=precision.value, bucket=SMALL,
                             label=runner.label, tolerance=tolerance)
    assert report.passed, report.failures()
    assert report.max_abs > 1e-5  # really reduced precision, not a float32 copy
    if precision is Precision.INT8:  # the recipe (targets/onnx/quantize.py): which Convs stay float
        dequantised = {o for n in graph.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        convs = [n for n in graph.graph.node if n.op_type == "Conv"]
        float_convs = {n.name for n in convs if n.input[1] not in dequantised}
        assert {n.name for n in convs if n.name.startswith("/box_filter")} <= float_convs  # refiner: was int8
        assert "/project_mat/conv/Conv" in float_convs and convs[0].name in float_convs  # head, stem
        assert all(n.name in float_convs for n in convs if "/gru/" in n.name or n.name.endswith("/pad_channels"))
        assert all(n.name in float_convs for n in convs if "/decoder/decode0/" in n.name)  # the head after the states
        assert any("/backbone/features.10/" in n.name for n in convs if n.name not in float_convs)  # deep: int8
        assert any("/aspp/" in n.name for n in convs if n.name not in float_convs)
        assert len(float_convs) < len(convs) / 2
        listed = {e["layer"]: e["reason"] for e in artifact.details["not_int8"] if e["op"] == "Conv"}
        assert set(listed) == float_convs and all(listed.values())  # every float Conv named, with its reason
        assert {e["op"] for e in artifact.details["not_int8"]} >= {"Conv", "Add", "Sigmoid"}
        # every int8 Conv runs on ONNX Runtime's int8 kernel: its optimiser fuses DQ -> Conv -> Q into QLinearConv.
        # The earlier S8S8 file left 28 of 56 unfused (a float Conv between Q/DQ, slower than fp32; decision 59).
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.optimized_model_filepath = str(artifact.path.parent / "optimised.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(artifact.path), options, providers=["CPUExecutionProvider"])
        optimised = onnx.load(options.optimized_model_filepath)
        fused = sum(n.op_type == "QLinearConv" for n in optimised.graph.node)
        assert fused == len(convs) - len(float_convs), (fused, len(convs) - len(float_convs))


def test_resnet50_and_fast_guided_filter_export(tmp_path_factory):
    from model import MattingNetwork

    for variant, refiner in [("resnet50", "deep_guided_filter"), ("resnet50", "fast_guided_filter")]:
        import torch

        torch.manual_seed(0)
        model = MattingNetwork(variant, refiner).eval()
        artifact = _export(model, tmp_path_factory, True, buckets=(Bucket(160, 96, 0.5),), name=variant)[0]
        bucket = Bucket(160, 96, 0.5)
        runner = onnx_target.load(artifact, OPTIONS)
        report = compare_rollout(TorchStream(model, bucket), runner.stream(bucket), MovingScene(160, 96, 3),
                                 target="onnx", artifact=artifact.name, precision="fp32", bucket=bucket,
                                 label=runner.label, tolerance=tolerance_for("onnx", "fp32"))
        assert report.passed, (variant, refiner, report.failures())


def test_parity_detects_a_wrong_model(golden_model, dynamic_fp32, tmp_path):
    """The check can fail: perturb one weight in the file and the rollout names the output and the worst frame."""
    graph = onnx.load(str(dynamic_fp32.path))
    from onnx import numpy_helper

    init = next(t for t in graph.graph.initializer if list(t.dims) == [4, 16, 1, 1])  # the fgr/pha projection
    array = numpy_helper.to_array(init).copy() + 0.01
    init.CopyFrom(numpy_helper.from_array(array, init.name))
    path = tmp_path / "tampered.onnx"
    onnx.save(graph, str(path))
    runner = onnx_target.OnnxRunner(path, dynamic_fp32.spec, OPTIONS)
    report = compare_rollout(TorchStream(golden_model, SMALL), runner.stream(SMALL), MovingScene(256, 144, 4),
                             target="onnx", artifact="tampered", precision="fp32", bucket=SMALL, label=runner.label,
                             tolerance=tolerance_for("onnx", "fp32"))
    assert not report.passed
    with pytest.raises(ToleranceError, match=r"(fgr|pha|r\do): max abs error .* at frame \d+ exceeds 0.0001"):
        report.raise_if_failed()


def test_request_refusals():
    base = dict(variant="mobilenetv3", refiner="deep_guided_filter", buckets=(SMALL,), dynamic=True)
    with pytest.raises(UsageError, match="NCHW only"):
        onnx_target.check_request(ExportRequest(**base, precision=Precision.FP32, layout=Layout.NHWC))
    with pytest.raises(UsageError, match="cannot export precision bf16"):
        onnx_target.check_request(ExportRequest(**base, precision=Precision.BF16))
    with pytest.raises(UsageError, match="opset 9"):
        onnx_target.check_request(ExportRequest(**base, precision=Precision.FP32, opset=9))


def test_foreign_onnx_with_original_names(golden_model, tmp_path):
    """An original-style export (refiner always on, broadcast [1,1,1,1] states) loads by its I/O names and runs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.original_style_onnx import build

    path = build(tmp_path / "original_style.onnx", golden_model)
    runner = onnx_target.load_foreign(path, OPTIONS)
    report = compare_rollout(TorchStream(golden_model, SMALL), runner.stream(SMALL), MovingScene(256, 144, 3),
                             target="onnx", artifact="foreign", precision="fp32", bucket=SMALL, label=runner.label,
                             tolerance=tolerance_for("onnx", "fp32"))
    assert report.passed  # at ratio 0.5 the always-on refiner is what PyTorch runs too
    at_one = Bucket(256, 144, 1.0)
    report = compare_rollout(TorchStream(golden_model, at_one), runner.stream(at_one), MovingScene(256, 144, 2),
                             target="onnx", artifact="foreign", precision="fp32", bucket=at_one, label=runner.label,
                             tolerance=tolerance_for("onnx", "fp32"))
    assert report.errors["pha"].worst[0] > 1e-2  # the documented deviation of the original export at ratio 1


def test_missing_runtime_message(monkeypatch):
    """A toolchain module that cannot be found is named with the install line (and export refuses with exit 3)."""
    import rvm_export.core.target as target_core
    from rvm_export.core.errors import MissingRuntimeError

    real = target_core.find_spec
    monkeypatch.setattr(target_core, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    assert onnx_target.missing() == "onnxruntime not installed: pip install 'rvm-export[onnx]'"
    with pytest.raises(MissingRuntimeError, match=r"pip install 'rvm-export\[onnx\]'"):
        onnx_target.DESCRIPTION.require()


@pytest.mark.slow
@pytest.mark.parametrize("bucket", [Bucket(1920, 1080, 0.25), Bucket(1280, 720, 0.375)], ids=lambda b: b.label)
@pytest.mark.parametrize("dynamic", [True, False], ids=["dynamic", "static"])
def test_full_resolution_100_frames(golden_model, tmp_path_factory, bucket, dynamic):
    artifact = _export(golden_model, tmp_path_factory, dynamic, buckets=(bucket,), name="full")[0]
    runner = onnx_target.load(artifact, OPTIONS)
    report = compare_rollout(TorchStream(golden_model, bucket), runner.stream(bucket),
                             MovingScene(bucket.width, bucket.height, 100), target="onnx", artifact=artifact.name,
                             precision="fp32", bucket=bucket, label=runner.label,
                             tolerance=tolerance_for("onnx", "fp32"))
    print(f"PARITY {artifact.name} {bucket.label} 100 frames: max abs {report.max_abs:.2e}, "
          f"pha MAD {report.pha_mad:.2e}")  # shown with pytest -rA
    assert report.frames == 100 and report.max_abs <= 1e-4, report.failures()


# -- benchmarks/runtime_profile.py (issue 16: where ONNX Runtime's time goes) ---------------------------------------
def test_runtime_profile_counts_the_timed_frames_only(static_fp32):
    """ONNX Runtime's profiler, summed per op type and divided by the timed frames: with one thread the kernels of a
    frame run one after another, so their per-frame sum cannot exceed the slowest timed frame's wall time; counting
    the slower warm-up frame's events, or dividing by the wrong count, breaks that. Node and type sums agree."""
    from pathlib import Path

    from benchmarks.runtime_profile import profile_onnx, scene

    artifact = static_fp32[0]
    bucket = artifact.buckets[0]
    by_type, nodes, wall = profile_onnx(Path(artifact.path), bucket, 1, scene(bucket, 3), warmup=1)
    assert len(wall) == 2
    assert by_type.get("Conv", 0) > 0 and by_type.get("Resize", 0) > 0  # NCHWc convolutions and the tail's upsample
    assert sum(ms for *_, ms in nodes) == pytest.approx(sum(by_type.values()), rel=1e-9)
    assert sum(by_type.values()) <= 1.1 * max(wall)


def test_runtime_profile_refuses_other_files_before_loading(tmp_path, capsys, static_fp32):
    from benchmarks.runtime_profile import main

    assert main([str(static_fp32[0].path), "--resolution", "1920x1080@0.25", "--frames", "1"]) == 2
    assert "cannot run it at 1920x1080@0.25" in capsys.readouterr().err  # a static file at another bucket
    with pytest.raises(SystemExit) as exit_info:
        main([str(static_fp32[0].path), "--resolution", "256x144@0.5", "--json", str(tmp_path)])
    assert exit_info.value.code == 2 and "is a folder, not a file" in capsys.readouterr().err

    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    with pytest.raises(SystemExit) as exit_info:
        main([str(model), "--resolution", "256x144@0.5"])
    assert exit_info.value.code == 2 and "tflite_op_profile.py" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "absent.onnx"), "--resolution", "256x144@0.5"])
    assert exit_info.value.code == 2 and "no such file" in capsys.readouterr().err
