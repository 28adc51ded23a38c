"""The matting package's parts without a model: scene cuts on real clips, fitting, pixel arithmetic, output plans,
the staged pipeline, and the import rule (only source.py touches the export API)."""
from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from matte_helpers import decode_rgb, resize_rgb  # noqa: E402
from rvm_export.core.errors import UsageError# noqa: E402
from rvm_export.matte.compose import composite_into, to_src, to_u8_into  # noqa: E402
from rvm_export.matte.cuts import SceneCutDetector  # noqa: E402
from rvm_export.matte.encode import plan_output  # noqa: E402
from rvm_export.matte.fit import Fit  # noqa: E402
from rvm_export.matte.pipeline import run_stages  # noqa: E402

pytestmark = pytest.mark.matte
PACKAGE = Path(__file__).resolve().parents[2] / "rvm_export" / "matte"


def _cuts(frames: list[np.ndarray], **kwargs) -> list[int]:
    detector = SceneCutDetector(**kwargs)
    return [i for i, rgb in enumerate(frames) if detector(np.ascontiguousarray(rgb.transpose(2, 0, 1)))]


@pytest.fixture(scope="module")
def decoded(clips):
    return {name: decode_rgb(path) for name, path in clips.items()}


def test_scene_cuts_fire_at_the_real_cuts_only(decoded):
    # bikes.mp4 is a montage: its five hard cuts were checked by eye (frames 29|30, 75|76, 136|137, 186|187,
    # 241|242); frame 73 is a rack focus, not a cut. carphone and bigbuckbunny are single shots.
    assert _cuts(decoded["bikes"]) == [30, 76, 137, 187, 242]
    assert _cuts(decoded["carphone"]) == []
    assert _cuts(decoded["bigbuckbunny"]) == []


def test_scene_cut_fires_on_a_splice(decoded):
    bunny = [resize_rgb(f, 176, 144) for f in decoded["bigbuckbunny"][:40]]
    spliced = decoded["carphone"][:50] + bunny
    assert _cuts(spliced) == [50]
    assert _cuts(bunny + decoded["carphone"][:20]) == [40]


def test_a_new_frame_size_counts_as_a_cut():
    detector = SceneCutDetector()
    assert not detector(np.zeros((3, 40, 60), np.uint8))
    assert detector(np.zeros((3, 60, 40), np.uint8))


def test_letterbox_geometry_and_round_trip():
    fit = Fit(176, 144, 192, 144, "letterbox")
    assert fit.inner == (8, 0, 176, 144)  # centred, full height, 8-pixel bands left and right
    image = np.random.default_rng(0).integers(0, 256, (3, 144, 176), dtype=np.uint8)
    src = fit.to_model(image)
    assert src.shape == (1, 3, 144, 192) and src.dtype == np.float32
    np.testing.assert_array_equal(src[0, :, :, 8:184], image / np.float32(255))  # the picture, unscaled
    np.testing.assert_array_equal(src[0, :, :, :8], np.repeat(src[0, :, :, 8:9], 8, axis=2))  # edge repeated
    fgr, pha = fit.from_model(src[:, :3], src[:, :1])
    assert fgr.shape == (3, 144, 176) and pha.shape == (144, 176)
    np.testing.assert_allclose(fgr, image / 255.0, atol=1e-6)  # a crop at scale 1 is exact


def test_resize_mode_and_scaling_back():
    fit = Fit(320, 180, 160, 120, "resize")
    assert fit.inner == (0, 0, 160, 120)
    fgr, pha = fit.from_model(np.full((1, 3, 120, 160), 0.25, np.float32), np.full((1, 1, 120, 160), 0.75, np.float32))
    assert fgr.shape == (3, 180, 320) and pha.shape == (180, 320)
    np.testing.assert_allclose(pha, 0.75, atol=1e-6)  # bilinear keeps constants
    letterbox = Fit(320, 180, 160, 120, "letterbox")
    assert letterbox.inner == (0, 15, 160, 90)  # 16:9 into 4:3: bands top and bottom


def test_exact_refuses_another_size():
    with pytest.raises(UsageError, match="--fit exact cannot reach"):
        Fit(176, 144, 192, 144, "exact")
    assert Fit(192, 144, 192, 144, "exact").identity


def test_to_src_is_division_by_255():
    image = np.arange(256, dtype=np.uint8).reshape(1, 1, 256).repeat(3, axis=0)
    np.testing.assert_array_equal(to_src(image)[0], image.astype(np.float32) / np.float32(255))


@pytest.mark.parametrize("height", [1, 31, 33, 100])  # band edges: fewer rows than a band, not a multiple
def test_composite_and_u8_round_like_float64(height):
    rng = np.random.default_rng(height)
    fgr = rng.random((3, height, 50), dtype=np.float32)
    pha = rng.random((height, 50), dtype=np.float32)
    pha[0, :5] = [0.0, 1.0, 0.5 / 255, 1.5 / 255, 254.5 / 255]
    colour = np.array([120, 255, 155], np.float32).reshape(3, 1, 1)
    picture = rng.random((3, height, 50), dtype=np.float32) * 255
    for background in (colour, picture):
        out = np.empty((3, height, 50), np.uint8)
        composite_into(out, fgr, pha, background)
        exact = fgr.astype(np.float64) * pha * 255 + background * (1.0 - pha.astype(np.float64))
        assert np.abs(out - np.floor(exact + 0.5)).max() <= 1  # float32 vs float64 at .5 boundaries
        assert np.mean(out == np.floor(exact + 0.5)) > 0.999
    alpha = np.empty((height, 50), np.uint8)
    to_u8_into(alpha, pha)
    np.testing.assert_array_equal(alpha, np.floor(pha * np.float32(255) + np.float32(0.5)))
    assert alpha[0, 0] == 0 and alpha[0, 1] == 255


def test_u8_clips_out_of_range_values():
    out = np.empty((1, 4), np.uint8)
    to_u8_into(out, np.array([[-0.5, 1.7, np.float32(0.999), 0.0]], np.float32))
    np.testing.assert_array_equal(out, [[0, 255, 255, 0]])


@pytest.mark.parametrize("kind,name,codec", [
    ("composite", "a.mp4", "h264"), ("alpha", "a.mkv", "h264"), ("rgba", "a.mov", "prores"),
    ("rgba", "a.webm", "vp9"), ("rgba", "frames", "png"), ("foreground", "a.MOV", "prores")])
def test_output_plans_follow_the_extension(tmp_path, kind, name, codec):
    assert plan_output(kind, tmp_path / name).codec == codec


@pytest.mark.parametrize("kind,name,message", [
    ("rgba", "a.mp4", "H.264 has no alpha"), ("composite", "a.avi", "unknown extension '.avi'")])
def test_output_plans_refuse(tmp_path, kind, name, message):
    with pytest.raises(UsageError, match=message):
        plan_output(kind, tmp_path / name)


def test_stages_keep_order_and_overlap():
    seen: list[int] = []
    alive = {"max": 0, "now": 0}
    lock = threading.Lock()

    def produce():
        for i in range(40):
            with lock:
                alive["now"] += 1
                alive["max"] = max(alive["max"], alive["now"])
            yield i

    def consume(item):
        time.sleep(0.002)
        seen.append(item)
        with lock:
            alive["now"] -= 1

    times = run_stages(produce(), lambda x: x * 2, consume, depth=2)
    assert seen == [2 * i for i in range(40)] and times.items == 40
    # items in flight are bounded by the two queues (2 each) plus one in each of the three stages
    assert alive["max"] <= 2 + 2 + 3
    assert times.wall < times.produce + times.infer + times.consume + 0.5


@pytest.mark.parametrize("stage", ["produce", "infer", "consume"])
def test_a_failing_stage_stops_the_others(stage):
    def produce():
        for i in range(1000):
            if stage == "produce" and i == 5:
                raise RuntimeError("decode broke")
            yield i

    def infer(x):
        if stage == "infer" and x == 5:
            raise RuntimeError("model broke")
        return x

    consumed = []

    def consume(x):
        if stage == "consume" and x == 5:
            raise RuntimeError("encoder broke")
        consumed.append(x)

    before = threading.active_count()
    with pytest.raises(RuntimeError, match="broke"):
        run_stages(produce(), infer, consume, depth=2)
    assert len(consumed) <= 5 and threading.active_count() == before


def test_keyboard_interrupt_in_the_model_stage_propagates():
    def infer(x):
        if x == 3:
            raise KeyboardInterrupt
        return x

    before = threading.active_count()
    with pytest.raises(KeyboardInterrupt):
        run_stages(iter(range(100)), infer, lambda x: None, depth=2)
    assert threading.active_count() == before


def test_only_source_imports_the_export_api():
    """The lead re-points one file when targets/ and the spec move: every other module keeps off them."""
    offenders = []
    for path in sorted(PACKAGE.glob("*.py")):
        if path.name == "source.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                if name.split(".")[0] == "targets" or name in ("rvm_export.folder", "rvm_export.pipeline",
                                                               "rvm_export.core.rollout"):
                    offenders.append(f"{path.name}: {name}")
    assert offenders == []
