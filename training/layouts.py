"""Readers for the on-disk layouts of RVM's training data (docs/training.md lists them).

Each reader checks its layout when constructed and raises :class:`DataLayoutError` naming the path it expected;
loading returns float tensors in [0, 1]: colour ``[3,H,W]``, alpha/masks ``[1,H,W]``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .errors import DataLayoutError
from .rle import decode_rle

__all__ = ["IMAGE_EXTENSIONS", "list_images", "read_image", "Clip", "VideoMatteReader", "ImageMatteReader",
           "BackgroundImageReader", "BackgroundVideoReader", "CocoPanopticReader", "SuperviselyReader",
           "YouTubeVISReader", "COCO_PERSON_CATEGORIES"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
COCO_PERSON_CATEGORIES = ("person", "backpack", "tie")  # segments that together form the person mask


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataLayoutError(f"{what}: expected a folder at {path}")
    return path


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _require_images(folder: Path, what: str) -> list[Path]:
    images = list_images(_require_dir(folder, what))
    if not images:
        raise DataLayoutError(f"{what}: no .jpg/.jpeg/.png images in {folder}")
    return images


def read_image(path: Path, mode: str = "RGB", min_side: int | None = None) -> Tensor:
    """Read an image as ``[C,H,W]`` float in [0, 1]; ``min_side`` lets JPEG decoding skip detail below that size."""
    with Image.open(path) as image:
        if min_side is not None and image.format == "JPEG":
            w, h = image.size
            scale = min_side / min(w, h)
            if scale < 1.0:
                image.draft(mode, (int(np.ceil(w * scale)), int(np.ceil(h * scale))))
        array = np.asarray(image.convert(mode), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array)
    return tensor.permute(2, 0, 1).contiguous() if tensor.dim() == 3 else tensor[None]


def _paired(first: Sequence[Path], second_dir: Path, what: str) -> list[Path]:
    """For each image in ``first``, the image with the same stem in ``second_dir``."""
    by_stem = {p.stem: p for p in list_images(_require_dir(second_dir, what))}
    missing = [p.name for p in first if p.stem not in by_stem]
    if missing:
        raise DataLayoutError(f"{what}: {len(missing)} image(s) have no partner in {second_dir} "
                              f"(first: {missing[:3]})")
    return [by_stem[p.stem] for p in first]


@dataclass(frozen=True)
class Clip:
    name: str
    frames: tuple[Path, ...]  # colour frames, in order
    alphas: tuple[Path, ...] = ()  # matching alpha frames (matting clips only)

    def __len__(self) -> int:
        return len(self.frames)


class VideoMatteReader:
    """VideoMatte240K: ``<root>/<split>/fgr/<clip>/<frame>.jpg`` and ``<root>/<split>/pha/<clip>/<frame>.jpg``."""

    def __init__(self, root: Path, split: str) -> None:
        base = Path(root) / split
        fgr_root = _require_dir(base / "fgr", "VideoMatte240K foregrounds")
        pha_root = _require_dir(base / "pha", "VideoMatte240K alphas")
        clips = []
        for clip_dir in sorted(p for p in fgr_root.iterdir() if p.is_dir()):
            frames = _require_images(clip_dir, f"VideoMatte240K clip {clip_dir.name}")
            alphas = _paired(frames, pha_root / clip_dir.name, f"VideoMatte240K alpha clip {clip_dir.name}")
            clips.append(Clip(clip_dir.name, tuple(frames), tuple(alphas)))
        if not clips:
            raise DataLayoutError(f"VideoMatte240K: no clip folders in {fgr_root} (expected fgr/<clip>/<frame>.jpg)")
        self.clips = clips


class ImageMatteReader:
    """Image matting sets (Distinctions-646, AIM): ``<root>/<split>/fgr/<name>`` and ``<root>/<split>/pha/<name>``."""

    def __init__(self, root: Path, split: str) -> None:
        base = Path(root) / split
        frames = _require_images(base / "fgr", "image-matting foregrounds")
        alphas = _paired(frames, base / "pha", "image-matting alphas")
        self.clips = [Clip(f.stem, (f,), (a,)) for f, a in zip(frames, alphas)]


class BackgroundImageReader:
    """Background images: ``<root>/<split>/*.jpg|png``."""

    def __init__(self, root: Path, split: str) -> None:
        self.images = _require_images(Path(root) / split, "background images")


class BackgroundVideoReader:
    """Background clips: ``<root>/<split>/<clip>/<frame>.jpg``."""

    def __init__(self, root: Path, split: str) -> None:
        base = _require_dir(Path(root) / split, "background videos")
        self.clips = [Clip(d.name, tuple(_require_images(d, f"background clip {d.name}")))
                      for d in sorted(p for p in base.iterdir() if p.is_dir())]
        if not self.clips:
            raise DataLayoutError(f"background videos: no clip folders in {base} (expected <clip>/<frame>.jpg)")


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise DataLayoutError(f"{what}: expected a JSON file at {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataLayoutError(f"{what}: {path} is not valid JSON ({exc})") from exc


def _category_ids(data: dict, names: Sequence[str], path: Path) -> set[int]:
    try:
        ids = {int(c["id"]) for c in data["categories"] if c["name"] in names}
    except (KeyError, TypeError, ValueError) as exc:
        raise DataLayoutError(f"{path}: 'categories' must be a list of {{id, name}} ({exc})") from exc
    if not ids:
        raise DataLayoutError(f"{path}: no category named {' / '.join(names)}")
    return ids


class CocoPanopticReader:
    """COCO panoptic: ``<root>/<split>2017/<image>.jpg``, ``<root>/annotations/panoptic_<split>2017.json`` and
    ``<root>/annotations/panoptic_<split>2017/<image>.png`` (segment id = R + 256 G + 256^2 B). The mask is the
    union of the person, backpack and tie segments; only images with a person segment are used."""

    def __init__(self, root: Path, split: str = "train") -> None:
        root = Path(root)
        json_path = root / "annotations" / f"panoptic_{split}2017.json"
        data = _read_json(json_path, "COCO panoptic")
        person = _category_ids(data, ("person",), json_path)
        wanted = _category_ids(data, COCO_PERSON_CATEGORIES, json_path)
        image_dir = _require_dir(root / f"{split}2017", "COCO images")
        png_dir = _require_dir(root / "annotations" / f"panoptic_{split}2017", "COCO panoptic PNGs")
        try:
            images = {int(img["id"]): img["file_name"] for img in data["images"]}
            self.items = []
            for ann in data["annotations"]:
                segments = ann["segments_info"]
                if not any(int(s["category_id"]) in person for s in segments):
                    continue
                ids = tuple(int(s["id"]) for s in segments if int(s["category_id"]) in wanted)
                self.items.append((image_dir / images[int(ann["image_id"])], png_dir / ann["file_name"], ids))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataLayoutError(f"{json_path}: unexpected panoptic annotation structure ({exc!r})") from exc
        if not self.items:
            raise DataLayoutError(f"{json_path}: no annotation holds a person segment")
        for image, png, _ in self.items[:1]:
            for path in (image, png):
                if not path.is_file():
                    raise DataLayoutError(f"COCO panoptic: {path} listed in {json_path} does not exist")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        image_path, png_path, ids = self.items[index]
        with Image.open(png_path) as png:
            rgb = np.asarray(png.convert("RGB"), dtype=np.int64)
        segment = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        mask = torch.from_numpy(np.isin(segment, ids).astype(np.float32))[None]
        return read_image(image_path), mask


class SuperviselyReader:
    """Supervisely Person: ``<root>/img/<name>`` and ``<root>/seg/<name>`` (mask, person > 0)."""

    def __init__(self, root: Path) -> None:
        root = Path(root)
        self.images = _require_images(root / "img", "Supervisely images")
        self.masks = _paired(self.images, root / "seg", "Supervisely masks")

    def __len__(self) -> int:
        return len(self.images)

    def load(self, index: int) -> tuple[Tensor, Tensor]:
        mask = read_image(self.masks[index], "L")
        threshold = 0.5 if mask.max() > 1.5 / 255 else 0.0  # 0/255 masks (or JPEG-compressed ones) vs 0/1 masks
        return read_image(self.images[index]), (mask > threshold).float()


class YouTubeVISReader:
    """YouTubeVIS 2021: ``<root>/<split>/JPEGImages/<video>/<frame>.jpg`` and ``<root>/<split>/instances.json``
    (videos with ``file_names``; annotations with per-frame RLE ``segmentations``, ``null`` where absent).
    The mask of a frame is the union of its person instances; only videos with a person are used."""

    def __init__(self, root: Path, split: str = "train") -> None:
        base = Path(root) / split
        json_path = base / "instances.json"
        data = _read_json(json_path, "YouTubeVIS")
        person = _category_ids(data, ("person",), json_path)
        image_dir = _require_dir(base / "JPEGImages", "YouTubeVIS frames")
        try:
            videos = {int(v["id"]): v for v in data["videos"]}
            instances: dict[int, list[list]] = {}
            for ann in data["annotations"]:
                if int(ann["category_id"]) in person:
                    instances.setdefault(int(ann["video_id"]), []).append(list(ann["segmentations"]))
            self.clips, self.segmentations = [], []
            for video_id in sorted(instances):
                video = videos[video_id]
                frames = tuple(image_dir / name for name in video["file_names"])
                if any(len(segs) != len(frames) for segs in instances[video_id]):
                    raise DataLayoutError(f"{json_path}: video {video_id} has {len(frames)} frames but an "
                                          f"instance with a different number of segmentations")
                self.clips.append(Clip(str(video_id), frames))
                self.segmentations.append(instances[video_id])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataLayoutError(f"{json_path}: unexpected YouTubeVIS structure ({exc!r})") from exc
        if not self.clips:
            raise DataLayoutError(f"{json_path}: no video has a person instance")
        if not self.clips[0].frames[0].is_file():
            raise DataLayoutError(f"YouTubeVIS: {self.clips[0].frames[0]} listed in {json_path} does not exist")

    def load(self, clip: int, frame: int) -> tuple[Tensor, Tensor]:
        path = self.clips[clip].frames[frame]
        image = read_image(path)
        mask = np.zeros(image.shape[-2:], dtype=bool)
        for instance in self.segmentations[clip]:
            rle = instance[frame]
            if rle is not None:
                decoded = decode_rle(rle)
                if decoded.shape != mask.shape:
                    raise DataLayoutError(f"YouTubeVIS: mask size {decoded.shape} does not match {path} "
                                          f"{tuple(mask.shape)}")
                mask |= decoded
        return image, torch.from_numpy(mask.astype(np.float32))[None]
