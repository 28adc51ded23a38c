"""Rollout parity: run PyTorch and an artifact over the same frames, each feeding back its own states.

Per frame and per output (states too) we record max and mean absolute error; per output the worst frame and the
drift over the clip; overall the alpha-quality figures (pha MAD, fgr MAD where alpha > 0). Pass/fail comes from the
tolerance table alone. Failures are typed (:class:`~rvm_export.core.errors.ParityFailure`), collected, then raised
together as one typed error. A runtime that raises while stepping is a failure of that artifact; an exception that
can only be a bug (:data:`~rvm_export.core.errors.PROGRAMMING_ERRORS`) propagates.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import (PROGRAMMING_ERRORS, OutputMatchError, ParityError, ParityFailure, RvmExportError,
                                    ShapeError, ToleranceError)
from rvm_export.core.names import FRAME_OUTPUTS, STATE_OUTPUTS
from rvm_export.core.rollout import MovingScene, TorchStream

from .tolerances import Tolerance, tolerance_for

__all__ = ["ParityReport", "OutputErrors", "compare_rollout", "compare_many", "check_parity"]


@dataclass
class OutputErrors:
    """Per-frame max and mean abs error of one output over a rollout."""
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
    """The comparison of one artifact with PyTorch at one bucket over a rollout."""

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
    structural: list[ParityFailure] = field(default_factory=list)  # missing outputs, wrong shapes, runtime errors
    accelerator: str | None = None  # the Placement.check this rollout ran on (None: the artifact's own runtime)

    # -- accumulation -----------------------------------------------------------------------------------------
    def add_frame(self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray]) -> None:
        """Compare one frame's outputs (NCHW float arrays, contract names); states are compared where present."""
        index = self.frames
        for name in (*FRAME_OUTPUTS, *STATE_OUTPUTS):
            if name not in reference:
                continue
            if name not in candidate:
                if name in FRAME_OUTPUTS and not any(f.output == name for f in self.structural):
                    self.structural.append(ParityFailure("missing_output", name))
                continue
            ref = np.asarray(reference[name], dtype=np.float32)
            got = np.asarray(candidate[name], dtype=np.float32)
            if ref.shape != got.shape:
                if not any(f.output == name for f in self.structural):
                    self.structural.append(ParityFailure(
                        "shape", name, frame=index,
                        detail=f"{list(got.shape)} at frame {index}, PyTorch gives {list(ref.shape)}"))
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

    def add_runtime_error(self, exc: BaseException) -> None:
        """The candidate's runtime raised at the current frame: a failure of this artifact."""
        self.structural.append(ParityFailure("runtime", frame=self.frames, detail=f"{type(exc).__name__}: {exc}"))

    # -- verdict ----------------------------------------------------------------------------------------------
    @property
    def pha_mad(self) -> float:
        """Mean abs alpha error over the rollout (alpha in [0, 1])."""
        return self.pha_mad_sum / max(1, self.frames)

    @property
    def fgr_mad(self) -> float:
        """Mean abs foreground error where the reference alpha > 0, averaged over frames."""
        return self.fgr_mad_sum / max(1, self.frames)

    def failure_list(self) -> list[ParityFailure]:
        """Every reason this artifact fails its tolerance (empty when it passes)."""
        tol = self.tolerance
        problems = list(self.structural)
        for name, entry in self.errors.items():
            bound = tol.frame_max if name in FRAME_OUTPUTS else tol.state_max
            value, frame = entry.worst
            if bound is not None and not value <= bound:
                problems.append(ParityFailure("tolerance", name, value, bound, frame))
        if tol.pha_mad is not None and not self.pha_mad <= tol.pha_mad:
            problems.append(ParityFailure("tolerance", "pha", self.pha_mad, tol.pha_mad, statistic="mean abs",
                                          detail=f" over {self.frames} frames"))
        if tol.fgr_mad is not None and not self.fgr_mad <= tol.fgr_mad:
            problems.append(ParityFailure("tolerance", "fgr", self.fgr_mad, tol.fgr_mad,
                                          statistic="mean abs where alpha > 0"))
        return problems

    def failures(self) -> list[str]:
        """:meth:`failure_list` as one sentence each (for messages and the report)."""
        return [str(f) for f in self.failure_list()]

    @property
    def passed(self) -> bool:
        return not self.failure_list()

    @property
    def max_abs(self) -> float:
        """Largest error of any output on any frame."""
        return max((e.worst[0] for e in self.errors.values()), default=float("nan"))

    def raise_if_failed(self) -> None:
        """Raise OutputMatchError / ShapeError / ToleranceError (all ParityError) listing every failure."""
        problems = self.failure_list()
        if not problems:
            return
        head = f"{self.target} {self.artifact} ({self.precision}) at {self.bucket.label}, {self.label}: "
        kinds = {f.kind for f in problems}
        cls: type[ParityError] = (ShapeError if "shape" in kinds else OutputMatchError
                                  if kinds & {"missing_output", "runtime"} else ToleranceError)
        raise cls(head + "; ".join(map(str, problems)), tuple(problems))

    def to_dict(self, per_frame: bool = False) -> dict[str, Any]:
        worst = {}
        for name, entry in self.errors.items():
            value, frame = entry.worst
            worst[name] = {"max_abs": value, "frame": frame, "mean_abs": float(np.mean(entry.mean_abs)),
                           "drift": entry.drift}
        problems = self.failure_list()
        out: dict[str, Any] = {
            "bucket": self.bucket.label, "frames": self.frames, "checked_with": self.label,
            "passed": not problems, "max_abs": self.max_abs, "pha_mad": self.pha_mad, "fgr_mad": self.fgr_mad,
            "tolerance": self.tolerance.to_dict(), "outputs": worst, "failures": [str(f) for f in problems],
            "failure_details": [f.to_dict() for f in problems],
        }
        if self.accelerator:
            out["accelerator"] = self.accelerator
        if per_frame:
            out["per_frame_max_abs"] = {n: e.max_abs for n, e in self.errors.items()}
        return out


def compare_rollout(reference, candidate, frames: Iterable[np.ndarray], *, target: str, artifact: str,
                    precision: str, bucket: Bucket, label: str, tolerance: Tolerance,
                    progress: bool = False) -> ParityReport:
    """Step both :class:`~rvm_export.core.runner.Stream` objects through ``frames`` from zero states and compare."""
    report = ParityReport(target, artifact, str(precision), bucket, label, tolerance)
    compare_many(reference, [(report, candidate)], frames, progress=progress)
    return report


def compare_many(reference, candidates: list[tuple[ParityReport, Any]], frames: Iterable[np.ndarray],
                 progress: bool = False) -> dict[int, str]:
    """Advance one reference stream and several candidate streams in lockstep (the reference runs once per frame).

    A candidate whose ``step`` raises is dropped from the rest of the rollout, its report records the runtime
    failure, and ``{index: error}`` is returned for those. Programming errors (PROGRAMMING_ERRORS) propagate.
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
                outputs = stream.step(frame)
            except PROGRAMMING_ERRORS:
                raise
            except Exception as exc:  # the runtime refused or failed mid-rollout: this artifact fails parity
                errors[index] = f"{type(exc).__name__} at frame {report.frames}: {exc}"
                report.add_runtime_error(exc)
                continue
            report.add_frame(expected, outputs)
    return errors


def _accelerator_runners(records, say) -> dict[int, list[tuple[Any, Any]]]:
    """{id(record): [(placement, runner)]} for every placement that offers a loader; a loader's documented refusal
    becomes an error of that record."""
    out: dict[int, list[tuple[Any, Any]]] = {}
    for record in records:
        for placement in record.placements:
            if placement.load is None:
                continue
            try:
                out.setdefault(id(record), []).append((placement, placement.load()))
            except RvmExportError as exc:
                record.errors.append(f"cannot load on {placement.check}: {exc}")
                say(f"  {record.artifact.name}: cannot load on {placement.check}: {exc}")
    return out


def check_parity(model, records, frames: int, seed: int = 0, progress: bool = False,
                 say: Callable[[str], None] | None = None) -> None:
    """Check every record that has a runner, per bucket: one PyTorch reference pass, every artifact in lockstep.

    ``records``: :class:`~rvm_export.report.ArtifactRecord` objects; each gets a ParityReport per bucket it serves,
    and an error line when its runner cannot open a stream there (a documented RvmExportError) or fails mid-rollout.
    A record's placements that can run the model (``Placement.load``: e.g. LiteRT's GPU accelerator) get their own
    report in the same pass, judged by ``tolerance_for(placement.tolerance_key, precision)``; a failure there fails
    the artifact like any other. ``frames``: rollout length; ``seed``: the generated scene's seed."""
    say = say or (lambda message: None)
    buckets: list[Bucket] = []
    for record in records:
        buckets += [b for b in record.artifact.buckets if b not in buckets]
    accelerated = _accelerator_runners(records, say)
    for bucket in buckets:
        candidates: list[tuple[ParityReport, Any]] = []
        owners = []
        for record in records:
            if bucket not in record.artifact.buckets:
                continue
            a = record.artifact
            runs = [] if record.runner is None else [
                (record.runner, tolerance_for(a.target, str(a.precision), a.spec.refiner), None)]
            runs += [(runner, tolerance_for(p.tolerance_key, str(a.precision), a.spec.refiner), p.check)
                     for p, runner in accelerated.get(id(record), [])]
            for runner, tolerance, accelerator in runs:
                report = ParityReport(a.target, a.name, str(a.precision), bucket, runner.label, tolerance,
                                      accelerator=accelerator)
                try:
                    candidates.append((report, runner.stream(bucket)))
                    owners.append(record)
                except RvmExportError as exc:
                    record.errors.append(f"cannot run at {bucket.label} ({runner.label}): {exc}")
                    say(f"  {record.artifact.name}: cannot run at {bucket.label} ({runner.label}): {exc}")
        if not candidates:
            continue
        say(f"parity at {bucket.label}: {len(candidates)} artifact(s) x {frames} frames vs PyTorch fp32")
        scene = MovingScene(bucket.width, bucket.height, frames, seed=seed)
        errors = compare_many(TorchStream(model, bucket), candidates, scene, progress=progress)
        for index, (record, (report, _)) in enumerate(zip(owners, candidates)):
            record.parity.append(report)
            if index in errors:
                record.errors.append(f"runtime error during parity at {bucket.label}: {errors[index]}")
            verdict = "pass" if report.passed else "FAIL: " + "; ".join(report.failures())
            say(f"  {record.artifact.name}: max abs {report.max_abs:.2e}, pha MAD {report.pha_mad:.2e} "
                f"[{report.label}] {verdict}")
