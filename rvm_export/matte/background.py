"""What ``--composite`` goes over: a colour, an image, a video, or the frame itself blurred.

``parse_background(text)`` accepts ``green`` (the default, RGB 120, 255, 155 as the original converter used),
``black``, ``white``, ``blue``, ``#RRGGBB``, ``R,G,B``, ``blur`` or ``blur:RADIUS`` (pixels, default 24), or the path
of an image or a video. Images and video frames cover the frame (scaled to fill, centred, cropped); a background
video plays from its start, one of its frames per input frame, and loops when shorter. ``for_frame`` returns float32
in [0, 255]: [3, 1, 1] for a colour, [3, H, W] otherwise.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from rvm_export.core.errors import InputError, UsageError

from .decode import IMAGE_SUFFIXES, Frame, load_image, probe

__all__ = ["parse_background", "Background", "COLOURS"]

COLOURS = {"green": (120, 255, 155), "black": (0, 0, 0), "white": (255, 255, 255), "blue": (0, 0, 255)}


def _cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """uint8 [3, h, w] scaled to cover ``width`` x ``height`` and centre-cropped -> float32 [3, height, width]."""
    from PIL import Image

    _, h, w = image.shape
    scale = max(width / w, height / h)
    sw, sh = max(width, round(w * scale)), max(height, round(h * scale))
    packed = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), "RGB")
    resized = np.asarray(packed.resize((sw, sh), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    x, y = (sw - width) // 2, (sh - height) // 2
    return resized[:, y:y + height, x:x + width].astype(np.float32)


class Background:
    """Base: a constant colour."""

    needs_frame = False  # True when for_frame reads the frame's pixels (the pipeline then keeps them)

    def __init__(self, rgb: tuple[int, int, int] = COLOURS["green"]) -> None:
        self.label = f"colour {rgb}"
        self.value = np.array(rgb, np.float32).reshape(3, 1, 1)

    def for_frame(self, frame: Frame, width: int, height: int) -> np.ndarray:
        return self.value

    def close(self) -> None:
        pass


class ImageBackground(Background):
    def __init__(self, path: Path) -> None:
        self.label = f"image {path}"
        self.image = load_image(path)
        self.cache: dict[tuple[int, int], np.ndarray] = {}

    def for_frame(self, frame: Frame, width: int, height: int) -> np.ndarray:
        size = (width, height)
        if size not in self.cache:
            self.cache = {size: _cover(self.image, *size)}
        return self.cache[size]


class VideoBackground(Background):
    def __init__(self, path: Path) -> None:
        from .decode import frames

        self.label = f"video {path}"
        self.info = probe(path)
        if self.info.kind != "video":
            raise InputError(f"background {path} is not a video")
        self._frames = frames
        self.iterator = frames(self.info)

    def for_frame(self, frame: Frame, width: int, height: int) -> np.ndarray:
        picture = next(self.iterator, None)
        if picture is None:  # loop
            self.iterator = self._frames(self.info)
            picture = next(self.iterator)
        return _cover(picture.image, width, height)

    def close(self) -> None:
        self.iterator.close()


class BlurBackground(Background):
    needs_frame = True

    def __init__(self, radius: float) -> None:
        if radius <= 0:
            raise UsageError(f"blur radius must be positive, got {radius}")
        self.label = f"blurred frame (radius {radius:g} px)"
        self.radius = radius

    def for_frame(self, frame: Frame, width: int, height: int) -> np.ndarray:
        """Shrink (box filter), blur the small picture, enlarge: a wide blur at the cost of a small one."""
        from PIL import Image, ImageFilter

        factor = max(1, int(self.radius // 4))
        packed = Image.fromarray(np.ascontiguousarray(frame.image.transpose(1, 2, 0)), "RGB")
        small = packed.reduce(factor) if factor > 1 else packed
        small = small.filter(ImageFilter.GaussianBlur(self.radius / factor))
        return np.asarray(small.resize((width, height), Image.Resampling.BILINEAR)).transpose(2, 0, 1).astype(
            np.float32)


def parse_background(text: str) -> Background:
    """A :class:`Background` from the ``--background`` value; files are opened (and checked) here, before any work.
    Raises UsageError (a malformed value) or InputError (an unreadable file)."""
    value = text.strip()
    lowered = value.lower()
    if lowered in COLOURS:
        return Background(COLOURS[lowered])
    if re.fullmatch(r"#[0-9a-fA-F]{6}", value):
        return Background(tuple(int(value[i:i + 2], 16) for i in (1, 3, 5)))  # type: ignore[arg-type]
    if re.fullmatch(r"\d{1,3},\d{1,3},\d{1,3}", value):
        rgb = tuple(int(v) for v in value.split(","))
        if max(rgb) > 255:
            raise UsageError(f"--background {value}: channels must be 0..255")
        return Background(rgb)  # type: ignore[arg-type]
    if lowered == "blur" or lowered.startswith("blur:"):
        _, _, radius = lowered.partition(":")
        try:
            return BlurBackground(float(radius) if radius else 24.0)
        except ValueError:
            raise UsageError(f"--background {value}: blur radius must be a number (blur:24)") from None
    path = Path(value)
    if not path.exists():
        raise UsageError(f"--background {value!r} is not a colour ({', '.join(COLOURS)}, #RRGGBB, R,G,B), "
                         f"blur[:RADIUS], nor an existing image or video")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageBackground(path)
    return VideoBackground(path)
