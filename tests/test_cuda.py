"""The cuda target (targets/torch_cuda.py) and the GPU script (scripts/gpu_check.py).

Without a GPU: export to .pt2, load and run it on the CPU through the same runner (CUDA graphs emulated on static
buffers, compile with a kernel-free backend) and compare rollouts with PyTorch; option and request validation.
With a GPU (marker gpu): parity of the real CUDA modes against the CPU fp32 rollout.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rvm_export.core.errors import InputError, MissingRuntimeError, UsageError  # noqa: E402
from rvm_export.parity import compare_rollout  # noqa: E402
from rvm_export.core.rollout import TorchStream  # noqa: E402
from rvm_export.core.rollout import MovingScene  # noqa: E402
from rvm_export.core.bucket import Bucket  # noqa: E402
from rvm_export.core.spec import Layout, Precision  # noqa: E402
from rvm_export.tolerances import tolerance_for  # noqa: E402
from targets import cuda as tc  # noqa: E402
from targets.cuda import runtime as cuda_runtime  # noqa: E402
from rvm_export.core.request import ExportRequest, RuntimeOptions  # noqa: E402

pytestmark = pytest.mark.cuda

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT.parent / "shared" / "golden" / "golden_mobilenetv3.pth"
BUCKET = Bucket(256, 144, 0.5)
ODD = Bucket(241, 135, 0.5)  # odd sizes: the decoder's crop path and ceil-mode pooling
SMALL = Bucket(128, 72, 0.5)  # fp16: PyTorch's CPU fp16 convolutions take a slow reference path
HAS_CUDA = torch.cuda.is_available()
needs_gpu = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


@pytest.fixture(scope="session")
def model():
    """The golden checkpoint where this checkout has it (the GPU machine has only the repo), else the seeded default."""
    from model import load_checkpoint
    from rvm_export.default_model import seeded_default_model

    return load_checkpoint(GOLDEN) if GOLDEN.is_file() else seeded_default_model()


@pytest.fixture(scope="session")
def artifacts(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("cuda")
    made = {}
    for precision, bucket in (("fp32", ODD), ("fp16", SMALL)):
        request = ExportRequest("mobilenetv3", "deep_guided_filter", (bucket,), False, Precision(precision),
                                options=tc.CudaOptions.parse("cuda", {"mode": "cudagraphs"}))
        (made[precision],) = tc.export(model, request, out)
    return made


def _options(device="cpu", **extra):
    return RuntimeOptions(device=device, overrides=tc.CudaOptions.parse("cuda", extra))


def _rollout(model, runner, bucket, precision, frames=4):
    scene = MovingScene(bucket.width, bucket.height, frames, seed=5)
    return compare_rollout(TorchStream(model, bucket), runner.stream(bucket), scene, target="cuda",
                           artifact="test", precision=precision, bucket=bucket, label=runner.label,
                           tolerance=tolerance_for("cuda", precision))


# -- pure functions ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["mobilenetv3", "resnet50"])
def test_fold_batchnorm_changes_no_output(variant):
    from rvm_export.default_model import seeded_default_model

    net = seeded_default_model(variant)
    folded = tc.fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    x = torch.from_numpy(MovingScene(128, 72, 1, seed=2).frame(0))
    with torch.no_grad():
        ref, got = net(x, downsample_ratio=0.5), folded(x, downsample_ratio=0.5)
    errors = [float((a - b).abs().max()) for a, b in zip(ref, got)]
    assert max(errors) <= 2e-6, errors


def test_parse_mode_presets_and_overrides():
    assert tc.parse_mode({}) == tc.PRESETS[tc.DEFAULT_PRESET]
    mode = tc.parse_mode({"mode": "eager", "channels_last": "true", "tf32": True})
    assert (mode.channels_last, mode.compile, mode.cudagraphs, mode.tf32) == (True, False, False, True)
    base = tc.CudaMode(channels_last=False, compile=True, cudagraphs=True)
    assert tc.parse_mode({"cudagraphs": False}, base) == tc.CudaMode(channels_last=False, compile=True,
                                                                      cudagraphs=False)
    assert tc.parse_mode({"mode": "max"}).label == "channels_last+compile+cudagraphs"


@pytest.mark.parametrize("options, words", [
    ({"graphs": True}, ["graphs", "cudagraphs"]),
    ({"mode": "turbo"}, ["turbo", "max"]),
    ({"compile": "maybe"}, ["compile", "true or false", "maybe"]),
    ({"compile_mode": "reduce-overhead"}, ["reduce-overhead", "cudagraphs=true"]),
])
def test_parse_mode_names_the_problem(options, words):
    with pytest.raises(UsageError) as err:
        tc.parse_mode(options)
    assert all(word in str(err.value) for word in words), str(err.value)


@pytest.mark.parametrize("change, words", [
    ({"precision": Precision.INT8}, ["int8", "fp16"]),
    ({"precision": Precision.BF16}, ["bf16"]),
    ({"layout": Layout.NHWC}, ["channels_last"]),
    ({"dynamic": True}, ["--downsample-ratio", "dynamic"]),
    ({"buckets": ()}, ["--resolution"]),
    ({"options": {"fold_batchnorm": "maybe"}}, ["fold_batchnorm", "maybe"]),
])
def test_check_request_refuses(change, words):
    fields = dict(variant="mobilenetv3", refiner="deep_guided_filter", buckets=(BUCKET,), dynamic=False,
                  precision=Precision.FP16)
    fields.update(change)
    with pytest.raises(UsageError) as err:
        fields["options"] = tc.CudaOptions.parse("cuda", fields.get("options"))
        tc.check_request(ExportRequest(**fields))
    assert all(word in str(err.value) for word in words), str(err.value)


def test_tolerance_rows_are_stated():
    fp32, fp16 = tolerance_for("cuda", "fp32"), tolerance_for("cuda", "fp16")
    assert fp32.frame_max == 1e-4 and fp32.state_max == 1e-4
    assert fp16.frame_max is not None and fp16.frame_max <= 5e-2 and fp16.pha_mad is not None


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU messages")
def test_without_gpu_the_target_says_why(artifacts):
    assert "no CUDA GPU" in tc.missing()
    with pytest.raises(MissingRuntimeError) as err:
        cuda_runtime.load(artifacts["fp16"], _options(device="cpu"))  # the target's default device is cuda:0
    assert "CUDA" in str(err.value)
    with pytest.raises(UsageError, match="runs on a CUDA device"):
        tc.CudaRunner(torch.nn.Identity(), artifacts["fp16"].spec, tc.CudaMode(), "cpu")


# -- the artifact ----------------------------------------------------------------------------------------------
def test_export_writes_a_loadable_program_with_the_contract(artifacts):
    fp32, fp16 = artifacts["fp32"], artifacts["fp16"]
    assert fp32.path.suffix == ".pt2" and fp32.path.is_file() and fp32.details["fold_batchnorm"] is True
    meta = tc.read_metadata(fp16.path)
    contract = json.loads(meta["rvm_export.io_contract"])
    assert meta["rvm_export.precision"] == "fp16" and contract["resolution"] == [128, 72]
    assert [t["dtype"] for t in contract["inputs"]] == ["float16"] * 5
    assert fp32.spec.concrete_state_shapes(ODD)["r1i"] == (1, 16, 34, 60)  # low-res 120x67, halved, ceil
    program = torch.export.load(str(fp32.path)).module()  # what a user without rvm-export does
    x = torch.from_numpy(MovingScene(ODD.width, ODD.height, 1, seed=1).frame(0))
    states = [torch.zeros(s) for s in fp32.spec.concrete_state_shapes(ODD).values()]
    outputs = program(x, *states)
    assert [tuple(t.shape) for t in outputs[:2]] == [(1, 3, 135, 241), (1, 1, 135, 241)]


@pytest.mark.parametrize("precision, mode, bound", [
    ("fp32", {"mode": "eager"}, 1e-5),
    ("fp32", {"mode": "cudagraphs"}, 1e-5),  # emulated: static buffers, in-place state copy
    ("fp32", {"mode": "compile", "compile_backend": "eager"}, 1e-5),  # dynamo tracing, no kernels
    ("fp16", {"mode": "max", "compile_backend": "eager"}, 1e-2),
], ids=["fp32-eager", "fp32-graph-buffers", "fp32-compile-trace", "fp16-max-trace"])
def test_cpu_rollout_matches_pytorch(model, artifacts, precision, mode, bound):
    artifact = artifacts[precision]
    runner = cuda_runtime.load(artifact, _options(**mode), device="cpu")
    report = _rollout(model, runner, artifact.spec.bucket, precision)
    report.raise_if_failed()
    assert report.frames == 4 and set(report.errors) == {"fgr", "pha", "r1o", "r2o", "r3o", "r4o"}
    assert report.max_abs <= bound, report.to_dict()["outputs"]


def test_graph_buffers_feed_states_back_and_reset(artifacts):
    artifact = artifacts["fp32"]
    direct = cuda_runtime.load(artifact, _options(mode="eager"), device="cpu").stream(ODD)
    graphed = cuda_runtime.load(artifact, _options(mode="cudagraphs"), device="cpu").stream(ODD)
    frames = list(MovingScene(ODD.width, ODD.height, 3, seed=9))
    first = [graphed.step(f) for f in frames]
    for frame, got in zip(frames, first):
        want = direct.step(frame)
        assert max(float(np.abs(got[k] - want[k]).max()) for k in want) <= 1e-5
    assert float(np.abs(first[2]["r1o"] - first[0]["r1o"]).max()) > 1e-4  # the states really moved
    graphed.reset()
    again = graphed.step(frames[0])
    assert max(float(np.abs(again[k] - first[0][k]).max()) for k in again) == 0.0


def test_run_with_explicit_states_equals_the_stream(artifacts):
    artifact = artifacts["fp32"]
    runner = cuda_runtime.load(artifact, _options(mode="cudagraphs"), device="cpu")
    stream = runner.stream(ODD)
    frames = list(MovingScene(ODD.width, ODD.height, 2, seed=4))
    out0, out1 = stream.step(frames[0]), stream.step(frames[1])
    feeds = {"src": frames[1], **{f"r{k}i": out0[f"r{k}o"] for k in range(1, 5)}}
    got = runner.run(feeds)
    assert max(float(np.abs(got[k] - out1[k]).max()) for k in out1) <= 1e-6


def test_bad_inputs_are_named(artifacts, tmp_path):
    runner = cuda_runtime.load(artifacts["fp32"], _options(mode="eager"), device="cpu")
    with pytest.raises(InputError, match=r"\[1, 3, 135, 241\]"):
        runner.stream(ODD).step(np.zeros((1, 3, 144, 256), np.float32))
    with pytest.raises(UsageError, match="fixed at 241x135@0.5"):
        runner.stream(BUCKET)
    with pytest.raises(InputError, match="r2i"):
        runner.run({"src": np.zeros((1, 3, 135, 241), np.float32),
                    **{k: np.zeros((1, 1, 1, 1), np.float32) for k in ("r1i", "r2i", "r3i", "r4i")}}
                   | {"r1i": np.zeros((1, 16, 34, 60), np.float32)})
    moved = replace_path(artifacts["fp32"], tmp_path / "absent.pt2")
    with pytest.raises(InputError, match="not found"):
        cuda_runtime.load(moved, _options(), device="cpu")
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="torch.export.load cannot read"):
        cuda_runtime.load(replace_path(artifacts["fp32"], junk), _options(), device="cpu")


def replace_path(artifact, path):
    from dataclasses import replace

    return replace(artifact, path=path)


# -- the GPU script ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_gpu_script_dry_run_covers_every_mode(tmp_path):
    out = tmp_path / "dry.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu", "--quick",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["status"] == "done" and data["ort"]["CUDAExecutionProvider"] in ("available", "not available")
    rows = {(r["variant"], r["bucket"], r["mode"]): r for r in data["results"]}
    problems = {k: r.get("error", r["status"]) for k, r in rows.items() if r["status"] != "ok"}
    assert not problems, problems
    for key, row in rows.items():
        assert row["parity"]["passed"], (key, row["parity"]["failures"])
        if row["precision"] == "fp32":
            assert row["parity"]["max_abs"] <= 1e-5, key
    assert len([k for k in rows if k[0] == "mobilenetv3"]) == 13 and len([k for k in rows if k[0] == "resnet50"]) == 4
    first = data["args"]["buckets"][0]
    assert rows[("mobilenetv3", first, "eager_fp16")]["profile"]["stages_ms_per_frame"]["decoder"] > 0
    assert rows[("mobilenetv3", first, "max_fp16")]["profile_direct"]["top"]
    assert data["summary"][first]["best_fps"] > 0


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("precision, preset", [("fp32", "eager"), ("fp32", "cudagraphs"), ("fp16", "eager"),
                                               ("fp16", "cudagraphs"), ("fp16", "max")])
def test_gpu_rollout_matches_cpu_fp32(model, artifacts, precision, preset):
    artifact = artifacts[precision]
    runner = cuda_runtime.load(artifact, _options(device="cuda", mode=preset))
    if precision == "fp32":
        status = tc.tf32_status()
        assert status["cudnn.allow_tf32"] is False and status["cuda.matmul.allow_tf32"] is False, status
    report = _rollout(model, runner, artifact.spec.bucket, precision, frames=8)
    report.raise_if_failed()
    assert report.max_abs <= (1e-4 if precision == "fp32" else 5e-2)


@pytest.mark.gpu
@needs_gpu
def test_gpu_graph_replay_resets_exactly(artifacts):
    stream = cuda_runtime.load(artifacts["fp16"], _options(device="cuda", mode="cudagraphs")).stream(SMALL)
    frames = list(MovingScene(SMALL.width, SMALL.height, 3, seed=9))
    first = [stream.step(f) for f in frames]
    stream.reset()
    again = stream.step(frames[0])
    assert stream.graph is not None
    assert max(float(np.abs(again[k] - first[0][k]).max()) for k in again) == 0.0
    assert float(np.abs(first[2]["r1o"] - first[0]["r1o"]).max()) > 1e-4
