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
    if precision == Precision.INT8:  # the layers that are not int8, named with their reason
        from targets.onnx.quantize import WHY_FLOAT

        entries = artifact.details["not_int8"]
        float_convs = [e for e in entries if e["op"] == "Conv"]
        assert float_convs and all(e["reason"] in WHY_FLOAT.values() for e in float_convs)
        assert {e["op"] for e in entries} >= {"Conv", "Add", "Sigmoid"}
        quantised = [n for n in graph.graph.node if n.op_type == "Conv"]
        assert len(quantised) - len(float_convs) > 60  # the rest of the convolutions are int8


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
