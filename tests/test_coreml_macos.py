"""CoreML on the Apple runtime (macOS only): MLModel.predict on CPU only and on all compute units, stateless,
stateful (MLState) and multifunction, against PyTorch and against the reference MIL executor. Skips elsewhere."""
from __future__ import annotations

import sys

import numpy as np
import pytest

if sys.platform != "darwin":
    pytest.skip("Core ML prediction needs macOS", allow_module_level=True)
ct = pytest.importorskip("coremltools")

from rvm_export.parity import compare_rollout  # noqa: E402
from rvm_export.core.rollout import TorchStream  # noqa: E402
from rvm_export.core.rollout import MovingScene  # noqa: E402
from rvm_export.core.bucket import Bucket  # noqa: E402
from rvm_export.core.spec import Precision  # noqa: E402
from rvm_export.tolerances import tolerance_for  # noqa: E402
from targets import coreml  # noqa: E402
from rvm_export.core.request import ExportRequest, RuntimeOptions  # noqa: E402
from targets.coreml.runtime import ExecutorRunner  # noqa: E402

pytestmark = [pytest.mark.coreml, pytest.mark.macos]
SMALL = Bucket(256, 144, 0.5)
ODD = Bucket(241, 135, 1.0)
UNITS = {"cpu-only": "cpu", "all-units": "all"}


@pytest.fixture(scope="module", params=["fp32", "fp16"])
def packages(request, golden_model, tmp_path_factory):
    req = ExportRequest("mobilenetv3", "deep_guided_filter", (SMALL, ODD), False, Precision(request.param),
                        options=coreml.CoreMLOptions(multifunction=True, stateful=True))
    multi = coreml.export(golden_model, req, tmp_path_factory.mktemp(f"mac_{request.param}_multi"))
    single = coreml.export(golden_model, ExportRequest("mobilenetv3", "deep_guided_filter", (SMALL,), False,
                                                       Precision(request.param),
                                                       options=coreml.CoreMLOptions(stateful=True)),
                           tmp_path_factory.mktemp(f"mac_{request.param}"))
    return {a.flavour: a for a in (*single, *multi)}


@pytest.mark.parametrize("units", UNITS.values(), ids=UNITS.keys())
@pytest.mark.parametrize("flavour", ["static", "stateful", "multifunction", "multifunction-stateful"])
def test_apple_runtime_matches_pytorch(golden_model, packages, flavour, units):
    artifact = packages[flavour]
    runner = coreml.load(artifact, RuntimeOptions(device=units))
    assert runner.label.startswith("Core ML runtime")
    for bucket in artifact.buckets:
        report = compare_rollout(TorchStream(golden_model, bucket), runner.stream(bucket),
                                 MovingScene(bucket.width, bucket.height, 12, seed=0), target="coreml",
                                 artifact=artifact.name, precision=artifact.precision.value, bucket=bucket,
                                 label=runner.label, tolerance=tolerance_for("coreml", artifact.precision.value))
        report.raise_if_failed()


def test_apple_cpu_runtime_agrees_with_the_mil_check(packages):
    """Apple's CPU kernels vs the reference executor on the same fp32 program."""
    artifact = packages["static"]
    if artifact.precision != Precision.FP32:
        pytest.skip("compared on the fp32 program")
    apple = coreml.load(artifact, RuntimeOptions(device="cpu")).stream(SMALL)
    check = ExecutorRunner(artifact).stream(SMALL)
    for frame in MovingScene(SMALL.width, SMALL.height, 6, seed=1):
        a, b = apple.step(frame), check.step(frame)
        assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-4
