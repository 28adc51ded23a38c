"""Fitting frames to the size a static model was built for, and mapping its outputs back to the frame.

Modes: ``letterbox`` (default) scales the frame uniformly into the model's size and pads the rest by repeating the
edge pixels; ``resize`` stretches it to the model's size; ``exact`` refuses any size but the model's own. Outputs
come back by cropping the picture's area and resizing it (bilinear, antialiased when shrinking) to the frame size.
Letterbox keeps people's proportions, which is what the network was trained on; the price is the padded band's
compute. A frame of the model's size passes through untouched in every mode.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rvm_export.core.errors import UsageError

from .compose import to_src

__all__ = ["Fit", "FIT_MODES"]

FIT_MODES = ("letterbox", "resize", "exact")


def _resize_u8(image: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    packed = np.ascontiguousarray(image.transpose(1, 2, 0))
    resized = Image.fromarray(packed, "RGB").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(resized).transpose(2, 0, 1)


def _resize_plane(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(plane, np.float32), "F")
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR))


@dataclass(frozen=True)
class Fit:
    """How ``frame_w`` x ``frame_h`` frames map into a ``model_w`` x ``model_h`` model input, and back."""

    frame_w: int  # frame width, pixels
    frame_h: int  # frame height, pixels
    model_w: int  # model input width, pixels
    model_h: int  # model input height, pixels
    mode: str  # "letterbox" | "resize" | "exact"

    def __post_init__(self) -> None:
        if self.mode not in FIT_MODES:
            raise UsageError(f"--fit must be one of {', '.join(FIT_MODES)}, got {self.mode!r}")
        if self.mode == "exact" and not self.identity:
            raise UsageError(f"frames are {self.frame_w}x{self.frame_h} and the model takes {self.model_w}x"
                             f"{self.model_h}: --fit exact cannot reach it (use letterbox or resize)")

    @property
    def identity(self) -> bool:
        return (self.frame_w, self.frame_h) == (self.model_w, self.model_h)

    @property
    def inner(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) of the picture inside the model input."""
        if self.identity or self.mode != "letterbox":
            return 0, 0, self.model_w, self.model_h
        scale = min(self.model_w / self.frame_w, self.model_h / self.frame_h)
        width = max(1, min(self.model_w, round(self.frame_w * scale)))
        height = max(1, min(self.model_h, round(self.frame_h * scale)))
        return (self.model_w - width) // 2, (self.model_h - height) // 2, width, height

    def to_model(self, image: np.ndarray) -> np.ndarray:
        """uint8 [3, H, W] frame -> float32 [1, 3, model_h, model_w] in [0, 1]."""
        return to_src(self.to_model_u8(image))

    def to_model_u8(self, image: np.ndarray) -> np.ndarray:
        """uint8 [3, H, W] frame -> uint8 [3, model_h, model_w]: resized and padded, before the float conversion."""
        if self.identity:
            return image
        x, y, width, height = self.inner
        resized = _resize_u8(image, width, height)
        if (width, height) != (self.model_w, self.model_h):
            pad = ((0, 0), (y, self.model_h - height - y), (x, self.model_w - width - x))
            resized = np.pad(resized, pad, mode="edge")
        return resized

    def from_model(self, fgr: np.ndarray, pha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model outputs fgr [1, 3, h, w], pha [1, 1, h, w] -> float32 fgr [3, H, W], pha [H, W] at frame size."""
        if self.identity:
            return fgr[0], pha[0, 0]
        x, y, width, height = self.inner
        planes = [p[y:y + height, x:x + width] for p in (*fgr[0], pha[0, 0])]
        resized = [_resize_plane(p, self.frame_w, self.frame_h) for p in planes]
        return np.stack(resized[:3]), resized[3]
