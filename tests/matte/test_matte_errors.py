"""Bad inputs get one line and exit 2 with nothing written; a failure or Ctrl-C mid-run leaves nothing under the
requested names (and no temporary files)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from matte_helpers import SMALL_RATIO, leftovers, write_lossless  # noqa: E402
from rvm_export.matte.cli import main  # noqa: E402

pytestmark = [pytest.mark.onnx, pytest.mark.matte]
ROOT = Path(__file__).resolve().parents[2]


def _undecodable(folder: Path) -> Path:
    """An AVI whose video FourCC no FFmpeg decoder knows (an FFV1 file with its tag renamed)."""
    import av

    path = folder / "ffv1.avi"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = path.read_bytes()
    assert data.count(b"FFV1") == 2  # the stream header's handler and the bitmap header's compression
    bad = folder / "unknown_codec.avi"
    bad.write_bytes(data.replace(b"FFV1", b"QQZ9"))
    return bad


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, clips):
    folder = tmp_path_factory.mktemp("bad_inputs")
    (folder / "notes.mp4").write_text("this is not a video\n")
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "no_images").mkdir()
    return {"not_a_video": folder / "notes.mp4", "empty_file": folder / "empty.mp4",
            "empty_folder": folder / "no_images", "unknown_codec": _undecodable(folder), "clip": clips["carphone"]}


CASES = [  # (input key, extra arguments, model key, message)
    ("not_a_video", [], "onnx", "is not a video or image PyAV can open"),
    ("empty_file", [], "onnx", "is empty (zero frames)"),
    ("empty_folder", [], "onnx", "holds zero frames"),
    ("unknown_codec", [], "onnx", "has no decoder in this FFmpeg build"),
    ("clip", ["--fit", "exact"], "static", "is fixed at 192x144@0.5 and the frames are 176x144"),
    ("clip", ["--downsample-ratio", "0.25"], "static", "runs here (ratio 0.25; device cpu); it lists onnx/"
     "rvm_mobilenetv3_192x144_r0.5_fp32.onnx [exported; 192x144@0.5]"),
    ("clip", ["--downsample-ratio", "0.25"], "static_file", "192x144@0.5 (rvm_mobilenetv3_192x144_r0.5_fp32.onnx) "
     "is fixed at 192x144@0.5: it cannot run at --downsample-ratio 0.25"),
    ("clip", ["--artifact", "nope.onnx"], "onnx", "--artifact 'nope.onnx' is not in"),
    ("clip", ["--target", "tflite"], "onnx", "has no artifact that passed parity and runs here (target tflite"),
    ("clip", [], "missing", "model not found"),
    ("clip", ["--rgba", "{out}/x.mp4"], "onnx", "H.264 has no alpha channel"),
    ("clip", ["--alpha", "{out}/x.avi"], "onnx", "unknown extension '.avi'"),
    ("clip", ["--alpha", "{out}/a", "--crf", "20"], "onnx", "--crf applies to H.264 and VP9 outputs"),
    ("clip", ["--compare-video", "{out}/s.mp4"], "onnx", "need --compare M2"),
    ("clip", ["--background", "no/such/file.png"], "onnx", "is not a colour"),
    ("clip", ["--downsample-ratio", "1.5"], "onnx", "must be in (0, 1]"),
]


@pytest.mark.parametrize("key,extra,model,message", CASES, ids=[
    "not-a-video", "zero-bytes", "empty-folder", "undecodable-codec", "static-fit-exact", "static-ratio",
    "static-file-ratio", "unknown-artifact", "no-such-target", "missing-model", "rgba-in-mp4", "unknown-extension",
    "crf-unused",
    "compare-output-alone", "bad-background", "ratio-range"])
def test_bad_input_exits_2_with_one_line_and_nothing_written(bad_inputs, onnx_export, onnx_static_export, tmp_path,
                                                             capsys, key, extra, model, message):
    out = tmp_path / "out"
    models = {"onnx": onnx_export, "static": onnx_static_export, "missing": tmp_path / "nope",
              "static_file": onnx_static_export / "onnx" / "rvm_mobilenetv3_192x144_r0.5_fp32.onnx"}
    extra = [a.replace("{out}", str(out)) for a in extra]
    outputs = [] if any(a in extra for a in ("--rgba", "--alpha", "--compare-video")) else [
        "--composite", str(out / "c.mp4"), "--alpha", str(out / "alpha")]
    code = main([str(bad_inputs[key]), "--model", str(models[model]), *outputs, *extra, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_existing_output_is_refused_before_any_work(clips, onnx_export, tmp_path, capsys):
    existing = tmp_path / "alpha"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    code = main([str(clips["carphone"]), "--model", str(onnx_export), "--alpha", str(existing),
                 "--composite", str(tmp_path / "c.mp4"), "--quiet"])
    assert code == 2 and "exists: pass --overwrite" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["alpha", "keep.txt"]


def test_video_output_of_mixed_sizes_is_refused(onnx_export, tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(folder / "1.png")
    Image.fromarray(np.zeros((60, 40, 3), np.uint8)).save(folder / "2.png")
    assert main([str(folder), "--model", str(onnx_export), "--composite", str(tmp_path / "c.mp4"), "--quiet"]) == 2
    assert "a video output needs one size" in capsys.readouterr().err
    assert not (tmp_path / "c.mp4").exists()


@pytest.mark.parametrize("where,exception,code", [
    ("model", RuntimeError("runtime exploded"), 4), ("model", KeyboardInterrupt(), 130),
    ("encoder", RuntimeError("disk full"), 4), ("decoder", RuntimeError("bad packet"), 4)])
def test_failure_mid_run_leaves_nothing(clips, onnx_export, tmp_path, monkeypatch, capsys, where, exception, code):
    from rvm_export.matte import decode, encode, source

    calls = {"n": 0}

    def breaking(original):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 5:
                raise exception
            return original(*args, **kwargs)
        return wrapper

    if where == "model":
        monkeypatch.setattr(source._OwnedStream, "step", breaking(source._OwnedStream.step))
    elif where == "encoder":
        monkeypatch.setattr(encode.Writer, "write", breaking(encode.Writer.write))
    else:
        monkeypatch.setattr(decode, "_planar_rgb", breaking(decode._planar_rgb))  # the decode stage
    out = tmp_path / "out"
    args = [str(clips["carphone"]), "--model", str(onnx_export), "--composite", str(out / "c.mp4"), "--rgba",
            str(out / "rgba"), "--alpha", str(out / "a.webm"), "--downsample-ratio", str(SMALL_RATIO), "--quiet"]
    assert main(args) == code
    assert calls["n"] == 5
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("nothing was written" in err or "matting stopped" in err), err
    assert sorted(p.name for p in out.rglob("*")) == []


def _default_sigint() -> None:
    """In the child before exec: SIGINT back to its default. A shell's background job ignores SIGINT, the child would
    inherit that and Python would then install no KeyboardInterrupt handler (the test would see exit 0)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_in_a_real_process_leaves_nothing(onnx_export, tmp_path):
    """SIGINT to `python -m rvm_export.matte` once frames are being written: exit 130, no output, no temporary."""
    frames = [np.full((144, 176, 3), (i * 7) % 256, np.uint8) for i in range(400)]
    source = write_lossless(tmp_path / "long.mov", frames)
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "rvm_export.matte", str(source), "--model", str(onnx_export), "--composite",
         str(out / "c.mp4"), "--rgba", str(out / "rgba"), "--downsample-ratio", str(SMALL_RATIO), "--quiet",
         "--no-scene-cuts"], env=env, stderr=subprocess.PIPE, text=True,
        preexec_fn=_default_sigint)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        written = [p for p in out.rglob("*.png")]
        if len(written) >= 5:  # PNGs appear inside the temporary sibling while the run goes on
            break
        time.sleep(0.05)
    assert process.poll() is None and len(written) >= 5, "the run ended before it could be interrupted"
    assert all(".partial" in str(p.relative_to(out)) for p in written)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted; nothing was written" in err
    assert list(out.iterdir()) == [] and not leftovers(tmp_path)
