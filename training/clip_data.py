"""Datasets over the user's own clips (training/clips.py) for the ``finetune`` preset.

The clips have no separate foreground: a frame is the footage as shot. A training sample therefore returns the
augmented frame as ``fgr`` and, as ``bgr``, either that same frame (the clip's own composite: ``composite(fgr, pha,
fgr)`` is the frame) or one of the user's backgrounds, onto which the frame is re-composited with its alpha.
Samples keep the keys of :class:`training.datasets.MattingDataset` (``fgr, pha, bgr``), so the loop is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .augment import BACKGROUND, AugmentConfig, augment_clip, fit_short_side
from .clips import ClipSet, FrameClip, VideoClip, describe_clip_set, scan_clip_set, split_clips
from .config import TrainConfig
from .datasets import DataSources, open_segmentation
from .errors import ClipLayoutError, DataLayoutError
from .layouts import read_image
from .sampler import position_to_index, sample_frame_indices, sample_rng
from .video import read_video_frames

__all__ = ["CLIP_FOREGROUND", "ClipBackgrounds", "ClipMattingDataset", "ClipValidation", "open_clip_data",
           "check_clip_data"]

# The frame and its alpha move together; reflection (not zeros) continues the footage's own background at the
# borders, which stays a valid frame/alpha pair whether or not the sample is re-composited.
CLIP_FOREGROUND = AugmentConfig(padding="reflection")

Clip = FrameClip | VideoClip


@dataclass
class ClipBackgrounds:
    """The user's background images and videos; ``own_prob``: chance of keeping the clip's own background."""
    images: list[Path]
    videos: list[VideoClip]  # only ``video`` is read
    own_prob: float

    def sample(self, rng: np.random.Generator, size: int, seq_length: int) -> Tensor | None:
        """An augmented background clip ``[T,3,size,size]``, or None: keep the frame as shot (always without any)."""
        if not (self.images or self.videos) or rng.random() < self.own_prob:
            return None
        use_video = bool(self.videos) and (not self.images or rng.random() < 0.5)
        if use_video:
            clip = self.videos[int(rng.integers(len(self.videos)))]
            rgb = read_video_frames(clip.video, sample_frame_indices(rng, len(clip), seq_length))
            frames = fit_short_side(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255.0, size, True)
        else:
            path = self.images[int(rng.integers(len(self.images)))]
            frames = fit_short_side(read_image(path, "RGB", size)[None], size, True).expand(seq_length, -1, -1, -1)
        return augment_clip(rng, BACKGROUND, frames, size)


class ClipMattingDataset(Dataset):
    """Training samples from the user's clips: ``fgr`` (the frame) ``[T,3,S,S]``, ``pha`` ``[T,1,S,S]``, ``bgr``."""

    def __init__(self, clips: Sequence[Clip], backgrounds: ClipBackgrounds, size: int, seq_length: int, seed: int,
                 stream: int) -> None:
        self.clips, self.backgrounds = list(clips), backgrounds
        self.size, self.seq_length, self.seed, self.stream = size, seq_length, seed, stream
        # One sample per seq_length frames of every clip, so an epoch covers each frame about once.
        self.samples = [(c, start) for c, clip in enumerate(self.clips) for start in range(0, len(clip), seq_length)]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        rng = sample_rng(self.seed, self.stream, position)
        clip_index, start = self.samples[position_to_index(self.seed, self.stream, position, len(self.samples))]
        clip = self.clips[clip_index]
        if len(clip) == 1:
            indices = [0] * self.seq_length  # a single matted image: motion comes from augmentation only
        else:
            indices = sample_frame_indices(rng, len(clip), self.seq_length, start)
        frames, alphas = clip.read(indices, self.size)
        layers = augment_clip(rng, CLIP_FOREGROUND, torch.cat([frames, alphas], dim=1), self.size)
        fgr, pha = layers[:, :3], layers[:, 3:]
        bgr = self.backgrounds.sample(rng, self.size, self.seq_length)
        return {"fgr": fgr, "pha": pha, "bgr": fgr if bgr is None else bgr}


class ClipValidation(Dataset):
    """Held-out clips as shot: the first ``seq_length`` frames (fewer if the clip is shorter), the whole frame
    resized to short side ``size``. Item ``i``: ``fgr`` = ``bgr`` = the frames ``[T,3,H,W]``, ``pha`` ``[T,1,H,W]``.
    ``backgrounds`` is unused (the paper's :class:`ValidationClips` takes one); the first ``count`` clips are kept.
    """

    def __init__(self, clips: Sequence[Clip], backgrounds: object, size: int, seq_length: int, count: int) -> None:
        self.clips, self.size, self.seq_length = list(clips)[:count], size, seq_length

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip = self.clips[index]
        frames, alphas = clip.read(list(range(min(self.seq_length, len(clip)))), self.size)
        layers = fit_short_side(torch.cat([frames, alphas], dim=1), self.size).clamp(0, 1)
        return {"fgr": layers[:, :3], "pha": layers[:, 3:], "bgr": layers[:, :3]}


def _segmentation(cfg: TrainConfig, root: Path, problems: list[str]) -> tuple[object, list, str]:
    """Open the segmentation sets the config asks for; returns (video reader or None, image readers, a note)."""
    names = (cfg.seg_video_set, *cfg.seg_image_sets)
    present = [n for n in names if (root / n).exists()]
    if cfg.segmentation is False:
        return None, [], "segmentation off: the configuration turns it off"
    if not present and cfg.segmentation == "auto":
        return None, [], (f"segmentation off: no segmentation data under {root} (looked for "
                          f"{', '.join(n + '/' for n in names)}); only the matting head is trained")
    images = [n for n in cfg.seg_image_sets if n in present]
    if cfg.seg_video_set not in present or not images:
        problems.append(f"{root}: segmentation needs {cfg.seg_video_set}/ (clips) and at least one of "
                        f"{', '.join(n + '/' for n in cfg.seg_image_sets)} (images); found "
                        f"{', '.join(n + '/' for n in present) or 'none'}")
        return None, [], ""
    try:
        video, image_readers = open_segmentation(root, cfg.seg_video_set, images)
    except DataLayoutError as exc:
        problems.append(str(exc))
        return None, [], ""
    return video, image_readers, (f"segmentation on: {len(video.clips)} {cfg.seg_video_set} clips, "
                                  + ", ".join(f"{n} {len(r)} images" for n, r in zip(images, image_readers)))


def open_clip_data(cfg: TrainConfig, root: str | Path) -> DataSources:
    """Check the user's clip layout under ``root`` in full, then open it for training.

    Returns :class:`DataSources` whose matting entries are the train/valid clip lists and whose backgrounds are a
    :class:`ClipBackgrounds`. Raises :class:`ClipLayoutError` (exit 2) listing every problem, each naming its file.
    """
    return _open(cfg, Path(root))[0]


def check_clip_data(cfg: TrainConfig, root: str | Path) -> list[str]:
    """What ``rvm-train --check-data`` prints for a usable clip set; raises :class:`ClipLayoutError` otherwise."""
    data, found = _open(cfg, Path(root))
    return describe_clip_set(found, cfg.valid_fraction) + [data.notes[-1]]


def _open(cfg: TrainConfig, root: Path) -> tuple[DataSources, ClipSet]:
    found = scan_clip_set(root, cfg.matting_set, cfg.background_images)
    seg_video, seg_images, note = _segmentation(cfg, root, found.problems) if root.is_dir() else (None, [], "")
    if found.problems:
        raise ClipLayoutError(found.problems)
    train, valid = split_clips(found.clips, cfg.valid_fraction)
    backgrounds = ClipBackgrounds(found.background_images, found.background_videos, cfg.own_background_prob)
    notes = [f"data: {len(train)} train clips ({sum(len(c) for c in train)} frames), {len(valid)} held-out "
             f"validation clips: {', '.join(c.name for c in valid)}", note]
    return DataSources(train, valid, backgrounds, None, seg_video, seg_images, notes), found
