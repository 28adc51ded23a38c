"""Where the model comes from: an export folder, one artifact file, or a checkpoint.

This is the only module of the matting package that touches the export side's API (``targets``, the I/O spec, the
manifest reader, the PyTorch reference); everything else sees :class:`ModelSource` and :class:`Geometry`. When that
API moves, this file is the one to re-point.

A source says which frame sizes it can serve (``static``: a tuple of :class:`Geometry`, or ``None`` for any size and
ratio) and opens a stream for one of them: ``open(geometry).step(src)`` takes ``src`` float32 [1, 3, h, w] RGB in
[0, 1] and returns float32 ``fgr`` [1, 3, h, w] and ``pha`` [1, 1, h, w] in [0, 1], arrays the caller owns;
``reset()`` starts from zero states.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import numpy as np

from rvm_export.core.errors import InputError, UsageError

__all__ = ["Geometry", "Stream", "ModelSource", "open_source", "CHECKPOINT_SUFFIXES"]

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")
# Preference among artifacts that fit equally well: the fastest CPU runtime first (README figures), then accuracy.
_TARGET_ORDER = ("openvino", "onnx", "tflite", "coreml", "cuda")
_PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")
# Runtimes whose returned arrays are views into buffers the next step overwrites: the stream copies them.
_VIEW_RUNTIMES = ("openvino", "tflite")


@dataclass(frozen=True)
class Geometry:
    """The size a model runs at: full-resolution frame width and height (pixels) and the downsample ratio."""

    width: int  # frame width the model takes, pixels
    height: int  # frame height the model takes, pixels
    ratio: float  # downsample_ratio in (0, 1]

    @property
    def label(self) -> str:
        return f"{self.width}x{self.height}@{self.ratio:g}"


class Stream(Protocol):
    """What a model source opens per size: ``step(src)`` float32 [1, 3, h, w] RGB in [0, 1] -> ``fgr``
    [1, 3, h, w] and ``pha`` [1, 1, h, w]; ``reset()`` starts from zero states."""
    def step(self, src: np.ndarray) -> Mapping[str, np.ndarray]: ...

    def reset(self) -> None: ...


class _OwnedStream:
    """Keeps only ``fgr`` and ``pha`` and, where the runtime hands out views, copies them."""

    def __init__(self, stream: Any, copy: bool) -> None:
        self.stream, self.copy = stream, copy

    def reset(self) -> None:
        self.stream.reset()

    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        out = self.stream.step(src)
        if self.copy:
            return {"fgr": np.array(out["fgr"], np.float32), "pha": np.array(out["pha"], np.float32)}
        return {"fgr": np.asarray(out["fgr"], np.float32), "pha": np.asarray(out["pha"], np.float32)}


@dataclass
class ModelSource:
    """A model ready to open streams. ``static`` None: any frame size and ratio (dynamic artifact, checkpoint)."""

    label: str  # what runs, for messages and the summary, e.g. "onnx fp32 dynamic (model.onnx)"
    path: Path  # the artifact or checkpoint file
    static: tuple[Geometry, ...] | None  # sizes a static artifact serves; None = any
    _open: Callable[[Geometry], Any]  # Geometry -> the runtime's stream
    _copy: bool = False  # copy outputs (the runtime reuses its buffers)

    def geometry_for(self, width: int, height: int, ratio: float | None, fit: str) -> Geometry:
        """The geometry to run ``width`` x ``height`` frames at. ``ratio`` None means auto (the bucket's own for a
        static model, :func:`recommended_ratio` for a dynamic one). Raises UsageError when no served size works."""
        if self.static is None:
            return _dynamic_geometry(width, height, ratio)
        usable = [g for g in self.static if ratio is None or abs(g.ratio - ratio) < 1e-9]
        if not usable:
            raise UsageError(f"{self.label} is fixed at {', '.join(g.label for g in self.static)}: it cannot run "
                             f"at --downsample-ratio {ratio:g}")
        exact = [g for g in usable if (g.width, g.height) == (width, height)]
        if exact:
            return exact[0]
        if fit == "exact":
            raise UsageError(f"{self.label} is fixed at {', '.join(g.label for g in usable)} and the frames are "
                             f"{width}x{height}: use --fit letterbox or --fit resize, or export that size")
        aspect = width / height
        return min(usable, key=lambda g: (abs(np.log(g.width / g.height / aspect)), -g.width * g.height))

    def open(self, geometry: Geometry) -> Stream:
        """A stream at ``geometry`` (one of ``static``, or any for a dynamic source), starting from zero states."""
        return _OwnedStream(self._open(geometry), self._copy)


def _bucket(geometry: Geometry):
    from rvm_export.core.bucket import Bucket

    return Bucket(geometry.width, geometry.height, geometry.ratio)


def _dynamic_geometry(width: int, height: int, ratio: float | None) -> Geometry:
    from rvm_export.core.bucket import Bucket, recommended_ratio

    if ratio is not None:
        _bucket(Geometry(width, height, ratio))  # raises UsageError naming the ratios that work
        return Geometry(width, height, ratio)
    wanted = recommended_ratio(width, height)
    # The recommended ratio can land where float32 and float64 floors disagree at an odd size: step down by 1/1024.
    for k in range(64):
        candidate = round(wanted - k / 1024, 6)
        if candidate <= 0:
            break
        try:
            Bucket(width, height, candidate)
        except UsageError:
            continue
        return Geometry(width, height, candidate)
    raise UsageError(f"no downsample ratio near {wanted:g} is valid at {width}x{height}: pass --downsample-ratio")


def _geometry(bucket) -> Geometry:
    return Geometry(bucket.width, bucket.height, float(bucket.ratio))


def _options(device: str, threads: int | None):
    from rvm_export.core.request import RuntimeOptions

    # The runtime's idle threads do not spin: matte's decode and encode threads use those gaps (decision 53).
    return RuntimeOptions(threads=threads, device=device, spin_wait=False)


def _from_runner(runner, label: str, path: Path, target: str, buckets) -> ModelSource:
    static = None if runner.spec.dynamic else tuple(_geometry(b) for b in buckets or (runner.spec.bucket,))
    return ModelSource(label, path, static, lambda g: runner.stream(_bucket(g)), target in _VIEW_RUNTIMES)


def _checkpoint(path: Path, device: str, threads: int | None) -> ModelSource:
    import torch

    from rvm_export.pipeline import load_model
    from rvm_export.core.rollout import TorchStream

    if threads:
        torch.set_num_threads(threads)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda: this PyTorch sees no CUDA GPU")
    model, info = load_model(path, None, None)
    model = model.to(device)
    label = f"PyTorch {info['variant']} + {info['refiner']} on {device} ({path.name})"
    return ModelSource(label, path, None, lambda g: TorchStream(model, _bucket(g)))


def _artifact_file(path: Path, device: str, threads: int | None) -> ModelSource:
    suffix = path.suffix.lower()
    options = _options(device, threads)
    if suffix == ".onnx":
        from rvm_export.core.request import Artifact
        from rvm_export.core.spec import IOSpec, Precision
        from targets.onnx import OnnxRunner, load_foreign, read_contract

        contract = read_contract(path)
        if contract is None:
            runner = load_foreign(path, options)
            return _from_runner(runner, f"onnx foreign dynamic ({path.name})", path, "onnx", None)
        spec = IOSpec.from_dict(contract)
        bucket = spec.bucket
        artifact = Artifact("onnx", path, Precision.FP32, spec, "dynamic" if bucket is None else "static",
                            (bucket,) if bucket else ())
        runner = OnnxRunner(path, spec, options, artifact)
        flavour = "dynamic" if bucket is None else bucket.label
        return _from_runner(runner, f"onnx {flavour} ({path.name})", path, "onnx", None)
    if suffix == ".xml" or (path.is_dir() and any(path.glob("*.xml"))):
        from targets.openvino import load_ir

        runner = load_ir(path, options)
        return _from_runner(runner, f"openvino {runner.inference_precision} ({path.name})", path, "openvino", None)
    if suffix == ".tflite":
        from targets.tflite import load_path

        runner = load_path(path, options)
        return _from_runner(runner, f"tflite {runner.spec.bucket.label} ({path.name})", path, "tflite", None)
    raise InputError(f"{path}: not a model this command reads (an export folder with manifest.json, a .onnx, "
                     f"OpenVINO .xml, .tflite, or a checkpoint {'/'.join(CHECKPOINT_SUFFIXES)}); CoreML and CUDA "
                     f"programs load from their export folder")


def _runnable(entry: Mapping[str, Any], device: str) -> bool:
    target = entry["target"]
    if target == "cuda":
        return device.startswith("cuda")
    if target == "coreml":
        return sys.platform == "darwin"
    return not device.startswith("cuda") or target == "onnx"


def _rank(artifact, entry: Mapping[str, Any], width: int, height: int) -> tuple:
    bucket = artifact.spec.bucket
    if bucket is None:
        fit = 1
    elif any((b.width, b.height) == (width, height) for b in artifact.buckets):
        fit = 0
    elif abs(bucket.width * height - bucket.height * width) <= max(width, height):
        fit = 2
    else:
        fit = 3
    target = _TARGET_ORDER.index(entry["target"]) if entry["target"] in _TARGET_ORDER else len(_TARGET_ORDER)
    precision = _PRECISION_ORDER.index(entry["precision"]) if entry["precision"] in _PRECISION_ORDER else 9
    return (fit, precision, target, entry["flavour"] == "stateful")


def _folder(folder: Path, frame: tuple[int, int], artifact_name: str | None, target: str | None,
            precision: str | None, ratio: float | None, device: str, threads: int | None) -> ModelSource:
    from rvm_export.folder import artifacts_from_manifest, read_manifest
    from targets import get_target

    manifest = read_manifest(folder)
    pairs = list(zip(artifacts_from_manifest(folder, manifest), manifest["artifacts"]))
    if artifact_name is not None:
        chosen = [(a, e) for a, e in pairs if artifact_name in (a.name, e["path"], f"{a.target}:{a.name}")]
        if not chosen:
            raise UsageError(f"--artifact {artifact_name!r} is not in {folder}/manifest.json; it lists "
                             f"{', '.join(e['path'] for _, e in pairs)}")
    else:
        chosen = [(a, e) for a, e in pairs if e.get("status") == "exported" and _runnable(e, device)
                  and (target is None or e["target"] == target) and (precision is None or e["precision"] == precision)
                  and (ratio is None or a.spec.bucket is None or any(abs(b.ratio - ratio) < 1e-9 for b in a.buckets))]
        if not chosen:
            asked = ", ".join(f"{k} {v}" for k, v in (("target", target), ("precision", precision),
                                                      ("ratio", ratio)) if v is not None) or "any"
            listed = ", ".join(f"{e['path']} [{e['status']}; {', '.join(e['buckets']) if a.spec.bucket else 'dynamic'}]"
                               for a, e in pairs)
            raise UsageError(f"{folder} has no artifact that passed parity and runs here ({asked}; device {device}); "
                             f"it lists {listed}")
        chosen.sort(key=lambda pair: _rank(pair[0], pair[1], *frame))
    refused = []
    for artifact, entry in chosen:
        module = get_target(artifact.target)
        why = module.missing()
        if why:
            refused.append(f"{entry['path']}: {why}")
            continue
        if not artifact.path.exists():
            refused.append(f"{entry['path']}: file missing")
            continue
        try:
            runner = module.load(artifact, _options(device, threads))
        except UsageError as exc:  # e.g. bf16 on a CPU without bf16: try the next-best artifact
            if artifact_name is not None:
                raise
            refused.append(f"{entry['path']}: {exc}")
            continue
        where = "" if artifact.spec.bucket is None else " " + ", ".join(b.label for b in artifact.buckets)
        label = f"{artifact.target} {artifact.precision.value} {artifact.flavour}{where} ({artifact.name})"
        return _from_runner(runner, label, artifact.path, artifact.target, artifact.buckets)
    raise UsageError(f"no artifact of {folder} can run here: " + "; ".join(refused))


def open_source(model: str | Path, frame: tuple[int, int], *, artifact: str | None = None, target: str | None = None,
                precision: str | None = None, ratio: float | None = None, device: str = "cpu",
                threads: int | None = None) -> ModelSource:
    """Open ``model`` for frames of ``frame`` = (width, height).

    ``model``: an export folder (the artifact is picked from manifest.json for the frame size: a static one built for
    it, else a dynamic one, else the static one closest in aspect; ``artifact``/``target``/``precision`` narrow the
    choice), one artifact file, or a checkpoint (PyTorch, ``device`` cpu or cuda). ``ratio`` None = auto.
    Raises InputError (unreadable path), UsageError (nothing fits), MissingRuntimeError (runtime not installed).
    """
    path = Path(model)
    if not path.exists():
        raise InputError(f"model not found: {path}")
    if (target or precision or artifact) and not (path.is_dir() and (path / "manifest.json").is_file()):
        raise UsageError("--artifact, --target and --precision choose inside an export folder; "
                         f"{path} is a single model")
    if path.is_dir() and (path / "manifest.json").is_file():
        return _folder(path, frame, artifact, target, precision, ratio, device, threads)
    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return _checkpoint(path, device, threads)
    if path.is_dir() and not any(path.glob("*.xml")):
        raise InputError(f"{path} is a folder without manifest.json (is it an rvm-export output folder?)")
    return _artifact_file(path, device, threads)
