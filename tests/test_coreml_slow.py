"""CoreML at the issue's buckets: 100-frame rollouts, states fed back, for 1280x720 @ 0.375 and 1920x1080 @ 0.25.

Per precision and bucket, one PyTorch reference pass and, in lockstep, the stateless package, the stateful package
and the multifunction package's function for that bucket (all run by the reference MIL executor on Linux). Also:
stateful vs stateless, and the multifunction function vs the single-bucket package (the same program: identical).
Set RVM_COREML_REPORT=path.json to keep every number (the figures in docs/coreml.md come from such a run).
Slow: 40 minutes on 2 shared cores (12 packages converted, then 0.5-1.6 s per executor frame at 720p/1080p).
"""
from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from rvm_export.parity import ParityReport  # noqa: E402
from rvm_export.core.rollout import TorchStream  # noqa: E402
from rvm_export.core.rollout import MovingScene  # noqa: E402
from rvm_export.core.bucket import Bucket  # noqa: E402
from rvm_export.core.spec import Precision  # noqa: E402
from rvm_export.tolerances import tolerance_for  # noqa: E402
from targets import coreml  # noqa: E402
from rvm_export.core.request import ExportRequest, RuntimeOptions  # noqa: E402

pytestmark = [pytest.mark.coreml, pytest.mark.slow]
BUCKETS = (Bucket(1280, 720, 0.375), Bucket(1920, 1080, 0.25))
FRAMES = 100
OPTIONS = RuntimeOptions(threads=1)
RESULTS: dict = {}


def _export(model, out_dir, precision, **options):
    request = ExportRequest(model.variant, model.refiner_name, BUCKETS, False, Precision(precision),
                            options=coreml.CoreMLOptions.parse("coreml", options))
    coreml.check_request(request)
    return coreml.export(model, request, out_dir)


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def packages(request, golden_model, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"coreml_full_{request.param}")
    started = time.perf_counter()
    singles = _export(golden_model, out, request.param, stateful=True)
    multi = _export(golden_model, out, request.param, multifunction=True)
    RESULTS.setdefault(request.param, {})["export_s"] = round(time.perf_counter() - started, 1)
    return request.param, singles + multi


@pytest.fixture(scope="module", autouse=True)
def write_results():
    yield
    path = os.environ.get("RVM_COREML_REPORT")
    if path:
        with open(path, "w") as handle:
            json.dump(RESULTS, handle, indent=1, default=float)


def _summary(report: ParityReport, seconds: list[float]) -> dict:
    out = report.to_dict()
    out["median_step_s"] = float(np.median(seconds)) if seconds else None
    return out


@pytest.mark.parametrize("bucket", BUCKETS, ids=lambda b: b.label)
def test_100_frame_rollout(golden_model, packages, bucket):
    precision, artifacts = packages
    chosen = {a.flavour: a for a in artifacts if bucket in a.buckets}
    assert set(chosen) == {"static", "stateful", "multifunction"}
    tolerance = tolerance_for("coreml", precision)
    streams, reports, times = {}, {}, {}
    for flavour, artifact in chosen.items():
        runner = coreml.load(artifact, OPTIONS)
        streams[flavour] = runner.stream(bucket)
        reports[flavour] = ParityReport("coreml", artifact.name, precision, bucket, runner.label, tolerance)
        times[flavour] = []
    reference = TorchStream(golden_model, bucket)
    cross = ParityReport("coreml", "stateful vs stateless", precision, bucket, "MIL program check", tolerance)
    same = ParityReport("coreml", "multifunction vs single", precision, bucket, "MIL program check", tolerance)
    torch_s = []
    for frame in MovingScene(bucket.width, bucket.height, FRAMES, seed=0):
        start = time.perf_counter()
        expected = reference.step(frame)
        torch_s.append(time.perf_counter() - start)
        got = {}
        for flavour, stream in streams.items():
            start = time.perf_counter()
            got[flavour] = stream.step(frame)
            times[flavour].append(time.perf_counter() - start)
            reports[flavour].add_frame(expected, got[flavour])
        cross.add_frame(got["static"], got["stateful"])
        same.add_frame(got["static"], got["multifunction"])
    RESULTS.setdefault(precision, {})[bucket.label] = {
        **{flavour: _summary(reports[flavour], times[flavour]) for flavour in streams},
        "stateful_vs_stateless": cross.to_dict(), "multifunction_vs_single": same.to_dict(),
        "pytorch_median_step_s": float(np.median(torch_s)),
    }
    for report in reports.values():
        report.raise_if_failed()
    if precision == "fp32":
        assert max(r.max_abs for r in reports.values()) <= 1e-4
    assert cross.max_abs <= 1e-5, cross.to_dict()["outputs"]
    assert same.max_abs == 0.0, "the multifunction function is not the single-bucket program"
