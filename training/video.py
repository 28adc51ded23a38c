"""Video files through PyAV (FFmpeg's decoders): frame counts and sizes, frames by index, and writing test clips.

PyAV is imported inside the functions: only clips stored as videos need it, and a missing PyAV is reported as a
problem of that clip (with the install command) by the layout check, before any training.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["VIDEO_EXTENSIONS", "PYAV_INSTALL", "VideoInfo", "VideoError", "probe_video", "read_video_frames",
           "write_video"]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v")
PYAV_INSTALL = "pip install 'av==18.1.0' (or the train extra: pip install 'rvm-export[train]')"


class VideoError(Exception):
    """A video that cannot be opened or decoded, or PyAV missing; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    path: Path
    frames: int  # decoded frame count (exact: every frame is decoded, container metadata is not trusted)
    height: int  # px
    width: int  # px


def _av():
    try:
        import av
    except ImportError:
        raise VideoError(f"reading videos needs PyAV, which is not installed: {PYAV_INSTALL}") from None
    return av


def _open(path: Path):
    av = _av()
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise VideoError(f"{path}: cannot open as a video ({exc})") from exc
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: the file has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return av, container, stream


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count and size of the first video stream of ``path``, by decoding every frame.

    Raises :class:`VideoError` if PyAV is missing or the file cannot be opened or decoded.
    """
    path = Path(path)
    av, container, stream = _open(path)
    count, height, width = 0, stream.codec_context.height, stream.codec_context.width
    try:
        with container:
            for frame in container.decode(stream):
                if count == 0:
                    height, width = frame.height, frame.width
                count += 1
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: decoding failed after {count} frame(s) ({exc})") from exc
    return VideoInfo(path, count, height, width)


def read_video_frames(path: str | Path, indices: Sequence[int], gray: bool = False) -> np.ndarray:
    """Frames at ``indices`` (any order, repeats allowed) as uint8 ``[T,H,W,3]`` (``gray``: ``[T,H,W]``).

    Decodes from the first frame up to the largest index, so the cost grows with how far into the clip a sample
    reaches. Raises :class:`VideoError` if the file is shorter than an index or cannot be decoded.
    """
    path = Path(path)
    wanted = {int(i) for i in indices}
    last = max(wanted)
    found: dict[int, np.ndarray] = {}
    av, container, stream = _open(path)
    try:
        with container:
            for index, frame in enumerate(container.decode(stream)):
                if index in wanted:
                    found[index] = frame.to_ndarray(format="gray" if gray else "rgb24")
                if index >= last:
                    break
    except av.error.FFmpegError as exc:
        raise VideoError(f"{path}: decoding failed ({exc})") from exc
    if len(found) != len(wanted):
        raise VideoError(f"{path}: has no frame {last} (the file holds fewer frames than when it was checked)")
    return np.stack([found[int(i)] for i in indices])


def write_video(path: str | Path, frames: np.ndarray, fps: int = 25, codec: str = "ffv1") -> None:
    """Write uint8 frames ``[T,H,W,3]`` (or gray ``[T,H,W]``) as a video; ``ffv1`` (.mkv) is lossless, ``libx264``
    (.mp4) is not.

    Used by the generated clip sets (training/synthetic_clips.py). Raises :class:`VideoError` without PyAV.
    """
    av = _av()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        gray = frames.ndim == 3
        stream.pix_fmt = "yuv420p" if codec == "libx264" else ("gray" if gray else "bgr0")
        for array in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="gray" if gray else "rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
