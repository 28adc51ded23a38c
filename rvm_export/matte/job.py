"""One matting run: check everything, then decode -> model -> composite/encode in overlapping stages, then rename.

Every check (input, model, the sizes it must serve, outputs, background) happens before the first output byte. Each
output is written under a temporary sibling of its name and renamed only after every output has been closed
successfully: a failure or Ctrl-C leaves nothing under the requested names (and nothing temporary behind).
"""
from __future__ import annotations

import sys
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from rvm_export.core.atomic import atomic_path
from rvm_export.core.errors import RvmExportError, UsageError

from .audio import AudioCopy
from .background import Background, parse_background
from .compose import composite_into, to_u8_into
from .cuts import SceneCutDetector
from .decode import Frame, InputInfo, frames, probe
from .encode import Writer, open_writer
from .fit import Fit
from .pipeline import run_stages
from .request import OUTPUT_KINDS, MatteRequest
from .source import Geometry, ModelSource, open_source

__all__ = ["MatteSummary", "MatteFailed", "run", "prepare"]


class MatteFailed(RvmExportError):
    """The run failed after it started (a runtime or encoder error); nothing was left under the requested names."""


@dataclass
class MatteSummary:
    """What a run did. Times in seconds; frame indices 0-based."""

    input: str  # the input path
    frames: int  # frames written to every output
    width: int  # frame width of the first frame (display orientation), pixels
    height: int  # frame height of the first frame, pixels
    model: str  # what ran, e.g. "openvino fp32 static 1280x720@0.375 (...)"
    geometry: str  # size@ratio the model ran at for the first frame size
    outputs: dict[str, str]  # kind -> path
    audio: dict[str, str] = field(default_factory=dict)  # output path -> "copy" | "re-encoded to ..."
    resets: list[int] = field(default_factory=list)  # frames where the states restarted (cuts, size changes)
    cuts: list[int] = field(default_factory=list)  # frames the scene-cut detector marked
    seconds: float = 0.0  # wall time of the frame loop
    fps: float = 0.0  # frames / seconds
    stages: dict[str, float] = field(default_factory=dict)  # busy s: produce, infer, consume; *_cpu: CPU s
    compare_model: str | None = None  # the second model with --compare
    alpha_diff_mean: list[float] = field(default_factory=list, repr=False)  # per frame, |pha - pha2| mean
    alpha_diff_max: list[float] = field(default_factory=list, repr=False)  # per frame, |pha - pha2| max

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Model:
    source: ModelSource
    geometries: dict[tuple[int, int], Geometry]  # frame size -> geometry it runs at
    fits: dict[tuple[int, int], Fit]
    streams: dict[Geometry, Any] = field(default_factory=dict)


@dataclass
class _Work:
    frame: Frame  # its image is kept only when the background reads it
    size: tuple[int, int]  # frame width, height
    srcs: list[np.ndarray]  # model inputs, one per model
    reset: bool  # restart the states before this frame (a cut or a new size)
    cut: bool  # the scene-cut detector fired here


@dataclass
class _Plan:
    request: MatteRequest
    info: InputInfo
    models: list[_Model]
    background: Background


def _model(request: MatteRequest, path: Path, artifact: str | None, info: InputInfo, primary: bool) -> _Model:
    size = (info.width, info.height)
    source = open_source(path, size, artifact=artifact, target=request.target if primary else None,
                         precision=request.precision if primary else None, ratio=request.downsample_ratio,
                         device=request.device, threads=request.threads)
    geometries, fits = {}, {}
    for width, height in info.sizes or (size,):
        geometry = source.geometry_for(width, height, request.downsample_ratio, request.fit)
        geometries[(width, height)] = geometry
        fits[(width, height)] = Fit(width, height, geometry.width, geometry.height, request.fit)
    return _Model(source, geometries, fits)


def prepare(request: MatteRequest) -> _Plan:
    """Every check, in order, before any output exists. Raises UsageError / InputError / MissingRuntimeError."""
    request.check_paths()
    info = probe(request.input, request.fps)
    if len(info.sizes) > 1 and any(plan.is_video for plan in request.plans()):
        sizes = ", ".join(f"{w}x{h}" for w, h in info.sizes[:3])
        raise UsageError(f"{info.path} holds frames of {len(info.sizes)} sizes ({sizes}...): a video output needs one "
                         f"size; write PNG folders (an output name without extension)")
    background = parse_background(request.background)
    try:
        models = [_model(request, request.model, request.artifact, info, True)]
        if request.compare is not None:
            models.append(_model(request, request.compare, request.compare_artifact, info, False))
    except BaseException:
        background.close()
        raise
    return _Plan(request, info, models, background)


def _produce(plan: _Plan):
    request = plan.request
    detector = SceneCutDetector(request.scene_cut_threshold) if request.scene_cuts else None
    previous_size = None
    keep_image = plan.background.needs_frame
    for frame in frames(plan.info, request.max_frames):
        size = frame.size
        cut = detector(frame.image) if detector is not None else False
        reset = frame.index > 0 and (cut or size != previous_size)
        previous_size = size
        srcs = [model.fits[size].to_model(frame.image) for model in plan.models]
        yield _Work(frame if keep_image else replace(frame, image=_NO_IMAGE), size, srcs, reset, cut)


_NO_IMAGE = np.zeros((3, 0, 0), np.uint8)


def _infer(plan: _Plan, work: _Work) -> tuple[_Work, list[dict[str, np.ndarray]]]:
    outputs = []
    for model, src in zip(plan.models, work.srcs):
        geometry = model.geometries[work.size]
        stream = model.streams.get(geometry)
        if stream is None:
            stream = model.streams[geometry] = model.source.open(geometry)
        elif work.reset:
            stream.reset()
        outputs.append(stream.step(src))
    return work, outputs


class _Sink:
    """The consume stage: map outputs back, fill every writer, keep the per-frame numbers."""

    def __init__(self, plan: _Plan, writers: dict[str, Writer], summary: MatteSummary, bar) -> None:
        self.plan, self.writers, self.summary, self.bar = plan, writers, summary, bar
        self.needs_background = "composite" in writers or "compare" in writers

    def __call__(self, item: tuple[_Work, list[dict[str, np.ndarray]]]) -> None:
        work, outputs = item
        frame, (width, height) = work.frame, work.size
        fits = [model.fits[work.size] for model in self.plan.models]
        fgr, pha = fits[0].from_model(outputs[0]["fgr"], outputs[0]["pha"])
        if len(outputs) > 1:
            fgr2, pha2 = fits[1].from_model(outputs[1]["fgr"], outputs[1]["pha"])
            diff = np.abs(pha - pha2)
            self.summary.alpha_diff_mean.append(float(diff.mean()))
            self.summary.alpha_diff_max.append(float(diff.max()))
        background = self.plan.background.for_frame(frame, width, height) if self.needs_background else None
        for kind, writer in self.writers.items():
            handle, planes = writer.new_frame(width * (2 if kind == "compare" else 1), height)
            if kind == "composite":
                composite_into(planes, fgr, pha, background)
            elif kind == "alpha":
                to_u8_into(planes[0], pha)
            elif kind in ("foreground", "rgba"):
                for c in range(3):
                    to_u8_into(planes[c], fgr[c])
                if kind == "rgba":
                    to_u8_into(planes[3], pha)
            else:  # compare: model | compare model, over the same background
                composite_into([p[:, :width] for p in planes], fgr, pha, background)
                composite_into([p[:, width:] for p in planes], fgr2, pha2, background)
            writer.write(handle, frame)
        if work.reset:
            self.summary.resets.append(frame.index)
        if work.cut:
            self.summary.cuts.append(frame.index)
        self.summary.frames += 1
        if self.bar is not None:
            self.bar.update(1)


def _progress(plan: _Plan):
    if not plan.request.progress:
        return None
    from tqdm import tqdm

    total = plan.info.frames
    if plan.request.max_frames is not None:
        total = min(total, plan.request.max_frames) if total else plan.request.max_frames
    return tqdm(total=total, unit="frame", desc="matte", file=sys.stderr, dynamic_ncols=True)


def _open_writers(plan: _Plan, stack: ExitStack, summary: MatteSummary) -> dict[str, Writer]:
    request, info = plan.request, plan.info
    writers: dict[str, Writer] = {}
    partial = request.max_frames is not None and (info.frames is None or request.max_frames < info.frames)
    for output in request.plans():
        temporary = stack.enter_context(atomic_path(output.path))
        audio = None
        if output.is_video and request.audio and info.audio is not None:
            audio = AudioCopy(info.path, partial)
        width = info.width * (2 if output.kind == "compare" else 1)
        writer = open_writer(output, temporary, width, info.height, info.time_base, info.rate, request.encode, audio)
        stack.callback(writer.abort)
        writers[output.kind] = writer
        if audio is not None:
            summary.audio[str(output.path)] = audio.mode
    return writers


def run(request: MatteRequest) -> MatteSummary:
    """Matte ``request.input`` and write every requested output. Raises UsageError / InputError (exit 2, checked
    before anything is written), MissingRuntimeError (3), MatteFailed (4) or KeyboardInterrupt; on any of them no
    file exists under the requested names."""
    plan = prepare(request)
    first = plan.models[0]
    size = (plan.info.width, plan.info.height)
    summary = MatteSummary(str(request.input), 0, size[0], size[1], first.source.label, first.geometries[size].label,
                           {kind: str(getattr(request, kind)) for kind in OUTPUT_KINDS if getattr(request, kind)})
    if request.compare_video:
        summary.outputs["compare"] = str(request.compare_video)
    if request.compare_plot:
        summary.outputs["compare_plot"] = str(request.compare_plot)
    if len(plan.models) > 1:
        summary.compare_model = plan.models[1].source.label
    bar = _progress(plan)
    try:
        with ExitStack() as stack:  # on leaving it without an error, every temporary output is renamed
            writers = _guarded(summary, _open_writers, plan, stack, summary)
            times = _guarded(summary, run_stages, _produce(plan), lambda work: _infer(plan, work),
                             _Sink(plan, writers, summary, bar), depth=request.queue_depth,
                             helper_nice=request.pipeline_nice)
            for writer in writers.values():
                _guarded(summary, writer.close)
            if request.compare_plot:
                from .compare import plot_alpha_difference

                _guarded(summary, plot_alpha_difference, stack.enter_context(atomic_path(request.compare_plot)),
                         summary)
    finally:
        if bar is not None:
            bar.close()
        plan.background.close()
    summary.seconds = times.wall
    summary.fps = summary.frames / times.wall if times.wall > 0 else 0.0
    summary.stages = {"produce": times.produce, "infer": times.infer, "consume": times.consume,
                      "produce_cpu": times.produce_cpu, "consume_cpu": times.consume_cpu,
                      "process_cpu": times.process_cpu}
    return summary


def _guarded(summary: MatteSummary, fn, *args, **kwargs):
    """Call ``fn``; an unexpected exception becomes MatteFailed (exit 4) naming the frame reached."""
    try:
        return fn(*args, **kwargs)
    except (RvmExportError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise MatteFailed(f"matting stopped after {summary.frames} frame(s): {type(exc).__name__}: {exc}") from exc
