"""The user's own matting clips, the layout of the ``finetune`` preset, checked in full before any training.

    DATA/clips/<clip>/frames/<stem>.png|jpg   the footage as shot, one image per frame (sorted by file name)
    DATA/clips/<clip>/alpha/<stem>.png|jpg    its alpha matte: same stems and sizes (gray; RGBA/LA: the A channel)
  or
    DATA/clips/<clip>/video.<ext>             the footage as one video (.mp4 .mov .mkv .avi .webm .m4v)
    DATA/clips/<clip>/alpha.<ext>             its alpha matte as a video: same frame count and size
    DATA/backgrounds/*.jpg|png|<video>        optional: images and videos to composite the clips onto
    DATA/youtubevis, coco, supervisely        optional: segmentation sets in the paper's layouts (docs/training.md)

:func:`scan_clip_set` reads every frame's header and decodes every video once, and collects *every* problem as one
line naming the offending file (not only the first); :func:`split_clips` holds out validation clips by a hash of
their names. Frames come back as float tensors in [0, 1]: colour ``[T,3,H,W]``, alpha ``[T,1,H,W]``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.nn import functional as F

from .augment import fit_short_side
from .layouts import IMAGE_EXTENSIONS, list_images, read_image
from .video import VIDEO_EXTENSIONS, VideoError, probe_video, read_video_frames

__all__ = ["FrameClip", "VideoClip", "ClipSet", "scan_clip_set", "split_clips", "describe_clip_set", "read_alpha",
           "MAX_NAMED"]

MAX_NAMED = 3  # files named per problem line; the rest are counted


def read_alpha(path: Path) -> Tensor:
    """An alpha matte image as ``[1,H,W]`` float in [0, 1]: the A channel of RGBA/LA images, else the luma."""
    with Image.open(path) as image:
        matte = image.getchannel("A") if image.mode in ("RGBA", "LA") else image.convert("L")
        return torch.from_numpy(np.asarray(matte, dtype=np.float32) / 255.0)[None]


@dataclass(frozen=True)
class FrameClip:
    """A clip stored as two folders of images paired by file stem."""
    name: str
    frames: tuple[Path, ...]
    alphas: tuple[Path, ...]
    height: int  # px
    width: int  # px
    kind: str = "frames"

    def __len__(self) -> int:
        return len(self.frames)

    def read(self, indices: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        """Frames ``[T,3,H,W]`` and alphas ``[T,1,H,W]`` at ``indices``, shrunk to short side ``size`` if larger."""
        unique = sorted(set(indices))
        rgb = [fit_short_side(read_image(self.frames[i], "RGB", size)[None], size, True)[0] for i in unique]
        pha = [fit_short_side(read_alpha(self.alphas[i])[None], size, True)[0] for i in unique]
        pha = [p if p.shape[-2:] == c.shape[-2:] else  # a JPEG frame decoded at reduced size beside a PNG alpha
               F.interpolate(p[None], size=c.shape[-2:], mode="bilinear", align_corners=False)[0]
               for p, c in zip(pha, rgb)]
        where = {i: k for k, i in enumerate(unique)}
        return torch.stack([rgb[where[i]] for i in indices]), torch.stack([pha[where[i]] for i in indices])


@dataclass(frozen=True)
class VideoClip:
    """A clip stored as a video and an alpha video with the same frame count and size."""
    name: str
    video: Path
    alpha: Path
    length: int  # frames
    height: int  # px
    width: int  # px
    kind: str = "video"

    def __len__(self) -> int:
        return self.length

    def read(self, indices: Sequence[int], size: int) -> tuple[Tensor, Tensor]:
        """Frames ``[T,3,H,W]`` and alphas ``[T,1,H,W]`` at ``indices``, shrunk to short side ``size`` if larger."""
        rgb = torch.from_numpy(read_video_frames(self.video, indices)).permute(0, 3, 1, 2)
        pha = torch.from_numpy(read_video_frames(self.alpha, indices, gray=True))[:, None]
        layers = fit_short_side(torch.cat([rgb, pha], dim=1).float() / 255.0, size, shrink_only=True)
        return layers[:, :3], layers[:, 3:]


@dataclass
class ClipSet:
    """What :func:`scan_clip_set` found under ``root``; usable for training only if ``problems`` is empty."""
    root: Path
    clips: list[FrameClip | VideoClip] = field(default_factory=list)
    background_images: list[Path] = field(default_factory=list)
    background_videos: list[VideoClip] = field(default_factory=list)  # alpha unused: the video itself
    problems: list[str] = field(default_factory=list)


def _named(paths: Sequence[Path]) -> str:
    names = ", ".join(str(p) for p in paths[:MAX_NAMED])
    return names + (f" (and {len(paths) - MAX_NAMED} more)" if len(paths) > MAX_NAMED else "")


def _image_size(path: Path) -> tuple[int, int] | str:
    """(H, W) from the image header, or the reason it cannot be read."""
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, ValueError) as exc:
        return f"{path}: not a readable image ({exc})"


def _scan_frames(name: str, folder: Path, problems: list[str]) -> FrameClip | None:
    frame_dir, alpha_dir = folder / "frames", folder / "alpha"
    frames = list_images(frame_dir)
    alphas = {p.stem: p for p in list_images(alpha_dir)} if alpha_dir.is_dir() else {}
    before = len(problems)
    if not frames:
        problems.append(f"{frame_dir}: empty folder (no {'/'.join(IMAGE_EXTENSIONS)} frames)")
    elif not alpha_dir.is_dir():
        problems.append(f"{folder}: frames/ without alpha/ (expected {alpha_dir}/<stem>.png, one per frame)")
    elif not alphas:
        problems.append(f"{alpha_dir}: empty folder (no {'/'.join(IMAGE_EXTENSIONS)} alpha mattes)")
    else:
        stems = [p.stem for p in frames]
        alpha_stems = [p.stem for p in list_images(alpha_dir)]
        for listed, stem_list in ((frames, stems), (list_images(alpha_dir), alpha_stems)):
            twins = [p for p in listed if stem_list.count(p.stem) > 1]
            if twins:
                problems.append(f"{_named(twins)}: files share a stem (e.g. 0001.png and 0001.jpg); keep one")
        missing = [p for p in frames if p.stem not in alphas]
        if missing:
            problems.append(f"missing alpha for frame {_named(missing)}: expected {alpha_dir}/<same stem>.png|jpg")
        extra = sorted(p for s, p in alphas.items() if s not in set(stems))
        if extra:
            problems.append(f"alpha {_named(extra)} has no frame of the same stem in {frame_dir}")
    if len(problems) > before:
        return None
    pairs = [(f, alphas[f.stem]) for f in frames]
    sizes: dict[Path, tuple[int, int]] = {}
    unreadable = []
    for path in [p for pair in pairs for p in pair]:
        size = _image_size(path)
        if isinstance(size, str):
            unreadable.append(size)
        else:
            sizes[path] = size
    problems += unreadable[:MAX_NAMED]
    if len(unreadable) > MAX_NAMED:
        problems.append(f"{folder}: {len(unreadable) - MAX_NAMED} more unreadable images")
    if len(problems) > before:
        return None
    mismatched = [(f, a) for f, a in pairs if sizes[f] != sizes[a]]
    for frame, alpha in mismatched[:MAX_NAMED]:
        problems.append(f"size mismatch: {alpha} is {_wxh(sizes[alpha])} but its frame {frame} is {_wxh(sizes[frame])}")
    if len(mismatched) > MAX_NAMED:
        problems.append(f"size mismatch: {len(mismatched) - MAX_NAMED} more alpha mattes in {alpha_dir}")
    odd = [f for f, _ in pairs if sizes[f] != sizes[pairs[0][0]]]
    if odd:
        problems.append(f"{_named(odd)}: frame size differs from the clip's first frame {pairs[0][0]} "
                        f"({_wxh(sizes[pairs[0][0]])}); a clip has one size")
    if len(problems) > before:
        return None
    height, width = sizes[pairs[0][0]]
    return FrameClip(name, tuple(f for f, _ in pairs), tuple(a for _, a in pairs), height, width)


def _wxh(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


def _one(folder: Path, stem: str) -> list[Path]:
    """The video files named ``<stem>.<video extension>`` in ``folder``."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.stem == stem and p.suffix.lower() in VIDEO_EXTENSIONS)


def _scan_video(name: str, folder: Path, problems: list[str]) -> VideoClip | None:
    videos, alphas = _one(folder, "video"), _one(folder, "alpha")
    if len(videos) > 1 or len(alphas) > 1:
        problems.append(f"{_named(videos + alphas)}: one video.<ext> and one alpha.<ext> per clip folder")
        return None
    if not alphas:
        problems.append(f"{videos[0]} has no alpha video (expected {folder}/alpha.<ext>, same frame count)")
        return None
    if not videos:
        problems.append(f"{alphas[0]} has no video (expected {folder}/video.<ext>, same frame count)")
        return None
    infos = []
    for path in (videos[0], alphas[0]):
        try:
            infos.append(probe_video(path))
        except VideoError as exc:
            problems.append(str(exc))
    if len(infos) < 2:
        return None
    video, alpha = infos
    before = len(problems)
    if video.frames == 0:
        problems.append(f"{video.path}: no frames")
    elif alpha.frames != video.frames:
        problems.append(f"frame count mismatch: {alpha.path} has {alpha.frames} frames but {video.path} has "
                        f"{video.frames}")
    if (alpha.height, alpha.width) != (video.height, video.width):
        problems.append(f"size mismatch: {alpha.path} is {alpha.width}x{alpha.height} but {video.path} is "
                        f"{video.width}x{video.height}")
    if len(problems) > before:
        return None
    return VideoClip(name, video.path, alpha.path, video.frames, video.height, video.width)


def _scan_clip(folder: Path, problems: list[str]) -> FrameClip | VideoClip | None:
    entries = sorted(folder.iterdir())
    has_frames = (folder / "frames").is_dir()
    has_video = bool(_one(folder, "video") or _one(folder, "alpha"))
    if not entries:
        problems.append(f"{folder}: empty folder (expected frames/ + alpha/, or video.<ext> + alpha.<ext>)")
    elif has_frames and has_video:
        problems.append(f"{folder}: holds both frames/ and a video; keep one form per clip")
    elif has_frames:
        return _scan_frames(folder.name, folder, problems)
    elif has_video:
        return _scan_video(folder.name, folder, problems)
    else:
        found = ", ".join(p.name + ("/" if p.is_dir() else "") for p in entries[:5])
        problems.append(f"{folder}: expected frames/ + alpha/ folders, or video.<ext> + alpha.<ext> files "
                        f"(found {found})")
    return None


def _scan_backgrounds(folder: Path, found: ClipSet) -> None:
    files = sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
    if not images and not videos:
        found.problems.append(f"{folder}: empty folder (no background images or videos; remove it to train on "
                              f"the clips' own backgrounds)")
    for path in images:
        size = _image_size(path)
        if isinstance(size, str):
            found.problems.append(size)
        else:
            found.background_images.append(path)
    for path in videos:
        try:
            info = probe_video(path)
        except VideoError as exc:
            found.problems.append(str(exc))
            continue
        if info.frames == 0:
            found.problems.append(f"{path}: no frames")
        else:
            found.background_videos.append(VideoClip(path.stem, path, path, info.frames, info.height, info.width))


def scan_clip_set(root: str | Path, clips_folder: str = "clips", backgrounds_folder: str = "backgrounds",
                  min_clips: int = 2) -> ClipSet:
    """Check the clip layout under ``root`` (module docstring) and list what it holds.

    Never raises for a layout problem: every problem becomes one line of ``ClipSet.problems`` naming the file
    (missing alpha for a frame, frame/alpha size mismatch, empty folder, video/alpha frame-count mismatch,
    unreadable image or video, PyAV missing for a video). ``min_clips``: fewer clips is a problem too.
    """
    root = Path(root)
    found = ClipSet(root)
    if not root.is_dir():
        found.problems.append(f"data folder not found: {root}")
        return found
    clips_dir = root / clips_folder
    folders = sorted(p for p in clips_dir.iterdir() if p.is_dir()) if clips_dir.is_dir() else []
    if not clips_dir.is_dir():
        found.problems.append(f"{clips_dir}: folder not found (expected {clips_folder}/<clip>/frames + alpha, or "
                              f"{clips_folder}/<clip>/video.<ext> + alpha.<ext>)")
    elif not folders:
        found.problems.append(f"{clips_dir}: empty folder (no clip folders)")
    for folder in folders:
        clip = _scan_clip(folder, found.problems)
        if clip is not None:
            found.clips.append(clip)
    if folders and len(folders) < min_clips:
        found.problems.append(f"{clips_dir}: {len(folders)} clip(s); at least {min_clips} are needed (validation "
                              f"holds out whole clips)")
    if backgrounds_folder and (root / backgrounds_folder).exists():
        _scan_backgrounds(root / backgrounds_folder, found)
    return found


def _rank(name: str) -> str:
    return hashlib.sha256(name.encode("utf-8")).hexdigest()


def split_clips(clips: Sequence[FrameClip | VideoClip], valid_fraction: float) -> tuple[list, list]:
    """Deterministic split into (train, valid): ``max(1, round(fraction * n))`` clips held out, at most ``n - 1``.

    The held-out clips are those whose names have the smallest SHA-256 digests: the split depends only on the
    names (not on the machine or the listing order), and adding a clip changes it by at most that clip's place.
    Both lists keep name order. Needs at least 2 clips (ValueError otherwise).
    """
    if len(clips) < 2:
        raise ValueError(f"split_clips needs at least 2 clips, got {len(clips)}")
    count = min(max(1, round(valid_fraction * len(clips))), len(clips) - 1)
    held = {c.name for c in sorted(clips, key=lambda c: _rank(c.name))[:count]}
    return [c for c in clips if c.name not in held], [c for c in clips if c.name in held]


def describe_clip_set(found: ClipSet, valid_fraction: float) -> list[str]:
    """The lines ``rvm-train --check-data`` prints for a usable set: one per clip, then totals and backgrounds."""
    train, valid = split_clips(found.clips, valid_fraction)
    held = {c.name for c in valid}
    width = max(len(c.name) for c in found.clips)
    lines = [f"{found.root}: {len(found.clips)} clips ({len(train)} train, {len(valid)} valid), "
             f"{sum(len(c) for c in found.clips)} frames",
             f"  {'clip':<{width}}  {'kind':<6}  {'frames':>6}  {'size':>9}  split"]
    for clip in found.clips:
        lines.append(f"  {clip.name:<{width}}  {clip.kind:<6}  {len(clip):>6}  "
                     f"{_wxh((clip.height, clip.width)):>9}  {'valid' if clip.name in held else 'train'}")
    sizes = sorted({(c.height, c.width) for c in found.clips})
    lines.append(f"sizes: {', '.join(_wxh(s) for s in sizes)}; frame/alpha mismatches: none")
    if found.background_images or found.background_videos:
        lines.append(f"backgrounds: {len(found.background_images)} image(s), {len(found.background_videos)} "
                     f"video(s)")
    else:
        lines.append("backgrounds: none (training uses the clips' own backgrounds, the frames as shot)")
    return lines

