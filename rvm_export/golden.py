"""Golden frames for app CI: a few frames of a rollout and what PyTorch computes for them, readable from any language.

An iOS, Android or web app's own tests feed the frames to the model on the device, state after state, and assert
that the outputs match within the artifact's tolerance. Layout inside an export folder::

    golden/golden.json                           the index (``FORMAT``), one entry per bucket
    golden/<W>x<H>_r<ratio>/frame_000_src.f32    input frame k, [1, 3, H, W]
    golden/<W>x<H>_r<ratio>/frame_000_fgr.f32    PyTorch's outputs for frame k: fgr, pha, r1o..r4o
    ...

Every ``.f32`` file is raw little-endian IEEE float32 in C order (NCHW), with no header: its shape, dtype, byte order
and sha256 are in the index. Frame k's states are the outputs r1o..r4o of frame k-1 (zeros of the index's
``zero_states`` shapes at frame 0), which is what a device computes when it feeds its own states back; comparing the
device's states with ours is optional. The index lists the artifacts valid at the bucket with their tolerance
(rvm_export/tolerances.py: max abs on fgr/pha and on states, MAD bounds for quantised ones).
Readers: :func:`read_golden` here, ``rvm-golden.mjs`` in the web export.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from rvm_export.core.atomic import atomic_path, write_json_atomic
from rvm_export.core.bucket import Bucket
from rvm_export.core.names import OUTPUT_NAMES, STATE_INPUTS
from rvm_export.core.spec import state_shapes

__all__ = ["FORMAT", "bucket_dir_name", "read_golden", "write_golden_frames"]

FORMAT = "rvm-export golden frames 1"
INDEX = "golden.json"


def bucket_dir_name(bucket: Bucket) -> str:
    """``128x72_r0.5``: the bucket's folder under ``golden/`` (no ``@``, which some URL and file tools dislike)."""
    return f"{bucket.width}x{bucket.height}_r{bucket.ratio:g}"


def _write_tensor(folder: Path, name: str, array: np.ndarray, relative_to: str) -> dict[str, Any]:
    data = np.ascontiguousarray(array, dtype="<f4")
    (folder / name).write_bytes(data.tobytes())
    return {"file": f"{relative_to}/{name}", "shape": list(data.shape), "dtype": "float32", "byte_order": "little",
            "sha256": hashlib.sha256(data.tobytes()).hexdigest()}


def _artifact_entry(artifact: Any, out_dir: Path) -> dict[str, Any]:
    from .tolerances import tolerance_for

    precision = getattr(artifact.precision, "value", str(artifact.precision))
    path = Path(artifact.path)
    entry = {"path": str(path.relative_to(out_dir)) if path.is_absolute() else str(path), "target": artifact.target,
             "precision": precision,
             "tolerance": tolerance_for(artifact.target, precision, artifact.spec.refiner).to_dict()}
    backend = artifact.details.get("backend")
    if backend:
        entry["backend"] = backend + (f":{artifact.details['threads']}" if "threads" in artifact.details else "")
    return entry


def write_golden_frames(out_dir: str | Path, model, bucket: Bucket, frames: int = 4, *,
                        artifacts: Iterable[Any] = (), seed: int = 0, states: bool = True) -> Path:
    """Write ``frames`` consecutive frames of the generated scene at ``bucket`` and PyTorch's outputs for them.

    ``out_dir``: the export folder (``golden/`` is made inside it). ``model``: the fp32 :class:`model.MattingNetwork`
    the artifacts were exported from. ``artifacts``: :class:`~rvm_export.core.request.Artifact` records valid at
    ``bucket`` (paths relative to ``out_dir`` go into the index with their tolerance). ``states``: also write r1o..r4o.
    Sizes: per frame 4*H*W*(3 + 3 + 1) bytes plus the states (1.2 MB at 256x144, 58 MB at 1920x1080).
    The bucket's folder and the index are replaced atomically; other buckets' entries are kept, and so are the
    artifacts an earlier call listed for the same clip (same seed and frame count), so it may be called per artifact.
    Returns the path of ``golden.json``. Raises ValueError for ``frames < 1``.
    """
    from rvm_export.core.rollout import TorchStream
    from rvm_export.core.rollout import MovingScene

    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    out_dir = Path(out_dir)
    root = out_dir / "golden"
    name = bucket_dir_name(bucket)
    scene = MovingScene(bucket.width, bucket.height, frames, seed=seed)
    reference = TorchStream(model, bucket)
    keep = OUTPUT_NAMES if states else OUTPUT_NAMES[:2]
    entries = []
    with atomic_path(root / name) as tmp:
        tmp.mkdir()
        for index in range(frames):
            src = scene.frame(index)
            outputs = reference.step(src)
            entries.append({"index": index, "src": _write_tensor(tmp, f"frame_{index:03d}_src.f32", src, name),
                            "expected": {k: _write_tensor(tmp, f"frame_{index:03d}_{k}.f32", outputs[k], name)
                                         for k in keep}})
    shapes = state_shapes(model.variant, bucket.height, bucket.width, bucket.ratio)
    index_path = root / INDEX
    index = _read_index(index_path)
    previous = index["buckets"].get(bucket.label, {})
    same_clip = (previous.get("scene_seed"), len(previous.get("frames", ()))) == (seed, frames)
    index["buckets"][bucket.label] = {
        "width": bucket.width, "height": bucket.height, "downsample_ratio": bucket.ratio, "dir": name,
        "variant": model.variant, "refiner": model.refiner_name, "scene_seed": seed,
        "reference": f"PyTorch {_torch_version()} fp32 on the CPU: MattingNetwork.forward, states fed back",
        "zero_states": {k: list(s) for k, s in zip(STATE_INPUTS, shapes)},
        "frames": entries,
        # Artifacts listed by an earlier call for the same clip stay listed (one call per artifact is fine).
        "artifacts": _merge_artifacts(previous.get("artifacts", []) if same_clip else [],
                                      [_artifact_entry(a, out_dir) for a in artifacts]),
    }
    write_json_atomic(index_path, index)
    return index_path


def _merge_artifacts(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen = {(e["path"], e.get("backend")) for e in new}
    return [e for e in old if (e["path"], e.get("backend")) not in seen] + new


def _torch_version() -> str:
    import torch

    return torch.__version__


def _read_index(path: Path) -> dict[str, Any]:
    if path.is_file():
        index = json.loads(path.read_text(encoding="utf-8"))
        if index.get("format") == FORMAT:
            return index
    return {"format": FORMAT,
            "description": "Raw little-endian float32 tensors in C order (NCHW), no header; frame k's states are "
                           "frame k-1's r1o..r4o (zeros of zero_states at frame 0). Compare each output with "
                           "the artifact's tolerance (max abs).",
            "buckets": {}}


def read_golden(index_path: str | Path, bucket: Bucket | str) -> list[dict[str, np.ndarray]]:
    """The frames of one bucket as ``[{"src": array, "fgr": array, ...}, ...]`` (float32, checked against the
    index's shapes and sha256). Raises KeyError for an unknown bucket, ValueError for a file that does not match."""
    index_path = Path(index_path)
    index = json.loads(index_path.read_text(encoding="utf-8"))
    if index.get("format") != FORMAT:
        raise ValueError(f"{index_path} is not {FORMAT!r}")
    label = bucket.label if isinstance(bucket, Bucket) else bucket
    entry = index["buckets"][label]
    frames = []
    for frame in entry["frames"]:
        tensors = {"src": frame["src"], **frame["expected"]}
        frames.append({k: _read_tensor(index_path.parent, v) for k, v in tensors.items()})
    return frames


def _read_tensor(root: Path, entry: dict[str, Any]) -> np.ndarray:
    data = (root / entry["file"]).read_bytes()
    if entry.get("sha256") and hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise ValueError(f"{entry['file']}: sha256 differs from the index")
    if entry["dtype"] != "float32" or entry.get("byte_order", "little") != "little":
        raise ValueError(f"{entry['file']}: expected little-endian float32, the index says {entry['dtype']}")
    array = np.frombuffer(data, "<f4")
    if array.size != int(np.prod(entry["shape"])):
        raise ValueError(f"{entry['file']}: {array.size} values, the index says shape {entry['shape']}")
    return array.reshape(entry["shape"]).astype(np.float32)
