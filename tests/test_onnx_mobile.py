"""ONNX for mobile providers: ONNX Runtime's own usability checker on the exported graphs (NNAPI, CoreML
NeuralNetwork, CoreML MLProgram), the rewrites that make the static graph provider-clean (same numbers as PyTorch's
ops), and the ORT format (``onnx.ort=true``) with its own parity.

The checker is a static op/shape check: no Android or Apple device runs anything here.
"""
from __future__ import annotations

import pytest

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from rvm_export.core.bucket import Bucket  # noqa: E402
from rvm_export.core.request import ExportRequest, RuntimeOptions  # noqa: E402
from rvm_export.core.rollout import MovingScene, TorchStream  # noqa: E402
from rvm_export.core.spec import Precision  # noqa: E402
from rvm_export.parity import compare_rollout  # noqa: E402
from rvm_export.tolerances import tolerance_for  # noqa: E402
from targets import onnx as onnx_target  # noqa: E402
from targets.onnx.mobile import PROVIDERS  # noqa: E402
from targets.traced.rewrites import mobile_friendly  # noqa: E402

pytestmark = pytest.mark.onnx
OPTIONS = RuntimeOptions(threads=2)
TINY = Bucket(96, 54, 0.5)  # low-res 48x27: odd sizes in the decoder
FRAMES = 30


def _export(model, tmp_path_factory, dynamic, precision=Precision.FP32):
    request = ExportRequest(model.variant, model.refiner_name, (TINY,), dynamic, precision,
                            options=onnx_target.OnnxOptions.parse("onnx", {"ort": "true"}),
                            checkpoint_sha256="ab" * 32, checkpoint_label="golden", calibration_frames=4)
    onnx_target.check_request(request)
    return {a.path.suffix: a for a in onnx_target.export(model, request, tmp_path_factory.mktemp("mobile"))}


@pytest.fixture(scope="session")
def static_mobile(golden_model, tmp_path_factory):
    return _export(golden_model, tmp_path_factory, False)


def _placements(artifact):
    return {p.facts["provider"]: p for p in onnx_target.where_it_runs(artifact, OPTIONS)}


def test_rewrites_compute_what_pytorch_computes():
    """hardswish, hardsigmoid and the 3-channel mean as elementary ops: equal to PyTorch's kernels."""
    torch.manual_seed(0)
    x = torch.randn(2, 16, 9, 11) * 4
    rgb = torch.rand(1, 3, 9, 11)
    expected = (F.hardswish(x), F.hardsigmoid(x), rgb.mean(dim=1, keepdim=True), x.mean(dim=1, keepdim=True))
    with mobile_friendly():
        got = (F.hardswish(x), F.hardsigmoid(x), rgb.mean(dim=1, keepdim=True), x.mean(dim=1, keepdim=True))
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=0, atol=1e-6)


def test_static_fp32_is_taken_whole_by_every_mobile_provider(static_mobile):
    found = _placements(static_mobile[".onnx"])
    assert set(found) == set(PROVIDERS)
    mlprogram, nnapi = found["CoreML MLProgram"], found["NNAPI"]
    assert mlprogram.fully and mlprogram.partitions == 1, mlprogram.to_dict()
    assert nnapi.share >= 0.95, nnapi.to_dict()
    for placement in found.values():
        print(f"CHECKER {placement.facts['provider']}: {placement.placed}/{placement.nodes}, "
              f"{placement.partitions} partition(s), refused {placement.refused}")
        assert "static op check" in placement.device and "no Android or Apple device" in placement.note
    ops = {n.op_type for n in onnx.load(str(static_mobile[".onnx"].path)).graph.node}
    assert not ops & {"HardSigmoid", "HardSwish", "ReduceMean"}, ops


@pytest.mark.parametrize("suffix", [".onnx", ".ort"])
def test_mobile_graph_and_ort_format_keep_fp32_parity(golden_model, static_mobile, suffix):
    artifact = static_mobile[suffix]
    runner = onnx_target.load(artifact, OPTIONS)
    report = compare_rollout(TorchStream(golden_model, TINY), runner.stream(TINY),
                             MovingScene(TINY.width, TINY.height, FRAMES), target="onnx", artifact=artifact.name,
                             precision="fp32", bucket=TINY, label=runner.label,
                             tolerance=tolerance_for("onnx", "fp32"))
    print(f"PARITY {artifact.name}: max abs {report.max_abs:.2e}")
    report.raise_if_failed()
    assert report.frames == FRAMES and report.max_abs <= 1e-4


def test_ort_file_carries_the_contract_and_its_origin(static_mobile):
    ort_artifact, onnx_artifact = static_mobile[".ort"], static_mobile[".onnx"]
    assert ort_artifact.details["converted_from"] == onnx_artifact.path.name
    assert onnx_target.read_contract(ort_artifact.path) == onnx_target.read_contract(onnx_artifact.path)
    counts = _placements(ort_artifact)["CoreML MLProgram"]
    assert counts.fully and onnx_artifact.path.name in counts.note  # the checker reads the .onnx it came from


def test_dynamic_graph_is_reported_not_whole(golden_model, tmp_path_factory):
    """A dynamic graph is a finding, not an error: the providers need fixed shapes."""
    artifact = _export(golden_model, tmp_path_factory, True)[".onnx"]
    found = _placements(artifact)
    assert not any(p.fully for p in found.values())
    assert all(any("fixed shape" in r for r in p.refused) for p in found.values()), \
        {k: p.refused for k, p in found.items()}


def test_quantize_nodes_are_named_as_the_coreml_blocker(golden_model, tmp_path_factory):
    artifact = _export(golden_model, tmp_path_factory, False, Precision.INT8)[".onnx"]
    found = _placements(artifact)
    refused = " ".join(found["CoreML MLProgram"].refused)
    assert "QuantizeLinear" in refused and not found["CoreML MLProgram"].fully
    print("CHECKER int8: " + ", ".join(f"{k} {p.placed}/{p.nodes} in {p.partitions}" for k, p in found.items()))


def test_report_shows_where_each_artifact_runs(golden_pth, tmp_path):
    """``rvm-export --target onnx`` end to end: report.md's "Where it runs" has the checker's row per provider and
    artifact, and the manifest carries the same counts."""
    import json

    from rvm_export.cli import main

    code = main(["--target", "onnx", "--checkpoint", str(golden_pth), "--resolution", "96x54",
                 "--downsample-ratio", "0.5", "--option", "onnx.ort=true", "--frames", "2", "--skip-bench",
                 "--out", str(tmp_path), "--quiet"])
    assert code == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    report = (tmp_path / "report.md").read_text()
    assert "## Where it runs" in report
    for artifact in manifest["artifacts"]:
        providers = {e["facts"]["provider"]: e for e in artifact["where_it_runs"]}
        assert set(providers) == set(PROVIDERS), artifact["path"]
        mlprogram = providers["CoreML MLProgram"]
        assert mlprogram["fully"] and mlprogram["placed"] == mlprogram["nodes"]
        row = f"| {artifact['path']} | {mlprogram['check']} |"
        assert row in report and f"{mlprogram['nodes']}/{mlprogram['nodes']} (100%), 1 partition" in report
    assert {a["path"].rsplit(".", 1)[1] for a in manifest["artifacts"]} == {"onnx", "ort"}
