"""Temporal figures: does an artifact's error against PyTorch stay put over a long rollout, does its alpha flicker
more than PyTorch's where nothing moves, and how long does it take to settle after a state reset or a scene cut.

No ground truth is needed: PyTorch fp32 is the reference, each side feeding back its own states
(:func:`rvm_export.parity.compare_many` is the one lockstep loop; :class:`EventStream` only decorates a stream).

A *source* is a clip with its events (rvm_export/temporal_sources.py): the generated scene with a cut and a reset,
or a real video with its own cuts.

Figures (alpha ``pha`` in [0, 1]; a frame's error is its mean abs difference from PyTorch, "MAD"):

- **drift**: per-frame MAD and max abs over the drift segment; least-squares slope of the per-frame MAD, in MAD per
  1000 frames; mean of the last quarter over the first. Rule: the error *grows* when the slope is positive and the
  last quarter's mean is more than :data:`GROWTH_RATIO` times the first's. Judged: slope <= the precision's bound.
- **flicker**: mean ``|pha_t - pha_{t-1}|`` over *static* pixels, those whose source RGB changed by at most
  :data:`STATIC_THRESHOLD` in every channel since the previous frame (the input says what is still; the first frame
  and the frames of an event are skipped), pooled over the drift segment. Judged: artifact's minus PyTorch's <= bound.
- **recovery**: after each event, the frames until the artifact's per-frame MAD is at or below its *settled level*
  (:data:`SETTLE_FACTOR` x the median per-frame MAD of the drift segment, at least the precision's floor) for
  :data:`HOLD` frames in a row. For context, PyTorch's own settling: a PyTorch copy that is reset at the cut (it
  never saw the old scene), or not reset at the reset, against the reference, until their MAD is at or below
  :data:`PYTORCH_SETTLE` for :data:`HOLD` frames. Judged: recovery frames <= bound.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.rollout import TorchStream

from .parity import ParityReport, compare_many
from .temporal_sources import DEFAULT_WINDOW, Source, clip_source, generated_source
from .tolerances import TemporalTolerance, tolerance_for, temporal_tolerance_for

__all__ = ["EventStream", "TemporalReport", "measure_temporal", "check_temporal", "temporal_row", "recovery_text",
           "summary_line", "recovery_frames", "trend", "STATIC_THRESHOLD", "GROWTH_RATIO", "SETTLE_FACTOR", "HOLD",
           "PYTORCH_SETTLE"]

STATIC_THRESHOLD = 2.0 / 255.0  # a pixel is static when no RGB channel moved more than this since the last frame
GROWTH_RATIO = 1.5  # "grows": positive slope and last-quarter mean MAD > 1.5 x first-quarter mean
SETTLE_FACTOR = 2.0  # settled level = 2 x the median per-frame MAD of the drift segment
HOLD = 5  # frames in a row at or below the level that count as recovered
PYTORCH_SETTLE = 1e-3  # alpha MAD at which two PyTorch runs count as agreeing again (context figure)


class EventStream:
    """A :class:`~rvm_export.core.runner.Stream` decorator: resets ``inner`` before the steps in ``resets`` and
    pools the alpha flicker over static pixels (module docstring) for steps before ``until``, skipping ``skip``.

    Keeps the last outputs and, where ``inner`` has ``states`` (the PyTorch reference), the states it had before
    the last step (what :class:`_Shadow` starts from)."""

    def __init__(self, inner, resets: Iterable[int] = (), skip: Iterable[int] = (), until: int | None = None) -> None:
        self.inner, self.resets, self.skip, self.until = inner, frozenset(resets), frozenset(skip), until
        self.reset()

    def reset(self) -> None:
        self.inner.reset()
        self.t = 0
        self._src: np.ndarray | None = None
        self._pha: np.ndarray | None = None
        self.last_outputs: Mapping[str, np.ndarray] = {}
        self.states_before: list | None = None
        self.flicker: list[float] = []  # per frame; NaN where nothing was static or the frame was skipped
        self.flicker_sum = 0.0
        self.static_pixels = 0

    def step(self, src: np.ndarray) -> Mapping[str, np.ndarray]:
        self.states_before = getattr(self.inner, "states", None)
        if self.t in self.resets:
            self.inner.reset()
        outputs = self.last_outputs = self.inner.step(src)
        pha = np.asarray(outputs["pha"], np.float32)[0, 0]
        value = float("nan")
        counted = self.until is None or self.t < self.until
        if counted and self._src is not None and self.t not in self.skip and self.t not in self.resets:
            static = (np.abs(src[0] - self._src[0]) <= STATIC_THRESHOLD).all(axis=0)
            n = int(static.sum())
            if n:
                total = float(np.abs(pha - self._pha)[static].sum())
                self.flicker_sum += total
                self.static_pixels += n
                value = total / n
        if counted:
            self.flicker.append(value)
        self._src, self._pha = np.array(src, np.float32, copy=True), pha.copy()
        self.t += 1
        return outputs

    @property
    def mean_flicker(self) -> float:
        """Pooled mean |pha_t - pha_{t-1}| over every static pixel counted; NaN when none was."""
        return self.flicker_sum / self.static_pixels if self.static_pixels else float("nan")


class _Shadow:
    """The settling context of one event: a PyTorch copy that repeats the reference (no work) before ``start`` and
    from ``end`` on, and steps on its own in between, starting at ``start`` from zero states (``fresh``: it never
    saw the scene before the cut) or from the reference's states before its reset (it is not reset)."""

    def __init__(self, model, bucket: Bucket, reference: EventStream, start: int, end: int, fresh: bool) -> None:
        self.model, self.bucket, self.reference = model, bucket, reference
        self.start, self.end, self.fresh = start, end, fresh
        self.reset()

    def reset(self) -> None:
        self.t = 0
        self.own: TorchStream | None = None

    def step(self, src: np.ndarray) -> Mapping[str, np.ndarray]:
        t, self.t = self.t, self.t + 1
        if t < self.start or t >= self.end:
            return self.reference.last_outputs
        if self.own is None:
            self.own = TorchStream(self.model, self.bucket)
            if not self.fresh and self.reference.states_before is not None:
                self.own.states = list(self.reference.states_before)
        return self.own.step(src)


def recovery_frames(errors: Sequence[float], level: float, hold: int = HOLD) -> int | None:
    """Frames from the start of ``errors`` until ``hold`` consecutive values are ``<= level`` (0: never above);
    None when that never happens within ``errors``."""
    run = 0
    for index, value in enumerate(errors):
        run = run + 1 if value <= level else 0
        if run >= hold:
            return index + 1 - hold
    if 0 < run == len(errors):
        return 0
    return None


def trend(values: Sequence[float]) -> dict[str, Any]:
    """Least-squares slope of ``values`` (per 1000 frames), first- and last-quarter means, their ratio and whether
    the series *grows* (positive slope and last quarter > GROWTH_RATIO x first)."""
    v = np.asarray(values, np.float64)
    if len(v) < 4:
        return {"slope_per_1000": 0.0, "first_quarter": float(v.mean()) if len(v) else 0.0,
                "last_quarter": float(v.mean()) if len(v) else 0.0, "last_over_first": 1.0, "grows": False}
    slope = float(np.polyfit(np.arange(len(v)), v, 1)[0]) * 1000.0
    quarter = max(1, len(v) // 4)
    first, last = float(v[:quarter].mean()), float(v[-quarter:].mean())
    ratio = last / first if first > 0 else (1.0 if last == 0 else float("inf"))
    return {"slope_per_1000": slope, "first_quarter": first, "last_quarter": last, "last_over_first": ratio,
            "grows": bool(slope > 0 and ratio > GROWTH_RATIO)}


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _nan_to_none(values: Sequence[float]) -> list[float | None]:
    return [_finite(v) for v in values]


@dataclass
class TemporalReport:
    """The temporal figures of one artifact over one source at one bucket (module docstring)."""

    target: str
    artifact: str
    precision: str
    bucket: Bucket
    source: str
    label: str
    bound: TemporalTolerance
    frames: int
    drift_frames: int
    pha_mad: list[float]  # per frame, whole source
    pha_max: list[float]  # per frame, whole source
    flicker: list[float]  # per frame of the drift segment (artifact)
    flicker_reference: list[float]  # per frame of the drift segment (PyTorch)
    mean_flicker: float
    mean_flicker_reference: float
    static_fraction: float  # share of pixel-frames of the drift segment counted as static
    events: list[dict[str, Any]]  # {kind, frame, window, level, recovery_frames, pytorch_settle_frames}
    settle_curves: dict[str, list[float]] = field(default_factory=dict)  # "cut@N" -> PyTorch vs PyTorch MAD
    runtime_error: str | None = None

    @property
    def drift(self) -> dict[str, Any]:
        return trend(self.pha_mad[:self.drift_frames])

    @property
    def level(self) -> float:
        """The settled level recovery is measured against."""
        drift = self.pha_mad[:self.drift_frames]
        median = float(np.median(drift)) if drift else 0.0
        return max(SETTLE_FACTOR * median, self.bound.level_floor)

    @property
    def flicker_excess(self) -> float:
        return self.mean_flicker - self.mean_flicker_reference

    def failures(self) -> list[str]:
        """Every bound this report exceeds, one sentence each (empty when it passes)."""
        b = self.bound
        out = [f"runtime error: {self.runtime_error}"] if self.runtime_error else []
        if self.drift_frames and not np.all(np.isfinite(self.pha_mad[:self.drift_frames])):
            out.append("non-finite alpha error")
        slope = self.drift["slope_per_1000"]
        if b.drift_slope is not None and not slope <= b.drift_slope:
            out.append(f"drift: pha MAD slope {slope:.2e} per 1000 frames > {b.drift_slope:.0e} over "
                       f"{self.drift_frames} frames of {self.source}")
        excess = self.flicker_excess
        if b.flicker_excess is not None and np.isfinite(excess) and not excess <= b.flicker_excess:
            out.append(f"flicker: {self.mean_flicker:.2e} vs PyTorch {self.mean_flicker_reference:.2e} in static "
                       f"regions (excess {excess:.2e} > {b.flicker_excess:.0e}) on {self.source}")
        for event in self.events:
            got = event["recovery_frames"]
            if b.recovery_frames is not None and (got is None or got > b.recovery_frames):
                shown = f"> {event['window']}" if got is None else str(got)
                out.append(f"recovery after the {event['kind']} at frame {event['frame']}: {shown} frames to get back "
                           f"to {event['level']:.1e} > {b.recovery_frames} on {self.source}")
        return out

    @property
    def passed(self) -> bool:
        return not self.failures()

    def to_dict(self, per_frame: bool = False) -> dict[str, Any]:
        drift_mad = np.asarray(self.pha_mad[:self.drift_frames], np.float64)
        out: dict[str, Any] = {
            "source": self.source, "bucket": self.bucket.label, "frames": self.frames,
            "drift_frames": self.drift_frames, "checked_with": self.label, "passed": self.passed,
            "pha_mad": float(drift_mad.mean()) if len(drift_mad) else None,
            "pha_max": float(np.max(self.pha_max[:self.drift_frames])) if self.drift_frames else None,
            "drift": self.drift, "flicker": _finite(self.mean_flicker),
            "flicker_pytorch": _finite(self.mean_flicker_reference), "flicker_excess": _finite(self.flicker_excess),
            "flicker_ratio": (self.mean_flicker / self.mean_flicker_reference
                              if self.mean_flicker_reference > 0 else None),
            "static_fraction": self.static_fraction, "settled_level": self.level, "events": self.events,
            "bound": self.bound.to_dict(), "failures": self.failures(),
            "rules": {"static_threshold": STATIC_THRESHOLD, "growth_ratio": GROWTH_RATIO,
                      "settle_factor": SETTLE_FACTOR, "hold": HOLD, "pytorch_settle": PYTORCH_SETTLE},
        }
        if per_frame:
            out.update(per_frame_pha_mad=_nan_to_none(self.pha_mad), per_frame_flicker=_nan_to_none(self.flicker),
                       per_frame_flicker_pytorch=_nan_to_none(self.flicker_reference))
        return out


def measure_temporal(model, candidates: Sequence[tuple[Any, str, Any]], source: Source, bucket: Bucket,
                     progress: bool = False) -> list[TemporalReport]:
    """Roll PyTorch and every candidate over ``source`` in lockstep and return one report per candidate.

    ``candidates``: ``(artifact, label, stream)``: an :class:`~rvm_export.core.request.Artifact` (target, name,
    precision: they pick the bounds), how it runs (the runner's label) and an open stream at ``bucket``. Both sides
    reset before each ``reset`` event; one PyTorch copy per event gives the settling context (module docstring). A
    candidate whose runtime raises keeps the frames it did and is reported with its error."""
    drift_end, resets = source.drift_frames, source.resets
    skip = frozenset(e.frame for e in source.events)

    def wrap(stream):
        return EventStream(stream, resets, skip, drift_end)

    reference = wrap(TorchStream(model, bucket))
    rows: list[tuple[ParityReport, Any]] = []
    for artifact, _, stream in candidates:
        tol = tolerance_for(artifact.target, str(artifact.precision), artifact.spec.refiner)
        rows.append((ParityReport(artifact.target, artifact.name, str(artifact.precision), bucket, "", tol),
                     wrap(stream)))
    starts = sorted(e.frame for e in source.events)
    context: dict[str, int] = {}
    fp32 = tolerance_for("*", "fp32")
    for event in source.events:
        end = min([s for s in starts if s > event.frame] + [source.length])
        context[f"{event.kind}@{event.frame}"] = len(rows)
        rows.append((ParityReport("pytorch", "pytorch", "fp32", bucket, "", fp32),
                     _Shadow(model, bucket, reference, event.frame, end, fresh=event.kind == "cut")))
    errors = compare_many(reference, rows, source.frames(), progress=progress)

    reports = []
    for index, (artifact, label, _) in enumerate(candidates):
        parity, wrapped = rows[index]
        mad = list(parity.errors["pha"].mean_abs) if "pha" in parity.errors else []
        mx = list(parity.errors["pha"].max_abs) if "pha" in parity.errors else []
        counted = reference.static_pixels
        report = TemporalReport(
            artifact.target, artifact.name, str(artifact.precision), bucket, source.name, label,
            temporal_tolerance_for(artifact.target, str(artifact.precision)), len(mad), min(drift_end, len(mad)),
            mad, mx, wrapped.flicker, reference.flicker, wrapped.mean_flicker, reference.mean_flicker,
            counted / max(1, min(drift_end, len(mad)) * bucket.width * bucket.height), [],
            runtime_error=errors.get(index))
        level = report.level
        for event in source.events:
            end = min([s for s in starts if s > event.frame] + [len(mad)])
            window = mad[event.frame:end]
            settle_report = rows[context[f"{event.kind}@{event.frame}"]][0]
            settle = (settle_report.errors["pha"].mean_abs[event.frame:end] if "pha" in settle_report.errors else [])
            report.settle_curves[f"{event.kind}@{event.frame}"] = list(settle)
            report.events.append({
                "kind": event.kind, "frame": event.frame, "window": end - event.frame, "level": level,
                "recovery_frames": recovery_frames(window, level) if window else None,
                "peak_pha_mad": float(max(window)) if window else None,
                "pytorch_settle_frames": recovery_frames(settle, PYTORCH_SETTLE) if len(settle) else None})
        reports.append(report)
    return reports


def recovery_text(events: Sequence[Mapping[str, Any]], kind: str) -> str:
    """``"3 (8)"`` per event of ``kind``: the artifact's recovery frames and, in brackets, PyTorch's own settling;
    ``> W`` when it did not happen within the event's window of W frames; ``-`` without such an event."""
    def frames(value: int | None, window: int) -> str:
        return f"> {window}" if value is None else str(value)
    return ", ".join(f"{frames(e['recovery_frames'], e['window'])} ({frames(e['pytorch_settle_frames'], e['window'])})"
                     for e in events if e["kind"] == kind) or "-"


def temporal_row(report: TemporalReport) -> dict[str, Any]:
    """The figures one table row shows (report.md, the benchmark's table)."""
    d = report.to_dict()
    return {"pha_mad": d["pha_mad"], "pha_max": d["pha_max"], "slope": d["drift"]["slope_per_1000"],
            "ratio": d["drift"]["last_over_first"], "grows": d["drift"]["grows"], "flicker": d["flicker"],
            "flicker_pytorch": d["flicker_pytorch"], "excess": d["flicker_excess"],
            "cut": recovery_text(d["events"], "cut"), "reset": recovery_text(d["events"], "reset"),
            "passed": d["passed"]}


def summary_line(report: TemporalReport) -> str:
    """One line of a report's figures and verdict (the CLI's progress and ``verify`` output)."""
    r = temporal_row(report)
    flicker = "-" if r["flicker"] is None else f"{r['flicker']:.2e} (PyTorch {r['flicker_pytorch']:.2e})"
    verdict = "pass" if r["passed"] else "FAIL: " + "; ".join(report.failures())
    return (f"pha MAD {r['pha_mad']:.2e}, slope {r['slope']:+.1e}/1000 frames, flicker {flicker}, recovery "
            f"(PyTorch) cut {r['cut']}, reset {r['reset']}: {verdict}")


def check_temporal(model, records, frames: int, clips: Sequence[Path] = (), seed: int = 0,
                   window: int = DEFAULT_WINDOW, progress: bool = False,
                   say: Callable[[str], None] | None = None, clip_frames: int | None = None,
                   loop_clips: bool = True) -> None:
    """The temporal figures of every record that has a runner, per bucket it serves: the generated source
    (``frames`` + 2 x ``window`` frames) and each clip in ``clips`` (its first ``clip_frames``; None: all; played
    back and forth to ``frames`` frames when shorter, unless ``loop_clips`` is false), all
    artifacts in lockstep with one PyTorch pass per source. Appends :class:`TemporalReport` objects to
    ``record.temporal``; a runtime that cannot open a stream there adds an error line to ``record.errors`` (as
    :func:`rvm_export.parity.check_parity` does)."""
    from rvm_export.core.errors import RvmExportError

    say = say or (lambda message: None)
    buckets: list[Bucket] = []
    for record in records:
        buckets += [b for b in record.artifact.buckets if b not in buckets]
    for bucket in buckets:
        owners = [r for r in records if r.runner is not None and bucket in r.artifact.buckets]
        if not owners:
            continue
        sources = [generated_source(bucket, frames, seed, window)]
        sources += [clip_source(c, bucket, clip_frames, frames if loop_clips else None) for c in clips]
        for source in sources:
            candidates, kept = [], []
            for record in owners:
                try:
                    candidates.append((record.artifact, record.runner.label, record.runner.stream(bucket)))
                    kept.append(record)
                except RvmExportError as exc:
                    record.errors.append(f"cannot run at {bucket.label}: {exc}")
            if not candidates:
                continue
            say(f"temporal at {bucket.label}: {len(candidates)} artifact(s) x {source.name}")
            for record, report in zip(kept, measure_temporal(model, candidates, source, bucket, progress)):
                record.temporal.append(report)
                say(f"  {record.artifact.name}: {summary_line(report)}")
