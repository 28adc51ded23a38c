"""PyTorch datasets for the four data streams of an RVM step, plus the validation clips.

Training datasets are indexed by *position* (see :mod:`training.sampler`), not by dataset index: the position picks
the sample through a per-epoch permutation and seeds all of its random draws. Matting samples are returned as
separate layers (``fgr``, ``pha``, ``bgr``); :func:`composite` makes the input frames on the training device.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from .augment import BACKGROUND, FOREGROUND, SEGMENTATION, augment_clip, center_square, fit_short_side
from .config import TrainConfig
from .errors import DataLayoutError
from .layouts import (BackgroundImageReader, BackgroundVideoReader, Clip, CocoPanopticReader, ImageMatteReader,
                      SuperviselyReader, VideoMatteReader, YouTubeVISReader, read_image)
from .sampler import position_to_index, sample_frame_indices, sample_rng

__all__ = ["composite", "MattingDataset", "SegmentationClipDataset", "SegmentationImageDataset", "ValidationClips",
           "DataSources", "open_data", "open_segmentation", "STREAMS"]

# Stream ids keep the random draws of the four loaders independent of each other.
STREAMS = {"matting_lr": 0, "matting_hr": 1, "seg_video": 2, "seg_image": 3}


def composite(fgr: Tensor, pha: Tensor, bgr: Tensor) -> Tensor:
    """Foreground over background: ``fgr * pha + bgr * (1 - pha)``."""
    return fgr * pha + bgr * (1.0 - pha)


def _clip_samples(clips: Sequence[Clip], seq_length: int) -> list[tuple[int, int]]:
    """One sample per ``seq_length`` frames of every clip, so an epoch covers each frame about once."""
    return [(c, start) for c, clip in enumerate(clips) for start in range(0, len(clip), seq_length)]


def _load_frames(paths: Sequence[Path], indices: Sequence[int], mode: str, size: int) -> Tensor:
    """Frames ``[T,C,H,W]`` at ``indices``, each file decoded once, larger frames shrunk to short side ``size``."""
    cache = {i: fit_short_side(read_image(paths[i], mode, min_side=size)[None], size, shrink_only=True)[0]
             for i in set(indices)}
    return torch.stack([cache[i] for i in indices])


class MattingDataset(Dataset):
    """Foreground clips (or images repeated T times) with alpha, and a background clip or image, both augmented."""

    def __init__(self, foreground: VideoMatteReader | ImageMatteReader, backgrounds: "Backgrounds", size: int,
                 seq_length: int, seed: int, stream: int) -> None:
        self.foreground, self.backgrounds = foreground, backgrounds
        self.size, self.seq_length, self.seed, self.stream = size, seq_length, seed, stream
        self.samples = _clip_samples(foreground.clips, seq_length)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        rng = sample_rng(self.seed, self.stream, position)
        clip_index, start = self.samples[position_to_index(self.seed, self.stream, position, len(self.samples))]
        clip = self.foreground.clips[clip_index]
        if len(clip) == 1:
            indices = [0] * self.seq_length  # image matting: motion comes from augmentation only
        else:
            indices = sample_frame_indices(rng, len(clip), self.seq_length, start)
        fgr = _load_frames(clip.frames, indices, "RGB", self.size)
        pha = _load_frames(clip.alphas, indices, "L", self.size)
        if pha.shape[-2:] != fgr.shape[-2:]:
            pha = F.interpolate(pha, size=fgr.shape[-2:], mode="bilinear", align_corners=False)
        layers = augment_clip(rng, FOREGROUND, torch.cat([fgr, pha], dim=1), self.size)
        bgr = self.backgrounds.sample(rng, self.size, self.seq_length)
        return {"fgr": layers[:, :3], "pha": layers[:, 3:], "bgr": bgr}


@dataclass
class Backgrounds:
    """Half still images (moved by augmentation), half clips through the frame sampler."""
    images: BackgroundImageReader | None
    videos: BackgroundVideoReader | None

    def sample(self, rng: np.random.Generator, size: int, seq_length: int) -> Tensor:
        use_video = self.videos is not None and (self.images is None or rng.random() < 0.5)
        if use_video:
            clip = self.videos.clips[int(rng.integers(len(self.videos.clips)))]
            frames = _load_frames(clip.frames, sample_frame_indices(rng, len(clip), seq_length), "RGB", size)
        else:
            path = self.images.images[int(rng.integers(len(self.images.images)))]
            frames = _load_frames([path], [0] * seq_length, "RGB", size)
        return augment_clip(rng, BACKGROUND, frames, size)


class SegmentationClipDataset(Dataset):
    """YouTubeVIS person clips through the frame sampler: ``img [T,3,S,S]``, ``seg [T,1,S,S]`` in {0, 1}."""

    def __init__(self, reader: YouTubeVISReader, size: int, seq_length: int, seed: int, stream: int) -> None:
        self.reader, self.size, self.seq_length, self.seed, self.stream = reader, size, seq_length, seed, stream
        self.samples = _clip_samples(reader.clips, seq_length)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        rng = sample_rng(self.seed, self.stream, position)
        clip, start = self.samples[position_to_index(self.seed, self.stream, position, len(self.samples))]
        indices = sample_frame_indices(rng, len(self.reader.clips[clip]), self.seq_length, start)
        cache = {i: torch.cat(self.reader.load(clip, i), dim=0) for i in set(indices)}
        frames = fit_short_side(torch.stack([cache[i] for i in indices]), self.size, shrink_only=True)
        return _split_segmentation(augment_clip(rng, SEGMENTATION, frames, self.size))


class SegmentationImageDataset(Dataset):
    """COCO panoptic and Supervisely person images as one-frame clips: ``img [1,3,S,S]``, ``seg [1,1,S,S]``."""

    def __init__(self, readers: Sequence[CocoPanopticReader | SuperviselyReader], size: int, seed: int,
                 stream: int) -> None:
        self.readers, self.size, self.seed, self.stream = list(readers), size, seed, stream
        self.items = [(r, i) for r, reader in enumerate(self.readers) for i in range(len(reader))]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict[str, Tensor]:
        rng = sample_rng(self.seed, self.stream, position)
        reader, index = self.items[position_to_index(self.seed, self.stream, position, len(self.items))]
        frame = fit_short_side(torch.cat(self.readers[reader].load(index), dim=0)[None], self.size, shrink_only=True)
        return _split_segmentation(augment_clip(rng, SEGMENTATION, frame, self.size))


def _split_segmentation(frames: Tensor) -> dict[str, Tensor]:
    return {"img": frames[:, :3], "seg": (frames[:, 3:] > 0.5).float()}


class ValidationClips(Dataset):
    """Deterministic validation: the first ``count`` clips of the valid split, first ``seq_length`` frames (images
    repeated), central square crops, over valid background image ``i % n``. Item ``i``: ``fgr, pha, bgr``."""

    def __init__(self, foreground: VideoMatteReader | ImageMatteReader, backgrounds: BackgroundImageReader,
                 size: int, seq_length: int, count: int) -> None:
        self.clips = foreground.clips[:count]
        self.backgrounds, self.size, self.seq_length = backgrounds.images, size, seq_length

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        clip = self.clips[index]
        indices = [min(i, len(clip) - 1) for i in range(self.seq_length)]
        fgr = center_square(_load_frames(clip.frames, indices, "RGB", self.size), self.size)
        pha = center_square(_load_frames(clip.alphas, indices, "L", self.size), self.size)
        path = self.backgrounds[index % len(self.backgrounds)]
        bgr = center_square(_load_frames([path], [0] * self.seq_length, "RGB", self.size), self.size)
        return {"fgr": fgr, "pha": pha, "bgr": bgr}


@dataclass
class DataSources:
    """Everything a configuration reads from ``--data``, checked up front."""
    matting_train: VideoMatteReader | ImageMatteReader
    matting_valid: VideoMatteReader | ImageMatteReader
    backgrounds: Backgrounds
    valid_backgrounds: BackgroundImageReader
    seg_video: YouTubeVISReader | None
    seg_images: list[CocoPanopticReader | SuperviselyReader]
    notes: list[str] = field(default_factory=list)  # lines the run prints before training (what was turned off)


def open_segmentation(root: Path, video_set: str, image_sets: Sequence[str]
                      ) -> tuple[YouTubeVISReader, list[CocoPanopticReader | SuperviselyReader]]:
    """YouTubeVIS clips and the COCO panoptic / Supervisely image sets under ``root``; raises DataLayoutError."""
    seg_video, seg_images = YouTubeVISReader(root / video_set, "train"), []
    for name in image_sets:
        if name.startswith("coco"):
            seg_images.append(CocoPanopticReader(root / name, "train"))
        elif name.startswith("supervisely"):
            seg_images.append(SuperviselyReader(root / name))
        else:
            raise DataLayoutError(f"seg_image_sets entry {name!r}: expected a name starting with "
                                  f"'coco' (COCO panoptic) or 'supervisely' (Supervisely Person)")
    return seg_video, seg_images


def open_data(cfg: TrainConfig, root: str | Path) -> DataSources:
    """Open and check every data set ``cfg`` needs under ``root``; raises :class:`DataLayoutError`."""
    root = Path(root)
    if not root.is_dir():
        raise DataLayoutError(f"data folder not found: {root}")
    matting = VideoMatteReader if cfg.matting_kind == "video" else ImageMatteReader
    images = BackgroundImageReader(root / cfg.background_images, "train") if cfg.background_images else None
    videos = BackgroundVideoReader(root / cfg.background_videos, "train") if cfg.background_videos else None
    if images is None and videos is None:
        raise DataLayoutError("no backgrounds configured (background_images and background_videos are both empty)")
    if not cfg.background_images:
        raise DataLayoutError("validation composites need background_images (its valid split)")
    seg_video, seg_images = None, []
    if cfg.segmentation:
        seg_video, seg_images = open_segmentation(root, cfg.seg_video_set, cfg.seg_image_sets)
    return DataSources(matting(root / cfg.matting_set, "train"), matting(root / cfg.matting_set, "valid"),
                       Backgrounds(images, videos), BackgroundImageReader(root / cfg.background_images, "valid"),
                       seg_video, seg_images)
