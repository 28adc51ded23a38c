"""Rollout parity: run PyTorch and an artifact over the same frames, each feeding back its own states.

Per frame and per output (states too) we record max and mean absolute error; per output the worst frame and the
drift over the clip; overall the alpha-quality figures (pha MAD, fgr MAD where alpha > 0). Pass/fail comes from the
tolerance table alone. Failures are collected, then raised together as one typed error.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from .errors import OutputMatchError, ParityError, ShapeError, ToleranceError
from .spec import FRAME_OUTPUTS, STATE_OUTPUTS, Bucket
from .tolerances import Tolerance

__all__ = ["ParityReport", "OutputErrors", "compare_rollout", "compare_many", "compare_outputs"]


@dataclass
class OutputErrors:
    name: str
    max_abs: list[float] = field(default_factory=list)  # per frame
    mean_abs: list[float] = field(default_factory=list)  # per frame

    @property
    def worst(self) -> tuple[float, int]:
        index = int(np.argmax(self.max_abs))
        return self.max_abs[index], index

    @property
    def drift(self) -> dict[str, float | None]:
        """Slope of the per-frame max error (per frame) and the mean error of the last quarter over the first."""
        values = np.asarray(self.max_abs, dtype=np.float64)
        if len(values) < 4:
            return {"slope_per_frame": 0.0, "last_over_first": 1.0}
        slope = float(np.polyfit(np.arange(len(values)), values, 1)[0])
        quarter = max(1, len(values) // 4)
        first = float(np.mean(self.mean_abs[:quarter]))
        last = float(np.mean(self.mean_abs[-quarter:]))
        ratio = last / first if first > 0 else (1.0 if last == 0 else None)
        return {"slope_per_frame": slope, "last_over_first": ratio}


@dataclass
class ParityReport:
    target: str
    artifact: str
    precision: str
    bucket: Bucket
    label: str  # how the candidate was run ("ONNX Runtime ... CPU", "MIL program check, not the Apple runtime")
    tolerance: Tolerance
    errors: dict[str, OutputErrors] = field(default_factory=dict)
    frames: int = 0
    pha_mad_sum: float = 0.0
    fgr_mad_sum: float = 0.0
    structural: list[str] = field(default_factory=list)  # missing outputs / wrong shapes

    # -- accumulation -----------------------------------------------------------------------------------------
    def add_frame(self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> None:
        index = self.frames
        for name in (*FRAME_OUTPUTS, *STATE_OUTPUTS):
            if name not in reference:
                continue
            if name not in candidate:
                if name in FRAME_OUTPUTS and not any(name in m for m in self.structural):
                    self.structural.append(f"{name}: missing from the artifact's outputs")
                continue
            ref = np.asarray(reference[name], dtype=np.float32)
            got = np.asarray(candidate[name], dtype=np.float32)
            if ref.shape != got.shape:
                if not any(m.startswith(name + ":") for m in self.structural):
                    self.structural.append(f"{name}: shape {list(got.shape)} at frame {index}, "
                                           f"PyTorch gives {list(ref.shape)}")
                continue
            diff = np.abs(got - ref)
            if not np.all(np.isfinite(got)):
                diff = np.where(np.isfinite(got), diff, np.inf)
            entry = self.errors.setdefault(name, OutputErrors(name))
            entry.max_abs.append(float(diff.max()))
            entry.mean_abs.append(float(diff.mean()))
        if "pha" in self.errors and "fgr" in self.errors and len(self.errors["pha"].mean_abs) == index + 1:
            ref_pha = np.asarray(reference["pha"], dtype=np.float32)
            self.pha_mad_sum += self.errors["pha"].mean_abs[-1]
            mask = np.broadcast_to(ref_pha > 0, reference["fgr"].shape)
            fgr_diff = np.abs(np.asarray(candidate["fgr"], np.float32) - np.asarray(reference["fgr"], np.float32))
            self.fgr_mad_sum += float(fgr_diff[mask].mean()) if mask.any() else 0.0
        self.frames += 1

    # -- verdict ----------------------------------------------------------------------------------------------
    @property
    def pha_mad(self) -> float:
        return self.pha_mad_sum / max(1, self.frames)

    @property
    def fgr_mad(self) -> float:
        return self.fgr_mad_sum / max(1, self.frames)

    def failures(self) -> list[str]:
        tol = self.tolerance
        problems = list(self.structural)
        for name, entry in self.errors.items():
            bound = tol.frame_max if name in FRAME_OUTPUTS else tol.state_max
            value, frame = entry.worst
            if bound is not None and not value <= bound:
                problems.append(f"{name}: max abs error {value:.3g} at frame {frame} exceeds {bound:g}")
        if tol.pha_mad is not None and not self.pha_mad <= tol.pha_mad:
            problems.append(f"pha: mean abs error {self.pha_mad:.3g} over {self.frames} frames exceeds {tol.pha_mad:g}")
        if tol.fgr_mad is not None and not self.fgr_mad <= tol.fgr_mad:
            problems.append(f"fgr: mean abs error where alpha > 0 {self.fgr_mad:.3g} exceeds {tol.fgr_mad:g}")
        return problems

    @property
    def passed(self) -> bool:
        return not self.failures()

    @property
    def max_abs(self) -> float:
        """Largest error of any output on any frame."""
        return max((e.worst[0] for e in self.errors.values()), default=float("nan"))

    def raise_if_failed(self) -> None:
        problems = self.failures()
        if not problems:
            return
        head = f"{self.target} {self.artifact} ({self.precision}) at {self.bucket.label}, {self.label}: "
        if self.structural:
            cls: type[ParityError] = ShapeError if any("shape" in p for p in self.structural) else OutputMatchError
        else:
            cls = ToleranceError
        raise cls(head + "; ".join(problems))

    def to_dict(self, per_frame: bool = False) -> dict[str, Any]:
        worst = {}
        for name, entry in self.errors.items():
            value, frame = entry.worst
            worst[name] = {"max_abs": value, "frame": frame, "mean_abs": float(np.mean(entry.mean_abs)),
                           "drift": entry.drift}
        out: dict[str, Any] = {
            "bucket": self.bucket.label, "frames": self.frames, "checked_with": self.label,
            "passed": self.passed, "max_abs": self.max_abs, "pha_mad": self.pha_mad, "fgr_mad": self.fgr_mad,
            "tolerance": self.tolerance.to_dict(), "outputs": worst, "failures": self.failures(),
        }
        if per_frame:
            out["per_frame_max_abs"] = {n: e.max_abs for n, e in self.errors.items()}
        return out


def compare_outputs(reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Max abs error per shared output of one call (used by single-frame checks and tests)."""
    return {k: float(np.abs(np.asarray(candidate[k], np.float32) - np.asarray(reference[k], np.float32)).max())
            for k in reference if k in candidate}


def compare_rollout(reference, candidate, frames: Iterable[np.ndarray], *, target: str, artifact: str,
                    precision: str, bucket: Bucket, label: str, tolerance: Tolerance,
                    progress: bool = False) -> ParityReport:
    """Step both :class:`~targets.base.Stream` objects through ``frames`` from zero states and compare."""
    report = ParityReport(target, artifact, str(precision), bucket, label, tolerance)
    compare_many(reference, [(report, candidate)], frames, progress=progress)
    return report


def compare_many(reference, candidates: list[tuple[ParityReport, Any]], frames: Iterable[np.ndarray],
                 progress: bool = False) -> dict[int, str]:
    """Advance one reference stream and several candidate streams in lockstep (the reference runs once per frame).

    A candidate whose ``step`` raises is dropped from the rest of the rollout; returns ``{index: error}`` for those.
    """
    reference.reset()
    for _, stream in candidates:
        stream.reset()
    errors: dict[int, str] = {}
    iterator = frames
    if progress:
        from tqdm import tqdm

        bucket = candidates[0][0].bucket.label if candidates else ""
        iterator = tqdm(frames, desc=f"parity {bucket}", unit="frame", leave=False)
    for frame in iterator:
        expected = reference.step(frame)
        for index, (report, stream) in enumerate(candidates):
            if index in errors:
                continue
            try:
                report.add_frame(expected, stream.step(frame))
            except Exception as exc:  # a runtime failing mid-rollout is a parity failure, reported with its cause
                errors[index] = f"{type(exc).__name__} at frame {report.frames}: {exc}"
                report.structural.append(f"runtime error at frame {report.frames}: {exc}")
    return errors
