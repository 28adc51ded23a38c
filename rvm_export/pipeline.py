"""The export job: plan and validate every request up front (from each target's typed description), load the model,
export each (target, precision), check parity over a rollout at each bucket (one PyTorch reference pass per bucket,
all artifacts in lockstep), benchmark side by side, write the manifest and the report.

Only documented errors become a row of the report: a converter's ExportFailedError (or a converter library's own
exception) fails that (target, precision); a runtime's refusal fails that artifact. An exception that can only be a
bug (:data:`~rvm_export.core.errors.PROGRAMMING_ERRORS`) propagates with its traceback.
"""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from model import CheckpointError, load_checkpoint
from rvm_export.core.args import MAX_FRAMES, MAX_GOLDEN_FRAMES, MAX_TEMPORAL_FRAMES
from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import (PROGRAMMING_ERRORS, ExitCode, InputError, MissingRuntimeError, RvmExportError,
                                    UsageError)
from rvm_export.core.metadata import sha256_file, weights_sha256
from rvm_export.core.names import DEFAULT_OPSET
from rvm_export.core.request import ExportRequest, RuntimeOptions
from rvm_export.core.spec import Layout, Precision
from targets import REGISTRY, all_targets, get_target

from .bench import BenchEntry, bench_side_by_side
from .default_model import UNTRAINED_WARNING, seeded_default_model
from .outdir import OutputFolder
from .parity import check_parity
from .preflight import check_resources
from .report import STATUS_UNCHECKED, ArtifactRecord, Failure, write_outputs

__all__ = ["RunConfig", "RunResult", "PlannedExport", "run_export", "load_model", "resolve_targets", "plan_export"]

log = logging.getLogger("rvm_export")
RATIO_MODES = ("auto", "dynamic", "fixed")


@dataclass(frozen=True)
class RunConfig:
    """Everything one export run is asked for; raises UsageError for a value no run can take."""
    targets: tuple[str, ...]  # registry names, "all" already expanded
    out_dir: Path  # where artifacts, manifest.json and report.md go
    buckets: tuple[Bucket, ...]  # resolutions x ratios to build (static) or validate (dynamic)
    ratio_mode: str = "auto"  # "auto": dynamic where the target can be at every bucket, else static; "dynamic"; "fixed"
    checkpoint: Path | None = None  # None: the seeded default (untrained) model
    variant: str | None = None  # None: what the checkpoint looks like (mobilenetv3 for the default model)
    refiner: str | None = None  # None: what the checkpoint looks like (deep guided filter for the default model)
    precisions: tuple[str, ...] | None = None  # None: each target's default precision
    layout: Layout = Layout.NCHW  # boundary layout for targets that offer a choice
    opset: int | None = None  # ONNX opset where ONNX is involved; None: DEFAULT_OPSET
    frames: int = 30  # parity rollout length
    bench: bool = True  # measure throughput after parity
    bench_frames: int = 30  # timed frames per artifact and bucket
    threads: int | None = None  # runtime intra-op threads (and PyTorch's); None = runtime default
    device: str = "cpu"  # runtime device for the artifacts (the PyTorch reference always runs fp32 on CPU)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # raw per-target options, parsed in plan
    seed: int = 0  # default-model weights and the generated scene
    progress: bool = True  # progress bars on stderr
    golden_frames: int = 0  # frames of golden inputs/outputs written per bucket for app CI (golden/; 0: none)
    temporal: int = 0  # frames of the generated scene for the temporal figures (rvm_export/temporal.py); 0: off
    temporal_clips: tuple[Path, ...] = ()  # real clips for the temporal figures (resolved: rvm_export.temporal)
    temporal_window: int = 60  # frames after the generated cut and after the reset

    def __post_init__(self) -> None:
        if self.ratio_mode not in RATIO_MODES:
            raise UsageError(f"ratio mode must be auto, dynamic or fixed, got {self.ratio_mode!r}")
        if not str(self.out_dir).strip():
            raise UsageError("--out is an empty path: name a folder ('.' for the current folder)")
        for flag, value, low, high in (("--frames", self.frames, 1, MAX_FRAMES),
                                       ("--bench-frames", self.bench_frames, 1, MAX_FRAMES),
                                       ("--temporal-window", self.temporal_window, 1, MAX_TEMPORAL_FRAMES)):
            if not low <= value <= high:
                raise UsageError(f"{flag} must be in {low} .. {high}, got {value}")
        if not self.buckets:
            raise UsageError("at least one --resolution is needed")
        if not 0 <= self.golden_frames <= MAX_GOLDEN_FRAMES:
            raise UsageError(f"--golden-frames must be in 0 .. {MAX_GOLDEN_FRAMES}, got {self.golden_frames}")
        if self.temporal and not 8 <= self.temporal <= MAX_TEMPORAL_FRAMES:
            raise UsageError(f"--temporal must be 0 (off) or in 8 .. {MAX_TEMPORAL_FRAMES} frames, got {self.temporal}")
        if self.temporal_clips and not self.temporal:
            raise UsageError("--temporal-clip needs --temporal N (the generated rollout's length)")
        if not 0 <= self.seed < 2**32:
            raise UsageError(f"--seed must be in 0 .. 2**32 - 1, got {self.seed}")


@dataclass
class RunResult:
    """What a run produced: its exit code, the manifest written, every artifact record and converter failure."""
    exit_code: int
    manifest: dict[str, Any]
    records: list[ArtifactRecord]
    failures: list[Failure]


@dataclass(frozen=True)
class PlannedExport:
    """One (target, precision) of a run, validated: the target package and its request."""

    name: str
    module: Any  # the target package (rvm_export.core.target.TargetModule)
    request: ExportRequest


def resolve_targets(names: list[str]) -> tuple[str, ...]:
    """Registry names from ``--target`` values (repeatable, comma-separated, ``all``); UsageError for unknown ones."""
    resolved: list[str] = []
    for name in names:
        for part in (p.strip() for p in name.split(",") if p.strip()):
            expanded = all_targets() if part == "all" else (part,)
            for item in expanded:
                get_target(item)  # raises UsageError for an unknown name
                if item not in resolved:
                    resolved.append(item)
    if not resolved:
        raise UsageError("no target given: use --target onnx|openvino|tflite|coreml|cuda|web|all")
    return tuple(resolved)


def load_model(checkpoint: Path | None, variant: str | None, refiner: str | None, seed: int = 0):
    """(model, info for the manifest). A bad checkpoint raises InputError naming the problem."""
    if checkpoint is None:
        print(UNTRAINED_WARNING, file=sys.stderr)
        variant, refiner = variant or "mobilenetv3", refiner or "deep_guided_filter"
        model = seeded_default_model(variant, refiner, seed)
        return model, {"variant": variant, "refiner": refiner, "weights": f"seeded default (seed {seed}), UNTRAINED",
                       "untrained": True, "checkpoint": None, "checkpoint_sha256": None,
                       "weights_sha256": weights_sha256(model.state_dict())}
    try:
        model = load_checkpoint(checkpoint, variant=variant, refiner=refiner)
    except CheckpointError as exc:
        raise InputError(str(exc)) from exc
    return model, {"variant": model.variant, "refiner": model.refiner_name, "weights": str(checkpoint),
                   "untrained": False, "checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint),
                   "weights_sha256": weights_sha256(model.state_dict())}


def check_arguments(config: RunConfig) -> dict[str, Any]:
    """The checks of ``--option``, ``--opset`` and ``--device`` that need no model (run before it is loaded, and again
    by :func:`plan_export`); returns ``{target name: module}``. Raises UsageError."""
    modules = {name: get_target(name) for name in config.targets}
    unknown = sorted(set(config.options) - set(modules))
    if unknown:
        raise UsageError(f"--option for {', '.join(unknown)}, which is not among the targets "
                         f"{', '.join(modules)}")
    if config.opset is not None and not any(m.DESCRIPTION.takes_opset for m in modules.values()):
        raise UsageError(f"--opset applies to targets that convert through ONNX "
                         f"({', '.join(n for n in REGISTRY if get_target(n).DESCRIPTION.takes_opset)}); "
                         f"{', '.join(modules)} take(s) none: drop --opset")
    for name, module in modules.items():
        module.DESCRIPTION.check_device(config.device)
        module.DESCRIPTION.options.parse(name, config.options.get(name, {}))
    return modules


def plan_export(config: RunConfig, variant: str, refiner: str, model_info: Mapping[str, Any]) -> list[PlannedExport]:
    """Every (target, precision) with its validated request, before any work.

    Reads each target's :class:`~rvm_export.core.target.TargetDescription`; parses ``--option`` values once into the
    target's options dataclass. Raises UsageError (exit 2) or MissingRuntimeError (exit 3)."""
    modules = check_arguments(config)
    plan = []
    for name, module in modules.items():  # usage first: a wrong argument is wrong whatever is installed
        description = module.DESCRIPTION
        description.check_device(config.device)
        options = description.options.parse(name, config.options.get(name, {}))
        precisions = ([Precision.parse(p) for p in config.precisions] if config.precisions
                      else [description.default_precision])
        for precision in precisions:
            dynamic = {"dynamic": True, "fixed": False}.get(config.ratio_mode, description.can_be_dynamic(precision)
                                                            and all(b.float32_ratio_agrees for b in config.buckets))
            request = ExportRequest(variant, refiner, config.buckets, dynamic, precision, config.layout,
                                    config.opset or DEFAULT_OPSET, options,
                                    checkpoint_sha256=model_info.get("checkpoint_sha256"),
                                    checkpoint_label=model_info["weights"])
            module.check_request(request)
            plan.append(PlannedExport(name, module, request))
    missing = {name: why for name, module in modules.items() if (why := module.missing(config.device))}
    if missing:
        details = "; ".join(f"{name}: {why}" for name, why in missing.items())
        raise MissingRuntimeError(f"cannot run target {', '.join(missing)}: {details}")
    return plan


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load(record: ArtifactRecord, module, options: RuntimeOptions) -> None:
    try:
        record.runner = module.load(record.artifact, options)
    except MissingRuntimeError as exc:  # a valid file this machine cannot run: not a parity failure
        record.unchecked = str(exc)
        _say(f"  {record.artifact.name}: not checked here: {exc}")
    except RvmExportError as exc:
        record.errors.append(f"cannot load: {exc}")
        _say(f"  {record.artifact.name}: cannot load here: {exc}")


def _where_it_runs(record: ArtifactRecord, module, options: RuntimeOptions) -> None:
    """The target's accelerator checks for one artifact (their parity runs with the others in check_parity)."""
    try:
        record.placements = list(module.where_it_runs(record.artifact, options))
    except RvmExportError as exc:
        record.errors.append(f"accelerator check failed: {exc}")
        _say(f"  {record.artifact.name}: accelerator check failed: {exc}")
        return
    for p in record.placements:
        found = (f"skipped: {p.skipped}" if p.skipped else
                 {True: "whole model", False: "NOT whole", None: "noted"}[p.fully]
                 + (f", {p.placed}/{p.nodes} taken" if p.nodes is not None and p.placed is not None else ""))
        _say(f"  {record.artifact.name}: {p.check}: {found}")


def run_export(config: RunConfig) -> RunResult:
    """Plan, export, check parity, benchmark and write the manifest and report; returns the exit code and records.

    Everything is checked before any work (UsageError/InputError: exit 2; MissingRuntimeError: exit 3), and the run
    writes into a staging folder swapped into ``config.out_dir`` at the end (rvm_export/outdir.py): a failed or
    interrupted run leaves the folder as it was."""
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    if config.checkpoint is not None and not Path(config.checkpoint).is_file():
        raise InputError(f"checkpoint not found: {config.checkpoint}")
    folder = OutputFolder(Path(config.out_dir))  # refuses a folder it cannot write or that holds foreign files
    check_resources(config.buckets)
    if config.temporal_clips:
        from .matte.decode import probe

        for clip in config.temporal_clips:  # a clip that cannot be decoded is refused before any work
            probe(clip)
    check_arguments(config)  # before the model is loaded: a wrong option is wrong whatever the weights
    model, model_info = load_model(config.checkpoint, config.variant, config.refiner, config.seed)
    plan = plan_export(config, model.variant, model.refiner_name, model_info)
    with folder:
        stage = folder.stage
        options = RuntimeOptions(threads=config.threads, device=config.device)
        records: list[ArtifactRecord] = []
        failures: list[Failure] = []
        for item in plan:
            request = item.request
            _say(f"[{item.name} {request.precision}] exporting "
                 f"{'dynamic' if request.dynamic else ', '.join(b.label for b in request.buckets)} ...")
            try:
                artifacts = item.module.export(model, request, stage / item.name)
            except (UsageError, MissingRuntimeError, *PROGRAMMING_ERRORS):
                raise
            except Exception as exc:  # a converter failing is reported per (target, precision); the others still run
                reason = f"{type(exc).__name__}: {exc}"
                _say(f"[{item.name} {request.precision}] FAILED: {reason}")
                failures.append(Failure(item.name, str(request.precision), reason))
                continue
            for artifact in artifacts:
                record = ArtifactRecord(artifact)
                records.append(record)
                _load(record, item.module, options)
                _where_it_runs(record, item.module, replace(options, overrides=request.options))
        check_parity(model, records, config.frames, config.seed, config.progress, _say)
        if config.temporal:
            from .temporal import check_temporal

            check_temporal(model, records, config.temporal, config.temporal_clips, config.seed,
                           config.temporal_window, config.progress, _say)
        if config.golden_frames:
            _golden(model, records, stage, config)
        if config.bench:
            _benchmark(records, config, options)
        settings = {"frames": config.frames, "threads": config.threads, "device": config.device,
                    "bench_frames": config.bench_frames if config.bench else 0, "seed": config.seed,
                    "buckets": [b.label for b in config.buckets], "ratio_mode": config.ratio_mode,
                    "temporal": {"frames": config.temporal, "window": config.temporal_window,
                                 "clips": [str(c) for c in config.temporal_clips]} if config.temporal else None}
        manifest = write_outputs(stage, records, failures, model_info, settings)
        for record in records:
            record.runner = None  # release the files before they move
        folder.commit()
        for record in records:
            record.artifact.path = folder.final / Path(record.artifact.path).relative_to(stage)
            record.artifact.companions = tuple(folder.final / Path(c).relative_to(stage)
                                               for c in record.artifact.companions)
    _say(f"wrote {folder.final / 'manifest.json'} and {folder.final / 'report.md'}")
    unchecked = [r for r in records if r.unchecked and not r.errors]
    failed = [r for r in records if r.status not in ("exported", STATUS_UNCHECKED)]
    if failures:
        code = ExitCode.EXPORT_FAILED
        _say("rvm-export: error: converter failed for " + "; ".join(f"{f.target} {f.precision}: {f.reason}"
                                                                     for f in failures))
    elif failed:
        code = ExitCode.PARITY_FAILED
        _say(f"rvm-export: error: {len(failed)} artifact(s) do not match PyTorch (report.md says why): "
             + ", ".join(r.artifact.name for r in failed))
    elif unchecked:
        code = ExitCode.MISSING_RUNTIME
        _say(f"rvm-export: error: {len(unchecked)} artifact(s) written but not checked against PyTorch here: "
             + "; ".join(f"{r.artifact.name}: {r.unchecked}" for r in unchecked))
    else:
        code = ExitCode.OK
    return RunResult(code, manifest, records, failures)


def _golden(model, records: list[ArtifactRecord], stage: Path, config: RunConfig) -> None:
    """Golden frames per bucket for app CI (rvm_export/golden.py), listing the artifacts that passed there."""
    from .golden import write_golden_frames

    buckets: list[Bucket] = []
    for record in records:
        buckets += [b for b in record.artifact.buckets if b not in buckets]
    for bucket in buckets:
        passed = [r.artifact for r in records if bucket in r.artifact.buckets and r.status == "exported"]
        if passed:
            index = write_golden_frames(stage, model, bucket, config.golden_frames, artifacts=passed, seed=config.seed)
            _say(f"golden frames at {bucket.label}: {config.golden_frames} frame(s), index {index.relative_to(stage)}")


def _benchmark(records: list[ArtifactRecord], config: RunConfig, options: RuntimeOptions) -> None:
    """Per bucket, every artifact valid there side by side in one interleaved run."""
    buckets: list[Bucket] = []
    for record in records:
        buckets += [b for b in record.artifact.buckets if b not in buckets and record.runner is not None]
    for bucket in buckets:
        owners = []
        for record in (r for r in records if r.runner is not None and bucket in r.artifact.buckets):
            why = record.runner.untimed_reason  # a numerics check, not a runtime
            if why:
                record.bench_errors.append(f"not timed at {bucket.label}: {why}")
            else:
                owners.append(record)
        if not owners:
            continue
        entries = [BenchEntry(r.artifact.name, (lambda a=r.artifact: get_target(a.target).load(a, options)),
                              r.artifact.path) for r in owners]
        _say(f"benchmark at {bucket.label}: {len(entries)} artifact(s) side by side, {config.bench_frames} frames each")
        try:
            results = bench_side_by_side(entries, bucket, frames=config.bench_frames, progress=config.progress)
        except PROGRAMMING_ERRORS:
            raise
        except Exception as exc:  # a runtime failing while timed: recorded, the artifact's parity stands
            for record in owners:
                record.bench_errors.append(f"benchmark failed at {bucket.label}: {type(exc).__name__}: {exc}")
            continue
        for record, result in zip(owners, results):
            record.bench.append(result)
            _say(f"  {result.name}: median {result.median_ms:.1f} ms, p90 {result.p90_ms:.1f} ms, "
                 f"{result.fps:.1f} FPS, first frame {result.first_frame_ms:.0f} ms")
