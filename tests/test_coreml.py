"""CoreML target: packages as written to disk, run back through the reference MIL executor against PyTorch.

Small buckets only (256x144, 241x135); the 720p/1080p 100-frame rollouts are in test_coreml_slow.py.
On Linux every number here is a MIL program check, not the Apple runtime (test_coreml_macos.py runs that).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

ct = pytest.importorskip("coremltools")

from rvm_export.core.errors import UsageError  # noqa: E402
from rvm_export.parity import ParityReport, compare_rollout  # noqa: E402
from rvm_export.core.rollout import TorchStream  # noqa: E402
from rvm_export.core.rollout import MovingScene  # noqa: E402
from rvm_export.core.bucket import Bucket  # noqa: E402
from rvm_export.core.spec import Layout, Precision  # noqa: E402
from rvm_export.tolerances import tolerance_for  # noqa: E402
from targets import coreml  # noqa: E402
from rvm_export.core.request import ExportRequest, RuntimeOptions  # noqa: E402
from targets.coreml.mil_executor import EXECUTOR_LABEL, MilProgram  # noqa: E402
from targets.coreml.multifunction import package_model_file  # noqa: E402
from coremltools.proto import FeatureTypes_pb2  # noqa: E402

pytestmark = pytest.mark.coreml
OPTIONS = RuntimeOptions(threads=1)
SMALL = Bucket(256, 144, 0.5)  # refiner active, odd crops in the decoder (72x128 low-res)
FULL = Bucket(256, 144, 1.0)  # no refiner
ODD = Bucket(241, 135, 1.0)  # odd sizes everywhere
FRAMES = 8


def _request(model, buckets, precision, **options):
    return ExportRequest(model.variant, model.refiner_name, tuple(buckets), False, Precision(precision),
                         options=coreml.CoreMLOptions.parse("coreml", options), checkpoint_sha256="ab" * 32,
                         checkpoint_label="golden")


def _export(model, tmp_path_factory, name, buckets, precision, **options):
    request = _request(model, buckets, precision, **options)
    coreml.check_request(request)
    return {a.flavour: a for a in coreml.export(model, request, tmp_path_factory.mktemp(name))}


@pytest.fixture(scope="session")
def fp32_packages(golden_model, tmp_path_factory):
    """fp32, one bucket, stateless + stateful (states as float16 hi/lo pairs)."""
    return _export(golden_model, tmp_path_factory, "coreml_fp32", (SMALL,), "fp32", stateful=True)


@pytest.fixture(scope="session")
def fp16_multi(golden_model, tmp_path_factory):
    """fp16, two buckets in one multifunction package (+ its stateful twin), src as an image."""
    return _export(golden_model, tmp_path_factory, "coreml_fp16", (FULL, ODD), "fp16", multifunction=True,
                   stateful=True, image_input=True)


class _Replay:
    """The PyTorch rollout of a clip, computed once per (bucket, clip) and replayed to every artifact."""

    cache: dict = {}

    def __init__(self, model, bucket, clip, key):
        if key not in self.cache:
            stream = TorchStream(model, bucket)
            self.cache[key] = [stream.step(frame) for frame in clip]
        self.outputs = self.cache[key]
        self.index = 0

    def reset(self):
        self.index = 0

    def step(self, frame):
        self.index += 1
        return self.outputs[self.index - 1]


def _rollout(model, artifact, bucket, frames=FRAMES, pixels_on_8bit_grid=False):
    runner = coreml.load(artifact, OPTIONS)
    scene = MovingScene(bucket.width, bucket.height, frames, seed=3)
    clip = [np.round(f * 255) / 255 if pixels_on_8bit_grid else f for f in scene]
    reference = _Replay(model, bucket, clip, (id(model), bucket, frames, pixels_on_8bit_grid))
    return compare_rollout(reference, runner.stream(bucket), clip, target="coreml",
                           artifact=artifact.name, precision=artifact.precision.value, bucket=bucket,
                           label=runner.label, tolerance=tolerance_for("coreml", artifact.precision.value))


# -- numbers against PyTorch ---------------------------------------------------------------------------------------
def test_fp32_package_reproduces_the_original_implementation(fp32_packages, golden_npz):
    """Golden case b (the original code at ratio 0.5, states fed back), through the saved fp32 mlprogram."""
    stream = coreml.load(fp32_packages["static"], OPTIONS).stream(SMALL)
    for t in range(golden_npz["src"].shape[1]):
        outputs = stream.step(golden_npz["src"][:, t])
        for name in ("fgr", "pha", "r1o", "r2o", "r3o", "r4o"):
            key = f"b_{name[:2] if name.startswith('r') else name}"
            err = float(np.abs(outputs[name] - golden_npz[key][t]).max())
            assert err <= 1e-5, f"{name} frame {t}: {err:.3g}"


@pytest.mark.parametrize("flavour", ["static", "stateful"])
def test_fp32_rollout_within_1e4(golden_model, fp32_packages, flavour):
    report = _rollout(golden_model, fp32_packages[flavour], SMALL)
    report.raise_if_failed()
    assert report.max_abs <= 1e-4 and report.frames == FRAMES
    assert EXECUTOR_LABEL in report.label
    if flavour == "stateful":  # states live in the model: only fgr and pha come out
        assert set(report.errors) == {"fgr", "pha"}


def test_stateful_fp32_equals_stateless(fp32_packages):
    """hi + lo float16 states keep ~22 bits: the stateful program tracks the stateless one to float32 noise."""
    static = coreml.load(fp32_packages["static"], OPTIONS).stream(SMALL)
    stateful = coreml.load(fp32_packages["stateful"], OPTIONS).stream(SMALL)
    report = ParityReport("coreml", "stateful-vs-stateless", "fp32", SMALL, EXECUTOR_LABEL, tolerance_for("*", "fp32"))
    for frame in MovingScene(SMALL.width, SMALL.height, FRAMES, seed=4):
        report.add_frame(static.step(frame), stateful.step(frame))
    assert report.max_abs <= 1e-6, report.to_dict()


def test_stateful_reset_starts_from_zero_states(fp32_packages):
    stream = coreml.load(fp32_packages["stateful"], OPTIONS).stream(SMALL)
    frames = list(MovingScene(SMALL.width, SMALL.height, 3, seed=5))
    first = stream.step(frames[0])["pha"]
    later = [stream.step(f)["pha"] for f in frames[1:]]
    assert float(np.abs(later[-1] - first).max()) > 1e-3  # the states carried something
    stream.reset()
    assert np.array_equal(stream.step(frames[0])["pha"], first)


@pytest.mark.parametrize("bucket", [FULL, ODD], ids=lambda b: b.label)
@pytest.mark.parametrize("flavour", ["multifunction", "multifunction-stateful"])
def test_fp16_multifunction_functions_match_their_bucket(golden_model, fp16_multi, flavour, bucket):
    # image src: the executor feeds exact pixel values; frames on the 8-bit grid keep it valid for the Apple runtime
    report = _rollout(golden_model, fp16_multi[flavour], bucket, pixels_on_8bit_grid=True)
    report.raise_if_failed()
    assert 1e-4 < report.max_abs <= tolerance_for("coreml", "fp16").frame_max  # float16 rounding is really there


def test_multifunction_package_shares_weights_and_names_functions(fp16_multi):
    artifact = fp16_multi["multifunction"]
    program = MilProgram(artifact.path)
    assert set(program.functions) == {"w256_h144_r1", "w241_h135_r1"} == set(artifact.details["functions"])
    weights = artifact.path / "Data" / "com.apple.CoreML" / "weights" / "weight.bin"
    one_copy = 3_748_633 * 2  # parameters of MobileNetV3 RVM in float16 (BN folds into the convs)
    assert weights.stat().st_size < 1.3 * one_copy, "weights are stored more than once"
    with pytest.raises(UsageError, match="w256_h144_r1"):
        coreml.load(artifact, OPTIONS).stream(SMALL)  # no function for 256x144@0.5: the error lists those it has


# -- the file itself -----------------------------------------------------------------------------------------------
def _spec(path):
    from coremltools.proto import Model_pb2

    spec = Model_pb2.Model()
    spec.ParseFromString(package_model_file(path).read_bytes())
    return spec


def test_metadata_and_descriptions(fp32_packages):
    spec = _spec(fp32_packages["static"].path)
    meta = spec.description.metadata
    assert "Robust Video Matting" in meta.author and meta.versionString and "GPL-3.0" in meta.license
    assert "downsample_ratio 0.5 baked in" in meta.shortDescription
    texts = {f.name: f.shortDescription for f in (*spec.description.input, *spec.description.output)}
    assert set(texts) == {"src", "r1i", "r2i", "r3i", "r4i", "fgr", "pha", "r1o", "r2o", "r3o", "r4o"}
    assert "network runs at 128x72" in texts["src"]
    assert "zeros on the first frame" in texts["r1i"] and "r1o" in texts["r1i"]
    assert "feed it back as r4i" in texts["r4o"]
    contract = json.loads(meta.userDefined["rvm_export.io_contract"])
    assert contract["downsample_ratio"] == 0.5 and meta.userDefined["rvm_export.checkpoint_sha256"] == "ab" * 32
    stateful = _spec(fp32_packages["stateful"].path)
    assert [s.name for s in stateful.description.state] == [f"r{k}_{h}" for k in range(1, 5) for h in ("hi", "lo")]
    assert all(s.shortDescription for s in stateful.description.state)
    assert fp32_packages["stateful"].details["deployment_target"] == "iOS18"
    assert fp32_packages["static"].details["deployment_target"] == "iOS16"  # a stateless package keeps its own target


def test_fp16_program_keeps_float32_io_by_default(fp16_multi):
    spec = _spec(fp16_multi["multifunction"].path)
    for function in spec.description.functions:
        arrays = [f.type.multiArrayType for f in (*function.input, *function.output)
                  if f.type.WhichOneof("Type") == "multiArrayType"]
        assert len(arrays) == 10  # src is an image; 4 states in, fgr, pha, 4 states out
        assert {a.dataType for a in arrays} == {FeatureTypes_pb2.ArrayFeatureType.FLOAT32}
        assert function.input[0].type.WhichOneof("Type") == "imageType"
    assert fp16_multi["multifunction"].details["io_dtype"] == "float32"


def test_float16_io_is_said_in_the_manifest(golden_model, tmp_path_factory):
    artifact = _export(golden_model, tmp_path_factory, "coreml_io16", (ODD,), "fp16", io_dtype="float16")["static"]
    spec = _spec(artifact.path)
    arrays = [f.type.multiArrayType for f in (*spec.description.input, *spec.description.output)]
    assert {a.dataType for a in arrays} == {FeatureTypes_pb2.ArrayFeatureType.FLOAT16}
    assert "float16" in artifact.details["io_note"] and "float16" in artifact.spec.to_dict()["io_note"]
    report = _rollout(golden_model, artifact, ODD, frames=2)
    report.raise_if_failed()


# -- refusals ------------------------------------------------------------------------------------------------------
BAD = {
    "ratio-not-integer": ((Bucket(1280, 720, 0.3333),), "fp16", {}, r"not an integer.*e\.g\. "),
    "dynamic": ((SMALL,), "fp16", {"__dynamic": True}, "static: resolution and downsample ratio are fixed"),
    "stateful-on-iOS16": ((SMALL,), "fp16", {"stateful": True, "deployment_target": "iOS16"},
                          "need.*iOS18.*deployment_target=iOS18"),
    "multifunction-on-macOS14": ((SMALL,), "fp32", {"multifunction": True, "deployment_target": "macOS14"},
                                 "multifunction.*iOS18"),
    "neural-network-era-target": ((SMALL,), "fp16", {"deployment_target": "iOS14"}, "iOS15 / macOS12 or later"),
    "fp16-io-on-iOS15": ((SMALL,), "fp16", {"io_dtype": "float16", "deployment_target": "iOS15"},
                         "float16 model inputs/outputs need iOS16"),
    "int8": ((SMALL,), "int8", {}, "fp16 .default. or fp32"),
    "split-states-fp16": ((SMALL,), "fp16", {"stateful": True, "state_storage": "split"}, "only makes sense for fp32"),
    "unknown-option": ((SMALL,), "fp16", {"multifuncton": True}, "unknown coreml option.*multifuncton"),
    "nhwc": ((SMALL,), "fp16", {"__layout": Layout.NHWC}, "NCHW only"),
    "duplicate-bucket": ((SMALL, SMALL), "fp16", {}, "listed twice"),
    "fast-guided-filter-fp16": ((SMALL,), "fp16", {"__refiner": "fast_guided_filter"}, "cannot run in float16"),
}


@pytest.mark.parametrize("case", BAD.values(), ids=BAD.keys())
def test_bad_requests_are_refused_with_the_reason(case):
    buckets, precision, options, message = case
    options = dict(options)
    dynamic = options.pop("__dynamic", False)
    layout = options.pop("__layout", Layout.NCHW)
    refiner = options.pop("__refiner", "deep_guided_filter")
    with pytest.raises(UsageError, match=message):
        request = ExportRequest("mobilenetv3", refiner, buckets, dynamic, Precision(precision), layout,
                                options=coreml.CoreMLOptions.parse("coreml", options))
        coreml.check_request(request)


def test_inexact_ratio_message_offers_working_alternatives():
    bucket = Bucket(1000, 562, 0.25)  # 562 * 0.25 = 140.5
    request = ExportRequest("mobilenetv3", "deep_guided_filter", (bucket,), False, Precision.FP16)
    with pytest.raises(UsageError) as info:
        coreml.check_request(request)
    text = str(info.value)
    assert "140.5" in text
    for suggestion in bucket.nearest_exact_ratios():
        assert f"{suggestion:g}" in text and Bucket(1000, 562, suggestion).exact
    assert any(Bucket(*map(int, size.split("x")), 0.25).exact for size in bucket.nearest_exact_sizes())


def test_runner_label_is_honest_on_linux(fp32_packages):
    import sys

    runner = coreml.load(fp32_packages["static"], OPTIONS)
    if sys.platform != "darwin":
        assert runner.label.startswith(EXECUTOR_LABEL)
        assert coreml.DESCRIPTION.runtime_label == EXECUTOR_LABEL


# -- deployment targets per package, image outputs, where it runs -------------------------------------------------
def test_stateless_packages_keep_ios16_beside_stateful_ones(fp32_packages):
    """stateful=true adds iOS 18 packages; the stateless ones written beside stay at the iOS 16 default."""
    versions = {flavour: MilProgram(a.path).spec_version for flavour, a in fp32_packages.items()}
    assert versions == {"static": 7, "stateful": 9}, versions
    assert fp32_packages["static"].details["deployment_target"] == "iOS16"
    assert fp32_packages["stateful"].details["deployment_target"] == "iOS18"
    for flavour, artifact in fp32_packages.items():
        [placement] = coreml.where_it_runs(artifact, OPTIONS)
        assert placement.facts["specification_version"] == versions[flavour]
        assert "no Apple device ran it" in placement.note and placement.fully is None


def test_named_deployment_target_applies_to_every_package():
    plan = coreml.options.resolve_options(coreml.CoreMLOptions.parse("coreml", {"stateful": True,
                                                                              "deployment_target": "iOS18"}), "fp32")
    assert plan.for_package(False).deployment_target == plan.for_package(True).deployment_target == "iOS18"
    multi = coreml.options.resolve_options(coreml.CoreMLOptions.parse("coreml", {"multifunction": True}), "fp16")
    assert multi.for_package(False).deployment_target == "iOS18"  # multifunction itself needs iOS 18


@pytest.fixture(scope="session")
def image_output_packages(golden_model, tmp_path_factory):
    """fp32, 96x54@0.5 (odd low-res sizes), fgr/pha as images, stateless + stateful."""
    return _export(golden_model, tmp_path_factory, "coreml_imgout", (Bucket(96, 54, 0.5),), "fp32", stateful=True,
                   image_output=True)


@pytest.mark.parametrize("flavour", ["static", "stateful"])
def test_image_outputs_are_pixel_buffers_with_mil_parity(golden_model, image_output_packages, flavour):
    artifact = image_output_packages[flavour]
    bucket = artifact.buckets[0]
    description = _spec(artifact.path).description
    outputs = {f.name: f.type for f in description.output}
    image_kinds = FeatureTypes_pb2.ImageFeatureType
    assert outputs["fgr"].imageType.colorSpace == image_kinds.RGB
    assert outputs["pha"].imageType.colorSpace == image_kinds.GRAYSCALE
    assert (outputs["pha"].imageType.width, outputs["pha"].imageType.height) == (bucket.width, bucket.height)
    assert [t.kind for t in artifact.spec.outputs[:2]] == ["image", "image"]
    report = _rollout(golden_model, artifact, bucket, frames=30)
    print(f"PARITY {artifact.name}: max abs {report.max_abs:.2e} ({EXECUTOR_LABEL})")
    report.raise_if_failed()
    assert report.max_abs <= 1e-4 and EXECUTOR_LABEL in report.label


def test_image_output_needs_ios16():
    request = ExportRequest("mobilenetv3", "deep_guided_filter", (SMALL,), False, Precision.FP32,
                            options=coreml.CoreMLOptions.parse("coreml", {"image_output": True,
                                                                          "deployment_target": "iOS15"}))
    with pytest.raises(UsageError, match="image_output needs iOS16"):
        coreml.check_request(request)
