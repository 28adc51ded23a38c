"""Motion augmentation for clips ``[T,C,H,W]`` in [0, 1] (RVM paper, section 4.1; no torchvision).

Geometry is one affine map per frame, applied in a single resampling: eased motion affine (parameters interpolated
from a start to an end value with a random easing curve) then a static affine, a flip and a resized crop to the
output square. Then eased motion blur, frame pause, and on colour channels only: eased colour jitter, grayscale,
sharpness and grain noise. All draws come from the ``numpy.random.Generator`` passed in, so a sample is a pure
function of its seed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["AugmentConfig", "FOREGROUND", "BACKGROUND", "SEGMENTATION", "EASINGS", "augment_clip", "fit_short_side",
           "center_square", "affine_matrix", "warp"]

EASINGS = {
    "linear": lambda t: t,
    "in_quad": lambda t: t * t,
    "out_quad": lambda t: 1.0 - (1.0 - t) ** 2,
    "in_out_cubic": lambda t: np.where(t < 0.5, 4 * t ** 3, 1 - (-2 * t + 2) ** 3 / 2),
    "in_out_sine": lambda t: -(np.cos(np.pi * t) - 1) / 2,
}


@dataclass(frozen=True)
class AugmentConfig:
    padding: str = "zeros"  # grid_sample padding outside the source: zeros for foregrounds, reflection otherwise
    motion_prob: float = 0.5  # chance of an eased motion affine over the clip
    motion_degrees: float = 10.0  # rotation range of each motion end point
    motion_translate: float = 0.1  # translation range of each motion end point, as a fraction of the source size
    motion_scale: tuple[float, float] = (0.9, 1.1)  # zoom range of each motion end point
    motion_shear: float = 5.0  # shear range (degrees) of each motion end point
    static_prob: float = 0.5  # chance of one affine shared by all frames
    static_degrees: float = 5.0  # rotation range of the static affine
    static_scale: tuple[float, float] = (0.6, 1.1)  # zoom range of the static affine
    static_shear: float = 5.0  # shear range (degrees) of the static affine
    crop_scale: tuple[float, float] = (0.5, 1.0)  # resized crop: area fraction of the source
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # resized crop: aspect ratio range
    flip_prob: float = 0.5  # horizontal flip of the whole clip
    blur_prob: float = 0.1  # eased motion blur
    blur_length: float = 0.05  # longest blur, as a fraction of the output size
    pause_prob: float = 0.05  # one frame held for a few frames
    jitter_prob: float = 0.3  # eased colour jitter (start and end factors, eased in between)
    jitter: tuple[float, float, float, float] = (0.15, 0.15, 0.15, 0.05)  # brightness, contrast, saturation, hue
    gray_prob: float = 0.05  # whole clip to grayscale
    sharpness_prob: float = 0.1  # PIL-style sharpness blend
    sharpness: tuple[float, float] = (0.5, 2.0)  # sharpness factor range (1 = unchanged)
    noise_prob: float = 0.3  # grain: Gaussian noise per pixel and frame
    noise_std: float = 0.03  # largest grain standard deviation


FOREGROUND = AugmentConfig()
BACKGROUND = AugmentConfig(padding="reflection", static_scale=(1.0, 1.5), crop_scale=(0.3, 1.0))
SEGMENTATION = AugmentConfig(padding="reflection", static_scale=(0.7, 1.3), crop_scale=(0.3, 1.0))


# -- geometry -----------------------------------------------------------------------------------------------------
def fit_short_side(frames: Tensor, size: int, shrink_only: bool = False) -> Tensor:
    """Resize ``[T,C,H,W]`` so that the short side is ``size`` (antialiased when shrinking).

    ``shrink_only`` leaves smaller frames as they are: :func:`augment_clip` resamples them to the output size
    anyway, so enlarging first would only cost time and memory (a 2048 px HR pass from small sources).
    """
    h, w = frames.shape[-2:]
    scale = size / min(h, w)
    if scale == 1.0 or (shrink_only and scale > 1.0):
        return frames
    out = (max(round(h * scale), size), max(round(w * scale), size))
    return F.interpolate(frames, size=out, mode="bilinear", align_corners=False, antialias=scale < 1.0)


def center_square(frames: Tensor, size: int) -> Tensor:
    """Deterministic validation view: short side to ``size``, then the central ``size x size`` square."""
    frames = fit_short_side(frames, size)
    h, w = frames.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top:top + size, left:left + size]


def affine_matrix(center: tuple[float, float], degrees: float = 0.0, translate: tuple[float, float] = (0.0, 0.0),
                  scale: float = 1.0, shear: float = 0.0) -> np.ndarray:
    """3x3 map (pixel coordinates) rotating, shearing and scaling about ``center``, then translating."""
    cx, cy = center
    a, s = math.radians(degrees), math.radians(shear)
    rotate = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    shear_m = np.array([[1, math.tan(s), 0], [0, 1, 0], [0, 0, 1]])
    to_origin = np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    back = np.array([[1, 0, cx + translate[0]], [0, 1, cy + translate[1]], [0, 0, 1]])
    return back @ rotate @ shear_m @ np.diag([scale, scale, 1.0]) @ to_origin


def _normalise(width: float, height: float) -> np.ndarray:
    """Pixel coordinates (pixel centres at i + 0.5) -> grid_sample coordinates with align_corners=False."""
    return np.array([[2.0 / width, 0, -1.0], [0, 2.0 / height, -1.0], [0, 0, 1]])


def warp(frames: Tensor, forward: np.ndarray, out_size: int, padding: str) -> Tensor:
    """Resample ``[T,C,H,W]`` through per-frame source->output maps ``forward`` ``[T,3,3]``."""
    t, c, h, w = frames.shape
    theta = _normalise(w, h) @ np.linalg.inv(forward) @ np.linalg.inv(_normalise(out_size, out_size))
    theta = torch.from_numpy(theta[:, :2]).to(frames.dtype)
    grid = F.affine_grid(theta, [t, c, out_size, out_size], align_corners=False)
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _eased(rng: np.random.Generator, start: np.ndarray, end: np.ndarray, frames: int) -> np.ndarray:
    """Per-frame values ``[T, ...]`` going from ``start`` to ``end`` along a random easing curve."""
    easing = EASINGS[rng.choice(list(EASINGS))]
    t = easing(np.linspace(0.0, 1.0, frames)) if frames > 1 else np.zeros(1)
    t = np.asarray(t).reshape(-1, *([1] * np.ndim(start)))
    return start + (end - start) * t


def _geometry(rng: np.random.Generator, cfg: AugmentConfig, frames: int, width: int, height: int,
              out_size: int) -> np.ndarray:
    center = (width / 2.0, height / 2.0)
    maps = np.repeat(np.eye(3)[None], frames, axis=0)
    if rng.random() < cfg.motion_prob:
        def draw() -> np.ndarray:
            return np.array([rng.uniform(-cfg.motion_degrees, cfg.motion_degrees),
                             rng.uniform(-cfg.motion_translate, cfg.motion_translate) * width,
                             rng.uniform(-cfg.motion_translate, cfg.motion_translate) * height,
                             rng.uniform(*cfg.motion_scale), rng.uniform(-cfg.motion_shear, cfg.motion_shear)])
        for i, (deg, tx, ty, scale, shear) in enumerate(_eased(rng, draw(), draw(), frames)):
            maps[i] = affine_matrix(center, deg, (tx, ty), scale, shear)
    if rng.random() < cfg.static_prob:
        static = affine_matrix(center, rng.uniform(-cfg.static_degrees, cfg.static_degrees), (0.0, 0.0),
                               rng.uniform(*cfg.static_scale), rng.uniform(-cfg.static_shear, cfg.static_shear))
        maps = static[None] @ maps
    if rng.random() < cfg.flip_prob:
        maps = np.array([[-1, 0, width], [0, 1, 0], [0, 0, 1]])[None] @ maps
    area = width * height * rng.uniform(*cfg.crop_scale)
    ratio = math.exp(rng.uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1])))
    crop_w = min(math.sqrt(area * ratio), width)
    crop_h = min(math.sqrt(area / ratio), height)
    x0, y0 = rng.uniform(0, width - crop_w), rng.uniform(0, height - crop_h)
    crop = np.array([[out_size / crop_w, 0, -x0 * out_size / crop_w], [0, out_size / crop_h, -y0 * out_size / crop_h],
                     [0, 0, 1]])
    return crop[None] @ maps


# -- per-frame filters --------------------------------------------------------------------------------------------
def _line_kernel(length: float, angle: float) -> Tensor:
    """Normalised 2-D kernel of a line segment (bilinear splats of points along it)."""
    radius = max(int(math.ceil(length / 2)), 1)
    kernel = np.zeros((2 * radius + 1, 2 * radius + 1))
    for s in np.linspace(-length / 2, length / 2, max(int(length * 2), 2)):
        x, y = radius + s * math.cos(angle), radius + s * math.sin(angle)
        x0, y0 = int(math.floor(x)), int(math.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= x0 + dx < kernel.shape[1] and 0 <= y0 + dy < kernel.shape[0]:
                kernel[y0 + dy, x0 + dx] += wgt
    return torch.from_numpy(kernel / kernel.sum()).float()


def _motion_blur(frames: Tensor, lengths: np.ndarray, angle: float) -> Tensor:
    out = []
    for frame, length in zip(frames, lengths):
        if length < 1.0:
            out.append(frame)
            continue
        kernel = _line_kernel(float(length), angle)
        pad = kernel.shape[-1] // 2
        c = frame.shape[0]
        padded = F.pad(frame[None], (pad, pad, pad, pad), mode="replicate")
        out.append(F.conv2d(padded, kernel.expand(c, 1, *kernel.shape).to(frame.dtype), groups=c)[0])
    return torch.stack(out)


def _pause(rng: np.random.Generator, frames: Tensor) -> Tensor:
    t = frames.shape[0]
    if t < 2:
        return frames
    start = int(rng.integers(0, t - 1))
    length = int(rng.integers(1, t - start))
    frames = frames.clone()
    frames[start + 1:start + 1 + length] = frames[start]
    return frames


_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])


def _hue_matrices(shifts: np.ndarray) -> Tensor:
    """RGB->RGB hue rotation (a rotation of the I/Q chroma plane in YIQ space) for each shift (in turns)."""
    mats = []
    for shift in shifts:
        a = 2 * math.pi * float(shift)
        rot = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
        mats.append(np.linalg.inv(_YIQ) @ rot @ _YIQ)
    return torch.from_numpy(np.stack(mats)).float()


def _luma(rgb: Tensor) -> Tensor:
    return (0.299 * rgb[:, 0:1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:3])


def _colour(rng: np.random.Generator, cfg: AugmentConfig, rgb: Tensor) -> Tensor:
    t = rgb.shape[0]
    if rng.random() < cfg.jitter_prob:
        b, c, s, h = cfg.jitter
        def draw() -> np.ndarray:
            return np.array([rng.uniform(1 - b, 1 + b), rng.uniform(1 - c, 1 + c), rng.uniform(1 - s, 1 + s),
                             rng.uniform(-h, h)])
        factors = _eased(rng, draw(), draw(), t)
        per_frame = torch.from_numpy(factors[:, :3]).float().view(t, 3, 1, 1, 1).unbind(1)
        bright, contrast, saturation = (f.to(rgb.dtype) for f in per_frame)
        rgb = (rgb * bright).clamp(0, 1)
        mean = _luma(rgb).mean(dim=(1, 2, 3), keepdim=True)
        rgb = ((rgb - mean) * contrast + mean).clamp(0, 1)
        gray = _luma(rgb)
        rgb = ((rgb - gray) * saturation + gray).clamp(0, 1)
        rgb = torch.einsum("tij,tjhw->tihw", _hue_matrices(factors[:, 3]).to(rgb.dtype), rgb).clamp(0, 1)
    if rng.random() < cfg.gray_prob:
        rgb = _luma(rgb).expand_as(rgb).contiguous()
    if rng.random() < cfg.sharpness_prob:
        kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]], dtype=rgb.dtype) / 13.0
        smooth = F.conv2d(F.pad(rgb, (1, 1, 1, 1), mode="replicate"), kernel.expand(3, 1, 3, 3), groups=3)
        rgb = (smooth + rng.uniform(*cfg.sharpness) * (rgb - smooth)).clamp(0, 1)
    if rng.random() < cfg.noise_prob:
        generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
        noise = torch.randn(rgb.shape, generator=generator, dtype=rgb.dtype)
        rgb = (rgb + noise * rng.uniform(0, cfg.noise_std)).clamp(0, 1)
    return rgb


def augment_clip(rng: np.random.Generator, cfg: AugmentConfig, frames: Tensor, out_size: int,
                 colour_channels: int = 3) -> Tensor:
    """Augment ``[T,C,H,W]`` (already fitted with :func:`fit_short_side`) to ``[T,C,out,out]``.

    Geometry, blur and pause act on every channel together (an alpha channel moves with its colours);
    colour operations act on the first ``colour_channels`` channels only.
    """
    t, _, h, w = frames.shape
    frames = warp(frames, _geometry(rng, cfg, t, w, h, out_size), out_size, cfg.padding)
    if rng.random() < cfg.blur_prob:
        longest = cfg.blur_length * out_size
        lengths = _eased(rng, np.array(rng.uniform(0, longest)), np.array(rng.uniform(0, longest)), t)
        frames = _motion_blur(frames, lengths.reshape(-1), rng.uniform(0, math.pi))
    if rng.random() < cfg.pause_prob:
        frames = _pause(rng, frames)
    colour = _colour(rng, cfg, frames[:, :colour_channels])
    return torch.cat([colour, frames[:, colour_channels:].clamp(0, 1)], dim=1)
