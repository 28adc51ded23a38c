"""A synthetic video-matting data set in the real data sets' on-disk layouts (docs/training.md).

Foregrounds are person-like figures (torso, head, a translucent veil and dozens of thin hair strands rendered at 4x
and box-filtered, so alpha has soft edges and sub-pixel structures) that drift and sway over time, in smooth colours.
Backgrounds are moving gratings and stripes. The same figures, composited, give the segmentation sets (COCO
panoptic, Supervisely Person, YouTubeVIS with RLE masks). Everything is a pure function of the seed.
:func:`make_clip_set` writes the user's layout of the ``finetune`` preset instead (training/clips.py): the same
figures filmed in front of a room (wall, shelves, desk) as JPEG frames + PNG alphas, or a video + an alpha video.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .rle import encode_rle, mask_to_runs

__all__ = ["SyntheticSpec", "SPECS", "make_synthetic", "Figure", "Texture", "Room", "ClipSetSpec", "CLIP_SPECS",
           "make_clip_set"]

SUPERSAMPLE = 4
COCO_CATEGORIES = [{"id": 1, "name": "person", "isthing": 1}, {"id": 27, "name": "backpack", "isthing": 1},
                   {"id": 32, "name": "tie", "isthing": 1}, {"id": 199, "name": "wall-other-merged", "isthing": 0}]


@dataclass(frozen=True)
class SyntheticSpec:
    size: tuple[int, int] = (72, 96)  # H, W of SD matting frames and segmentation images
    frames: int = 12  # frames per clip (matting, backgrounds, YouTubeVIS)
    matting_clips: tuple[int, int] = (24, 8)  # VideoMatte-style clips (train, valid)
    hd_clips: tuple[int, int] = (4, 2)  # the same at hd_scale x size, for stage-3-like configs
    hd_scale: int = 2  # HD frames are this many times larger
    image_mattes: tuple[int, int] = (8, 4)  # image-matting pairs at hd_scale x size (train, valid)
    background_images: tuple[int, int] = (24, 8)  # (train, valid)
    background_videos: tuple[int, int] = (12, 2)  # (train, valid)
    coco_images: int = 24  # COCO panoptic images (plus one without a person, which readers must skip)
    supervisely_images: int = 24  # Supervisely Person images
    youtubevis_videos: int = 12  # YouTubeVIS clips (plus a non-person instance in each)


SPECS = {
    "small": SyntheticSpec(),  # the smoke preset's set: about 15 s to write, ~8 MB
    "tiny": SyntheticSpec(size=(48, 64), frames=6, matting_clips=(4, 2), hd_clips=(2, 1), image_mattes=(2, 2),
                          background_images=(4, 2), background_videos=(2, 1), coco_images=3, supervisely_images=3,
                          youtubevis_videos=2),  # tests
}


def _smooth_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.15, 0.95, size=3)


class Figure:
    """A person-like figure: its drift, sway and colours are drawn once; ``render(t)`` draws frame ``t``."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.center = rng.uniform([0.35, 0.35], [0.65, 0.5])  # head centre, fractions of (W, H)
        self.drift = rng.uniform(0.03, 0.12, size=2) * rng.choice([-1, 1], size=2)
        self.speed = rng.uniform(0.15, 0.5, size=2)
        self.phase = rng.uniform(0, 2 * math.pi, size=2)
        self.head = rng.uniform(0.11, 0.17)  # radius, fraction of the short side
        self.torso = rng.uniform([0.28, 0.45], [0.42, 0.6])  # half-width, half-height (fraction of the short side)
        self.veil = rng.random() < 0.6
        self.veil_offset = rng.uniform(-1.2, 1.2)
        strands = int(rng.integers(25, 60))
        self.strand_angle = rng.uniform(-math.pi * 0.95, -math.pi * 0.05, size=strands)
        self.strand_length = rng.uniform(0.5, 1.6, size=strands)  # in head radii
        self.strand_curl = rng.normal(0, 0.5, size=strands)
        self.strand_phase = rng.uniform(0, 2 * math.pi, size=strands)
        self.strand_width = rng.choice([1, 1, 1, 2], size=strands)  # in supersampled pixels
        self.sway = rng.uniform(0.1, 0.4)
        self.colours = {name: _smooth_colour(rng) for name in ("torso_a", "torso_b", "skin", "hair", "veil")}
        self.shading = rng.uniform(0.3, 1.0, size=2) * rng.choice([-1, 1], size=2)

    def render(self, t: float, height: int, width: int, scale_colour: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """``fgr [H,W,3]`` (colour everywhere) and ``alpha [H,W]``, float32 in [0, 1]."""
        k = SUPERSAMPLE
        short = min(height, width) * k
        cx = (self.center[0] + self.drift[0] * math.sin(self.speed[0] * t + self.phase[0])) * width * k
        cy = (self.center[1] + self.drift[1] * math.sin(self.speed[1] * t + self.phase[1])) * height * k
        head = self.head * short
        layers = {name: Image.new("L", (width * k, height * k)) for name in ("body", "head", "hair", "veil")}
        draw = {name: ImageDraw.Draw(image) for name, image in layers.items()}
        tw, th = self.torso * short
        torso_top = cy + head * 1.3
        draw["body"].ellipse([cx - tw, torso_top, cx + tw, torso_top + 2 * th], fill=255)
        draw["body"].rectangle([cx - head * 0.35, cy, cx + head * 0.35, torso_top + th * 0.2], fill=255)
        draw["head"].ellipse([cx - head, cy - head * 1.1, cx + head, cy + head * 1.1], fill=255)
        if self.veil:
            vx = cx + self.veil_offset * head
            draw["veil"].ellipse([vx - head * 1.6, torso_top - head * 0.3, vx + head * 1.6, torso_top + head * 1.8],
                                 fill=255)
        for i in range(len(self.strand_angle)):
            angle = self.strand_angle[i] + self.sway * math.sin(0.6 * t + self.strand_phase[i])
            x, y = cx + head * math.cos(angle) * 0.9, cy + head * 1.1 * math.sin(angle) * 0.9
            points = [(x, y)]
            step = self.strand_length[i] * head / 8
            for _ in range(8):
                angle += self.strand_curl[i] * 0.15
                x, y = x + step * math.cos(angle), y + step * math.sin(angle)
                points.append((x, y))
            draw["hair"].line(points, fill=255, width=int(self.strand_width[i]))
        soft = {name: np.asarray(image.resize((width, height), Image.BOX), dtype=np.float32) / 255.0
                for name, image in layers.items()}
        body = np.maximum(soft["body"], soft["head"])
        alpha = np.maximum.reduce([body, soft["hair"], 0.45 * soft["veil"]])
        fgr = self._colour_field(height, width)
        for name, key in (("veil", "veil"), ("head", "skin"), ("hair", "hair")):
            weight = soft[name][..., None]
            fgr = fgr * (1 - weight) + self.colours[key] * weight
        return fgr.astype(np.float32), alpha.astype(np.float32)

    def _colour_field(self, height: int, width: int) -> np.ndarray:
        y = np.linspace(0, 1, height)[:, None, None]
        x = np.linspace(0, 1, width)[None, :, None]
        mix = np.clip(0.5 + 0.5 * (self.shading[0] * (y - 0.5) + self.shading[1] * (x - 0.5)), 0, 1)
        return self.colours["torso_a"] * (1 - mix) + self.colours["torso_b"] * mix


class Texture:
    """A moving background of oriented gratings (some hard-edged stripes); ``render(t)`` draws frame ``t``."""

    def __init__(self, rng: np.random.Generator) -> None:
        count = int(rng.integers(3, 6))
        self.freq = rng.uniform(3, 14, size=(count, 1)) * _unit_vectors(rng, count)  # cycles per frame height
        self.phase = rng.uniform(0, 2 * math.pi, size=count)
        self.hard = rng.random(count) < 0.4
        self.colours = rng.uniform(-0.35, 0.35, size=(count, 3))
        self.base = rng.uniform(0.25, 0.75, size=3)
        self.velocity = rng.uniform(-0.03, 0.03, size=2)  # frame heights per frame

    def render(self, t: float, height: int, width: int) -> np.ndarray:
        y = (np.arange(height)[:, None] + 0.5) / height + self.velocity[1] * t
        x = (np.arange(width)[None, :] + 0.5) / height + self.velocity[0] * t
        image = np.broadcast_to(self.base, (height, width, 3)).copy()
        for (fx, fy), phase, hard, colour in zip(self.freq, self.phase, self.hard, self.colours):
            wave = np.sin(2 * math.pi * (fx * x + fy * y) + phase)
            if hard:
                wave = np.sign(wave)
            image += wave[..., None] * colour / len(self.phase) * 2
        return np.clip(image, 0, 1).astype(np.float32)


def _unit_vectors(rng: np.random.Generator, count: int) -> np.ndarray:
    angle = rng.uniform(0, math.pi, size=count)
    return np.stack([np.cos(angle), np.sin(angle)], axis=1)


def _save(array: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
    kwargs = {"quality": 95} if path.suffix == ".jpg" else {}
    Image.fromarray(data).save(path, **kwargs)


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed, *keys])


def _matting_clips(root: Path, seed: int, key: int, counts: tuple[int, int], frames: int, size: tuple[int, int],
                   still: bool = False) -> None:
    for split, count in zip(("train", "valid"), counts):
        for c in range(count):
            figure = Figure(_rng(seed, key, int(split == "valid"), c))
            for f in range(1 if still else frames):
                fgr, alpha = figure.render(float(f), *size)
                name = f"{c:04d}.png" if still else f"{c:04d}/{f:04d}.jpg"
                _save(fgr, root / split / "fgr" / name)
                _save(alpha, root / split / "pha" / name)


def make_synthetic(root: str | Path, seed: int = 0, spec: SyntheticSpec | str = "small") -> dict[str, int]:
    """Write the synthetic set under ``root``; return the number of files written per data set.

    ``spec`` names in :data:`CLIP_SPECS` write the finetune preset's clip layout instead (:func:`make_clip_set`).
    """
    if isinstance(spec, str) and spec in CLIP_SPECS:
        return make_clip_set(root, seed, spec)
    spec = SPECS[spec] if isinstance(spec, str) else spec
    root = Path(root)
    h, w = spec.size
    hd = (h * spec.hd_scale, w * spec.hd_scale)
    _matting_clips(root / "videomatte_sd", seed, 1, spec.matting_clips, spec.frames, spec.size)
    _matting_clips(root / "videomatte_hd", seed, 2, spec.hd_clips, spec.frames, hd)
    _matting_clips(root / "imagematte", seed, 3, spec.image_mattes, 1, hd, still=True)
    for split, count in zip(("train", "valid"), spec.background_images):
        for i in range(count):
            texture = Texture(_rng(seed, 4, int(split == "valid"), i))
            _save(texture.render(0.0, h * 2, w * 2), root / "backgrounds/images" / split / f"{i:04d}.jpg")
    for split, count in zip(("train", "valid"), spec.background_videos):
        for i in range(count):
            texture = Texture(_rng(seed, 5, int(split == "valid"), i))
            for f in range(spec.frames):
                _save(texture.render(float(f), h, w), root / "backgrounds/videos" / split / f"{i:04d}/{f:04d}.jpg")
    _coco(root / "coco", seed, spec)
    _supervisely(root / "supervisely", seed, spec)
    _youtubevis(root / "youtubevis", seed, spec)
    return {name: sum(1 for p in (root / name).rglob("*") if p.is_file())
            for name in ("videomatte_sd", "videomatte_hd", "imagematte", "backgrounds", "coco", "supervisely",
                         "youtubevis")}


def _person_image(rng: np.random.Generator, t: float, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    figure, texture = Figure(rng), Texture(rng)
    fgr, alpha = figure.render(t, *size)
    image = fgr * alpha[..., None] + texture.render(t, *size) * (1 - alpha[..., None])
    return image, alpha


def _coco(root: Path, seed: int, spec: SyntheticSpec) -> None:
    h, w = spec.size
    data = {"images": [], "annotations": [], "categories": COCO_CATEGORIES}
    for i in range(spec.coco_images + 1):
        rng = _rng(seed, 6, i)
        if i == spec.coco_images:  # no person: only a background segment
            image, person = Texture(rng).render(0.0, h, w), np.zeros((h, w), dtype=bool)
        else:
            image, alpha = _person_image(rng, 0.0, spec.size)
            person = alpha > 0.5
        segments = np.full((h, w), 1, dtype=np.int64)  # segment 1: wall (stuff)
        info = [{"id": 1, "category_id": 199, "iscrowd": 0}]
        if person.any():
            segments[person] = 2
            info.append({"id": 2, "category_id": 1, "iscrowd": 0})
            ys, xs = np.nonzero(person)
            top, left = int(ys.mean()), int(xs.mean())  # a backpack on the torso: part of the person mask
            segments[top:top + h // 8, left:left + w // 8] = 3
            image[top:top + h // 8, left:left + w // 8] = rng.uniform(0, 1, size=3)
            info.append({"id": 3, "category_id": 27, "iscrowd": 0})
        png = np.stack([segments % 256, segments // 256 % 256, segments // 65536], axis=-1).astype(np.uint8)
        name = f"{i:012d}"
        _save(image, root / "train2017" / f"{name}.jpg")
        (root / "annotations" / "panoptic_train2017").mkdir(parents=True, exist_ok=True)
        Image.fromarray(png).save(root / "annotations" / "panoptic_train2017" / f"{name}.png")
        data["images"].append({"id": i, "file_name": f"{name}.jpg", "height": h, "width": w})
        data["annotations"].append({"image_id": i, "file_name": f"{name}.png", "segments_info": info})
    (root / "annotations" / "panoptic_train2017.json").write_text(json.dumps(data))


def _supervisely(root: Path, seed: int, spec: SyntheticSpec) -> None:
    for i in range(spec.supervisely_images):
        image, alpha = _person_image(_rng(seed, 7, i), 0.0, spec.size)
        _save(image, root / "img" / f"{i:04d}.png")
        _save((alpha > 0.5).astype(np.float32), root / "seg" / f"{i:04d}.png")


def _youtubevis(root: Path, seed: int, spec: SyntheticSpec) -> None:
    h, w = spec.size
    data = {"videos": [], "annotations": [], "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "panda"}]}
    for v in range(spec.youtubevis_videos):
        rng = _rng(seed, 8, v)
        figure, texture = Figure(rng), Texture(rng)
        absent = 2 if v == 0 else 0  # the person walks in after two frames: null segmentations
        box = rng.uniform(0.05, 0.3, size=2)
        people, pandas, names = [], [], []
        for f in range(spec.frames):
            image = texture.render(float(f), h, w)
            person = np.zeros((h, w), dtype=bool)
            if f >= absent:
                fgr, alpha = figure.render(float(f), h, w)
                image = fgr * alpha[..., None] + image * (1 - alpha[..., None])
                person = alpha > 0.5
            top, left = int((box[0] + 0.02 * f) * h), int(box[1] * w)  # a non-person instance, never in the mask
            panda = np.zeros((h, w), dtype=bool)
            panda[top:top + h // 6, left:left + w // 6] = True
            panda &= ~person
            image[panda] = 0.9
            names.append(f"{v:04d}/{f:05d}.jpg")
            _save(image, root / "train" / "JPEGImages" / names[-1])
            rle = encode_rle(person)
            if v % 2:  # odd videos store uncompressed counts, as some YouTubeVIS releases do
                rle = {"size": [h, w], "counts": mask_to_runs(person)}
            people.append(rle if f >= absent else None)
            pandas.append(encode_rle(panda))
        data["videos"].append({"id": v + 1, "width": w, "height": h, "length": spec.frames, "file_names": names})
        data["annotations"].append({"id": 2 * v + 1, "video_id": v + 1, "category_id": 1, "iscrowd": 0,
                                    "segmentations": people})
        data["annotations"].append({"id": 2 * v + 2, "video_id": v + 1, "category_id": 2, "iscrowd": 0,
                                    "segmentations": pandas})
    (root / "train" / "instances.json").write_text(json.dumps(data))


# -- the user's own clips (the finetune preset's layout) -------------------------------------------------------------
@dataclass(frozen=True)
class ClipSetSpec:
    size: tuple[int, int] = (72, 96)  # H, W of the footage (even sides: H.264 in 4:2:0 needs them)
    frames: int = 12  # frames per clip
    image_clips: int = 16  # clips stored as frames/<stem>.jpg + alpha/<stem>.png
    video_clips: int = 4  # clips stored as video + alpha.mkv (FFV1 gray, lossless); needs PyAV
    video_codec: str = "libx264"  # the footage: libx264 (video.mp4, lossy like real footage) or ffv1 (video.mkv)
    backgrounds: int = 0  # empty-room images in backgrounds/ (0: train on the clips' own backgrounds)


CLIP_SPECS = {
    "clips": ClipSetSpec(),  # the measured fine-tuning run of docs/training.md
    "clips-tiny": ClipSetSpec(size=(48, 64), frames=2, image_clips=4, video_clips=1, video_codec="ffv1"),  # tests
}


class Room:
    """A static-camera scene: a lit wall, shelves and frames with hard edges, and a desk; the camera drifts slowly."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.wall = rng.uniform(0.35, 0.85, size=3)
        self.light = rng.uniform(-0.3, 0.3, size=2)  # brightness slope along (x, y)
        count = int(rng.integers(2, 6))
        self.boxes = [(rng.uniform(0.0, 0.85, size=2), rng.uniform(0.08, 0.35, size=2), rng.uniform(0.05, 0.95, size=3))
                      for _ in range(count)]  # (top-left, size, colour), fractions of (W, H)
        self.desk_top = rng.uniform(0.7, 0.88)
        self.desk = rng.uniform(0.1, 0.6, size=3)
        self.pan = rng.uniform(-0.004, 0.004, size=2)  # frame sizes per frame

    def render(self, t: float, height: int, width: int) -> np.ndarray:
        """Frame ``t`` as ``[H,W,3]`` float32 in [0, 1]."""
        y = (np.arange(height)[:, None] + 0.5) / height + self.pan[1] * t
        x = (np.arange(width)[None, :] + 0.5) / width + self.pan[0] * t
        shade = 1.0 + self.light[0] * (x - 0.5) + self.light[1] * (y - 0.5)
        image = np.broadcast_to(self.wall, (height, width, 3)) * shade[..., None]
        for (left, top), (w, h), colour in self.boxes:
            inside = (x >= left) & (x < left + w) & (y >= top) & (y < top + h)
            image = np.where(inside[..., None], colour * shade[..., None], image)
        image = np.where((y >= self.desk_top)[..., None], self.desk * (1.2 - 0.4 * y[..., None]), image)
        return np.clip(image, 0, 1).astype(np.float32)


def make_clip_set(root: str | Path, seed: int = 0, spec: ClipSetSpec | str = "clips") -> dict[str, int]:
    """Write a clip set in the finetune layout under ``root``: ``clips/clip_NNN/`` (frames + alpha images for the
    first ``image_clips``, video + alpha video for the rest) and optional ``backgrounds/``. Returns file counts.
    Video clips need PyAV (training.video.VideoError without it)."""
    from .video import write_video

    spec = CLIP_SPECS[spec] if isinstance(spec, str) else spec
    root = Path(root)
    h, w = spec.size
    for c in range(spec.image_clips + spec.video_clips):
        rng = _rng(seed, 11, c)
        figure, room = Figure(rng), Room(rng)
        frames, alphas = [], []
        for f in range(spec.frames):
            fgr, alpha = figure.render(float(f), h, w)
            frames.append(fgr * alpha[..., None] + room.render(float(f), h, w) * (1 - alpha[..., None]))
            alphas.append(alpha)
        folder = root / "clips" / f"clip_{c:03d}"
        if c < spec.image_clips:
            for f, (frame, alpha) in enumerate(zip(frames, alphas)):
                _save(frame, folder / "frames" / f"{f:04d}.jpg")
                _save(alpha, folder / "alpha" / f"{f:04d}.png")
        else:
            as_bytes = [np.round(np.clip(np.stack(a), 0, 1) * 255).astype(np.uint8) for a in (frames, alphas)]
            extension = ".mp4" if spec.video_codec == "libx264" else ".mkv"
            write_video(folder / f"video{extension}", as_bytes[0], codec=spec.video_codec)
            write_video(folder / "alpha.mkv", as_bytes[1], codec="ffv1")
    for i in range(spec.backgrounds):
        _save(Room(_rng(seed, 12, i)).render(0.0, h, w), root / "backgrounds" / f"room_{i:03d}.jpg")
    return {name: sum(1 for p in (root / name).rglob("*") if p.is_file()) for name in ("clips", "backgrounds")}
