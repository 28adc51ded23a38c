"""The export job: validate every request up front, load the model, export each (target, precision), check parity
over a rollout at each bucket (one PyTorch reference pass per bucket, all artifacts in lockstep), benchmark, report."""
from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from model import CheckpointError, load_checkpoint

from .bench import BenchEntry, bench_side_by_side
from .default_model import UNTRAINED_WARNING, seeded_default_model
from .errors import ExitCode, InputError, MissingRuntimeError, UsageError
from .metadata import sha256_file
from .parity import ParityReport, compare_many
from .reference import TorchStream
from .report import ArtifactRecord, Failure, write_outputs
from .scene import MovingScene
from .spec import Bucket, Layout, Precision
from .tolerances import tolerance_for

__all__ = ["RunConfig", "RunResult", "run_export", "load_model", "resolve_targets"]

log = logging.getLogger("rvm_export")


@dataclass(frozen=True)
class RunConfig:
    targets: tuple[str, ...]  # registry names, "all" already expanded
    out_dir: Path  # where artifacts, manifest.json and report.md go
    buckets: tuple[Bucket, ...]  # resolutions x ratios to build (static) or validate (dynamic)
    ratio_mode: str = "auto"  # "auto": dynamic where the target can be, else static; "dynamic"; "fixed"
    checkpoint: Path | None = None  # None: the seeded default (untrained) model
    variant: str | None = None  # None: what the checkpoint looks like (mobilenetv3 for the default model)
    refiner: str | None = None  # None: what the checkpoint looks like (deep guided filter for the default model)
    precisions: tuple[str, ...] | None = None  # None: each target's default precision
    layout: Layout = Layout.NCHW  # boundary layout for targets that offer a choice
    opset: int = 17  # ONNX opset where ONNX is involved
    frames: int = 30  # parity rollout length
    bench: bool = True  # measure throughput after parity
    bench_frames: int = 30  # timed frames per artifact and bucket
    threads: int | None = None  # runtime intra-op threads (and PyTorch's); None = runtime default
    device: str = "cpu"  # runtime device for the artifacts (the PyTorch reference always runs fp32 on CPU)
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per-target options
    seed: int = 0  # default-model weights and the generated scene
    progress: bool = True  # progress bars on stderr

    def __post_init__(self) -> None:
        if self.ratio_mode not in ("auto", "dynamic", "fixed"):
            raise UsageError(f"ratio mode must be auto, dynamic or fixed, got {self.ratio_mode!r}")
        if self.frames < 1:
            raise UsageError(f"--frames must be at least 1, got {self.frames}")
        if not self.buckets:
            raise UsageError("at least one --resolution is needed")


@dataclass
class RunResult:
    exit_code: int
    manifest: dict[str, Any]
    records: list[ArtifactRecord]
    failures: list[Failure]


def resolve_targets(names: list[str]) -> tuple[str, ...]:
    from targets import FILE_TARGETS, get_target

    resolved: list[str] = []
    for name in names:
        for part in (p.strip() for p in name.split(",") if p.strip()):
            expanded = FILE_TARGETS if part == "all" else (part,)
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
                       "untrained": True, "checkpoint": None, "checkpoint_sha256": None}
    try:
        model = load_checkpoint(checkpoint, variant=variant, refiner=refiner)
    except CheckpointError as exc:
        raise InputError(str(exc)) from exc
    return model, {"variant": model.variant, "refiner": model.refiner_name, "weights": str(checkpoint),
                   "untrained": False, "checkpoint": str(checkpoint), "checkpoint_sha256": sha256_file(checkpoint)}


def _default_precision(module: ModuleType) -> str:
    return getattr(module, "DEFAULT_PRECISION", module.PRECISIONS[0])


def _plan(config: RunConfig, variant: str, refiner: str, model_info: Mapping[str, Any]):
    """Every (target, module, request), validated before any work. Raises UsageError / MissingRuntimeError."""
    from targets import get_target
    from targets.base import ExportRequest

    modules = {name: get_target(name) for name in config.targets}
    missing = {name: module.missing() for name, module in modules.items()}
    missing = {k: v for k, v in missing.items() if v}
    if missing:
        details = "; ".join(f"{name}: {why}" for name, why in missing.items())
        raise MissingRuntimeError(f"cannot run target {', '.join(missing)}: {details}")
    plan = []
    for name, module in modules.items():
        for precision in config.precisions or (_default_precision(module),):
            try:
                prec = Precision(precision)
            except ValueError:
                raise UsageError(f"unknown precision {precision!r}; expected one of "
                                 f"{[p.value for p in Precision]}") from None
            if config.ratio_mode == "dynamic":
                dynamic = True
            elif config.ratio_mode == "fixed":
                dynamic = False
            else:  # auto: dynamic where the target can be dynamic at this precision
                can = getattr(module, "supports_dynamic", None)
                dynamic = can(prec) if can else bool(getattr(module, "SUPPORTS_DYNAMIC", False))
            request = ExportRequest(variant, refiner, config.buckets, dynamic, prec, config.layout, config.opset,
                                    dict(config.options.get(name, {})),
                                    checkpoint_sha256=model_info.get("checkpoint_sha256"),
                                    checkpoint_label=model_info["weights"])
            module.check_request(request)
            plan.append((name, module, request))
    return plan


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_export(config: RunConfig) -> RunResult:
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    if config.checkpoint is not None and not Path(config.checkpoint).is_file():
        raise InputError(f"checkpoint not found: {config.checkpoint}")
    model, model_info = load_model(config.checkpoint, config.variant, config.refiner, config.seed)
    plan = _plan(config, model.variant, model.refiner_name, model_info)
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("manifest.json", "report.md"):
        (out_dir / stale).unlink(missing_ok=True)  # a crash must not leave an old manifest describing new files

    from targets.base import RuntimeOptions

    options = RuntimeOptions(threads=config.threads, device=config.device)
    records: list[ArtifactRecord] = []
    failures: list[Failure] = []
    runners: dict[int, Any] = {}
    for name, module, request in plan:
        _say(f"[{name} {request.precision.value}] exporting "
             f"{'dynamic' if request.dynamic else ', '.join(b.label for b in request.buckets)} ...")
        try:
            artifacts = module.export(model, request, out_dir / name)
        except UsageError:
            raise
        except Exception as exc:  # a converter failing is reported per artifact; the others still run
            reason = f"{type(exc).__name__}: {exc}"
            _say(f"[{name} {request.precision.value}] FAILED: {reason}")
            failures.append(Failure(name, request.precision.value, reason))
            continue
        for artifact in artifacts:
            record = ArtifactRecord(artifact)
            records.append(record)
            try:
                runners[id(record)] = module.load(artifact, options)
            except Exception as exc:
                record.errors.append(f"cannot load: {type(exc).__name__}: {exc}")
    _check_parity(model, records, runners, config)
    if config.bench:
        _benchmark(records, runners, config, options)
    settings = {"frames": config.frames, "threads": config.threads, "device": config.device,
                "bench_frames": config.bench_frames if config.bench else 0, "seed": config.seed,
                "buckets": [b.label for b in config.buckets], "ratio_mode": config.ratio_mode}
    manifest = write_outputs(out_dir, records, failures, model_info, settings)
    _say(f"wrote {out_dir / 'manifest.json'} and {out_dir / 'report.md'}")
    if failures:
        code = ExitCode.EXPORT_FAILED
    elif any(r.status != "exported" for r in records):
        code = ExitCode.PARITY_FAILED
    else:
        code = ExitCode.OK
    return RunResult(code, manifest, records, failures)


def _check_parity(model, records: list[ArtifactRecord], runners: dict[int, Any], config: RunConfig) -> None:
    buckets: list[Bucket] = []
    for record in records:
        buckets += [b for b in record.artifact.buckets if b not in buckets]
    for bucket in buckets:
        candidates: list[tuple[ParityReport, Any]] = []
        owners: list[ArtifactRecord] = []
        for record in records:
            runner = runners.get(id(record))
            if runner is None or bucket not in record.artifact.buckets:
                continue
            a = record.artifact
            report = ParityReport(a.target, a.name, a.precision.value, bucket, runner.label,
                                  tolerance_for(a.target, a.precision.value, a.spec.refiner))
            try:
                candidates.append((report, runner.stream(bucket)))
                owners.append(record)
            except Exception as exc:
                record.errors.append(f"cannot run at {bucket.label}: {type(exc).__name__}: {exc}")
        if not candidates:
            continue
        _say(f"parity at {bucket.label}: {len(candidates)} artifact(s) x {config.frames} frames vs PyTorch fp32")
        scene = MovingScene(bucket.width, bucket.height, config.frames, seed=config.seed)
        errors = compare_many(TorchStream(model, bucket), candidates, scene, progress=config.progress)
        for index, (record, (report, _)) in enumerate(zip(owners, candidates)):
            record.parity.append(report)
            if index in errors:
                record.errors.append(f"runtime error during parity at {bucket.label}: {errors[index]}")
            verdict = "pass" if report.passed else "FAIL: " + "; ".join(report.failures())
            _say(f"  {record.artifact.name}: max abs {report.max_abs:.2e}, pha MAD {report.pha_mad:.2e} "
                 f"[{report.label}] {verdict}")


def _benchmark(records: list[ArtifactRecord], runners: dict[int, Any], config: RunConfig, options) -> None:
    """Per bucket, every artifact valid there side by side in one interleaved run."""
    from targets import get_target

    buckets: list[Bucket] = []
    for record in records:
        buckets += [b for b in record.artifact.buckets if b not in buckets and id(record) in runners]
    for bucket in buckets:
        owners = []
        for record in (r for r in records if id(r) in runners and bucket in r.artifact.buckets):
            why = getattr(runners[id(record)], "not_timed", None)  # a numerics check, not a runtime
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
        except Exception as exc:
            for record in owners:
                record.bench_errors.append(f"benchmark failed at {bucket.label}: {type(exc).__name__}: {exc}")
            continue
        for record, result in zip(owners, results):
            record.bench.append(result)
            _say(f"  {result.name}: median {result.median_ms:.1f} ms, p90 {result.p90_ms:.1f} ms, "
                 f"{result.fps:.1f} FPS, first frame {result.first_frame_ms:.0f} ms")
