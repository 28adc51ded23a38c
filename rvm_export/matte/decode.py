"""Reading the input: a video file (PyAV), a folder of images, or one image (Pillow).

Every frame comes out as a :class:`Frame`: ``image`` uint8 [3, H, W] RGB in display orientation (a video's rotation
metadata and an image's EXIF orientation are applied), its presentation time in seconds, and, for video, its pts in
the stream's time base (kept, so variable frame rates survive). :func:`probe` checks the input before any work and
raises :class:`~rvm_export.errors.InputError` with one line naming the problem.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from rvm_export.core.errors import InputError, MissingRuntimeError

__all__ = ["Frame", "InputInfo", "probe", "frames", "IMAGE_SUFFIXES", "require_av"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def require_av():
    """The ``av`` module (PyAV); MissingRuntimeError with the install line when it is absent."""
    try:
        import av
    except ImportError:
        raise MissingRuntimeError("PyAV (video decoding and encoding)", "matte", "av") from None
    return av


def _require_pillow():
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise MissingRuntimeError("Pillow (image input)", "matte", "pillow") from None
    return Image, ImageOps


@dataclass
class Frame:
    """One decoded frame."""

    index: int  # 0-based position in the input
    time: float  # presentation time in seconds
    pts: int  # presentation timestamp in ``InputInfo.time_base`` units
    image: np.ndarray  # uint8 [3, H, W] RGB, display orientation (may be a strided view)

    @property
    def size(self) -> tuple[int, int]:
        return self.image.shape[2], self.image.shape[1]


@dataclass(frozen=True)
class InputInfo:
    """What :func:`probe` found out about an input, before any work."""

    path: Path  # the input
    kind: str  # "video" | "images" | "image"
    width: int  # of the first frame, display orientation, pixels
    height: int  # of the first frame, display orientation, pixels
    frames: int | None  # frame count when the container says (images: exact); None = unknown
    time_base: Fraction  # unit of Frame.pts (video: the stream's; images: 1/fps)
    rate: Fraction  # average frame rate (frames per second)
    rotation: int  # degrees counter-clockwise applied to decoded video frames: 0, 90, 180 or 270
    codec: str  # video codec name, or "image"
    audio: str | None  # audio codec name of the first audio stream, None without audio
    sizes: tuple[tuple[int, int], ...] = ()  # every distinct frame size of an image folder, in order
    files: tuple[Path, ...] = field(default=(), repr=False)  # image files, in order


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _image_size(path: Path) -> tuple[int, int]:
    Image, _ = _require_pillow()
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(0x0112, 1)  # EXIF Orientation; 5..8 swap the sides
    except Exception as exc:
        raise InputError(f"{path} is not an image Pillow can read: {exc}") from None
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _probe_images(path: Path, files: list[Path], kind: str, fps: float) -> InputInfo:
    sizes = [_image_size(f) for f in files]
    distinct = tuple(dict.fromkeys(sizes))
    rate = Fraction(fps).limit_denominator(1001)
    return InputInfo(path, kind, sizes[0][0], sizes[0][1], len(files), 1 / rate, rate, 0, "image", None, distinct,
                     tuple(files))


def _rotation(degrees: float) -> int:
    """The display rotation (counter-clockwise, as PyAV's ``VideoFrame.rotation``) snapped to a quarter turn."""
    return int(round(degrees / 90.0)) % 4 * 90


def _probe_video(path: Path) -> InputInfo:
    av = require_av()
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise InputError(f"{path} is not a video or image PyAV can open ({type(exc).__name__}: {exc})") from None
    with container:
        if not container.streams.video:
            raise InputError(f"{path} has no video stream (zero video frames)")
        stream = container.streams.video[0]
        if stream.codec_context is None:
            raise InputError(f"{path}: its video codec has no decoder in this FFmpeg build (PyAV cannot decode it)")
        codec = stream.codec_context.name
        try:
            first = next(iter(container.decode(stream)), None)
        except Exception as exc:
            raise InputError(f"{path}: cannot decode its {codec} video ({type(exc).__name__}: {exc})") from None
        if first is None:
            raise InputError(f"{path} has zero decodable video frames")
        rotation = _rotation(first.rotation)
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        count = stream.frames or None
        if count is None and stream.duration and stream.time_base:
            count = int(round(float(stream.duration * stream.time_base * rate))) or None
        audio = container.streams.audio[0].codec_context.name if container.streams.audio and \
            container.streams.audio[0].codec_context is not None else None
        return InputInfo(path, "video", width, height, count, stream.time_base or 1 / rate, Fraction(rate),
                         rotation, codec, audio, ((width, height),))


def probe(path: str | Path, fps: float = 25.0) -> InputInfo:
    """Check ``path`` and describe it: a video file, a folder of images (sorted by name, numbers in order), or one
    image. ``fps`` is the frame rate given to images. Raises InputError: missing, not a video, no or undecodable
    video stream, zero frames, an unreadable image."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                       key=_natural_key)
        if not files:
            raise InputError(f"{path} holds zero frames (no {', '.join(IMAGE_SUFFIXES)} files)")
        return _probe_images(path, files, "images", fps)
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (zero frames)")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _probe_images(path, [path], "image", fps)
    return _probe_video(path)


def _planar_rgb(frame, reformatter) -> np.ndarray:
    """uint8 [3, H, W] RGB of a decoded frame: swscale to planar gbrp (the same values as rgb24, measured equal),
    whose planes copy into place contiguously (cheaper than transposing packed RGB). ``reformatter`` keeps the
    swscale context between frames."""
    planar = reformatter.reformat(frame, format="gbrp", src_color_range=frame.color_range or None)
    height, width = planar.height, planar.width
    image = np.empty((3, height, width), np.uint8)
    for dst, plane in zip(image, (planar.planes[2], planar.planes[0], planar.planes[1])):  # gbrp holds G, B, R
        dst[...] = np.frombuffer(plane, np.uint8).reshape(height, plane.line_size)[:, :width]
    return image


def _video_frames(info: InputInfo, limit: int | None) -> Iterator[Frame]:
    av = require_av()
    k = info.rotation // 90
    reformatter = av.video.reformatter.VideoReformatter()
    with av.open(str(info.path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        index = 0
        for frame in container.decode(stream):
            if limit is not None and index >= limit:
                return
            image = _planar_rgb(frame, reformatter)
            if k:
                image = np.rot90(image, k, axes=(1, 2))
            pts = frame.pts if frame.pts is not None else index
            time = float(pts * stream.time_base) if stream.time_base else index / float(info.rate)
            yield Frame(index, time, pts, image)
            index += 1


def load_image(path: Path) -> np.ndarray:
    """uint8 [3, H, W] RGB of one image file, EXIF orientation applied."""
    Image, ImageOps = _require_pillow()
    try:
        with Image.open(path) as img:
            rgb = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
    except Exception as exc:
        raise InputError(f"{path} is not an image Pillow can read: {exc}") from None
    return rgb.transpose(2, 0, 1)


def _image_frames(info: InputInfo, limit: int | None) -> Iterator[Frame]:
    for index, path in enumerate(info.files[:limit] if limit else info.files):
        yield Frame(index, float(index * info.time_base), index, load_image(path))


def frames(info: InputInfo, limit: int | None = None) -> Iterator[Frame]:
    """Decode the input ``probe`` described, at most ``limit`` frames. Decoding errors past the first frame
    propagate (the run then fails and leaves nothing)."""
    return _video_frames(info, limit) if info.kind == "video" else _image_frames(info, limit)
