"""OpenVINO at the issue's setting: 100 frames at 1920x1080 @ 0.25, states fed back, every form and precision in
lockstep with one PyTorch fp32 reference pass. Slow (about 15 minutes on 2 shared cores): ``pytest -m slow``."""
from __future__ import annotations

import pytest

ov = pytest.importorskip("openvino")
pytest.importorskip("nncf")

from rvm_export.parity import ParityReport, compare_many  # noqa: E402
from rvm_export.core.rollout import TorchStream  # noqa: E402
from rvm_export.core.rollout import MovingScene  # noqa: E402
from rvm_export.core.bucket import Bucket  # noqa: E402
from rvm_export.core.names import OUTPUT_NAMES  # noqa: E402
from rvm_export.core.spec import Precision  # noqa: E402
from rvm_export.tolerances import tolerance_for  # noqa: E402
from targets import openvino as ovt  # noqa: E402
from rvm_export.core.request import ExportRequest, RuntimeOptions  # noqa: E402

pytestmark = [pytest.mark.openvino, pytest.mark.slow]
HD = Bucket(1920, 1080, 0.25)
FRAMES = 100
HAS_BF16 = "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
CASES = [  # (id, precision, dynamic, flavour)
    ("dynamic-fp32", Precision.FP32, True, "dynamic"),
    ("dynamic-fp32-stateful", Precision.FP32, True, "stateful"),
    ("static-fp32", Precision.FP32, False, "static"),
    ("static-fp32-stateful", Precision.FP32, False, "stateful"),
    ("static-fp16", Precision.FP16, False, "static"),
    ("static-bf16", Precision.BF16, False, "static"),
    ("static-int8", Precision.INT8, False, "static"),
]


@pytest.fixture(scope="module")
def reports(golden_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ov_hd")
    artifacts = {}
    for precision, dynamic in sorted({(c[1], c[2]) for c in CASES}):
        if precision == Precision.BF16 and not HAS_BF16:
            continue
        request = ExportRequest(golden_model.variant, golden_model.refiner_name, (HD,), dynamic, precision,
                                options=ovt.OpenVinoOptions(stateful=precision == Precision.FP32),
                                calibration_frames=32)
        for artifact in ovt.export(golden_model, request, out / f"{precision.value}_{dynamic}"):
            artifacts[(precision, dynamic, artifact.flavour)] = artifact
    candidates, ids = [], []
    for case_id, precision, dynamic, flavour in CASES:
        artifact = artifacts.get((precision, dynamic, flavour))
        if artifact is None:
            continue
        runner = ovt.load(artifact, RuntimeOptions(threads=2))
        report = ParityReport("openvino", artifact.name, precision.value, HD, runner.label,
                              tolerance_for("openvino", precision.value))
        candidates.append((report, runner.stream(HD)))
        ids.append(case_id)
    errors = compare_many(TorchStream(golden_model, HD), candidates, MovingScene(HD.width, HD.height, FRAMES, seed=0))
    assert not errors, errors
    for case_id, (report, _) in zip(ids, candidates):  # the figures docs/openvino.md quotes (pytest -rA shows them)
        print(f"{case_id}: max abs {report.max_abs:.2e}, pha MAD {report.pha_mad:.2e}, fgr MAD {report.fgr_mad:.2e}"
              f" [{report.label}]")
    return {case_id: report for case_id, (report, _) in zip(ids, candidates)}


@pytest.mark.parametrize("case_id", [c[0] for c in CASES if c[1] == Precision.FP32])
def test_fp32_within_1e4_over_100_frames(reports, case_id):
    report = reports[case_id]
    assert report.frames == FRAMES and "inference precision f32" in report.label
    assert set(report.errors) == set(OUTPUT_NAMES)  # states compared on every frame too
    report.raise_if_failed()
    assert report.max_abs <= 1e-4


@pytest.mark.parametrize("case_id", ["static-fp16", "static-bf16"])
def test_reduced_precision_within_stated_tolerance(reports, case_id):
    if case_id not in reports:
        pytest.skip("this CPU has no bf16 support")
    reports[case_id].raise_if_failed()


def test_int8_alpha_quality(reports):
    report = reports["static-int8"]
    report.raise_if_failed()  # pha MAD and fgr MAD (where alpha > 0) against PyTorch fp32 over the rollout
    assert report.pha_mad <= tolerance_for("openvino", "int8").pha_mad
