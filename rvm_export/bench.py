"""Throughput: steady-state per-frame latency (median, p90), FPS, first-frame latency, load time, file size.

Several artifacts are measured side by side in one run: each is loaded and warmed up, then timed interleaved (by
default one frame of each in turn, A B C C B A ...) so that a noisy, shared machine slows all of them alike. Each
step hands the runtime a new frame, keeps the states as the runtime's own values, and returns fgr and pha as arrays
(what an app consumes). Report ratios from one run, not numbers from different runs.
"""
from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rvm_export.core.rollout import MovingScene
from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import MissingRuntimeError, UsageError

__all__ = ["BenchEntry", "BenchResult", "bench_side_by_side", "format_table", "machine_info"]


@dataclass
class BenchEntry:
    """One row of a side-by-side run: a name and how to load the runner (the load is timed)."""
    name: str  # row label
    load: Callable[[], Any]  # returns a Runner; timed as the load time
    path: Path | None = None  # artifact on disk (for the file size)


@dataclass
class BenchResult:
    """Timings of one entry at one bucket: milliseconds per frame (median, p90, mean), FPS = 1000 / median."""
    name: str
    runtime: str  # the runner's label (runtime, device, threads)
    bucket: str
    frames: int  # timed frames
    load_s: float
    first_frame_ms: float
    median_ms: float
    p90_ms: float
    mean_ms: float
    fps: float
    file_bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _size(path: Path | None) -> int | None:
    if path is None or not Path(path).exists():
        return None
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


INTERLEAVES = ("frame", "block")


def _step_ms(stream: Any, start: float) -> float:
    """Milliseconds of the step that began at ``start``: the runtime's own measurement where the stream reports one
    (``timed_ms``: a browser page times itself, without the transport to and from Python), else the wall time."""
    inner = getattr(stream, "timed_ms", None)
    return float(inner) if inner is not None else 1e3 * (time.perf_counter() - start)


def bench_side_by_side(entries: list[BenchEntry], bucket: Bucket, frames: int = 30, warmup: int = 3,
                       rounds: int = 3, progress: bool = True, distinct_frames: int = 4,
                       interleave: str = "frame", settle_ms: float = 25.0,
                       skipped: dict[str, str] | None = None) -> list[BenchResult]:
    """Time every entry at ``bucket`` for ``frames`` timed steps each.

    ``interleave="frame"``: one frame of each entry per step, the order reversed every other step (A B C, C B A,
    ...), so a load change on the shared machine hits every entry alike. ``"block"``: ``rounds`` rounds of
    ``frames // rounds`` consecutive frames per entry (closer to a steady stream, more exposed to load changes).

    ``settle_ms``: an untimed pause before every timed step. Runtimes keep their worker threads spinning for a while
    after a call (ONNX Runtime's default); without the pause those threads steal the cores from whichever entry runs
    next, so entries that follow another runtime are penalised and one that follows itself is not. Measured at
    1920x1080 @ 0.25 with three ONNX Runtime sessions: a 10-15 % bias in favour of the first entry, gone with the
    pause or with spinning off. An app running at its frame rate also idles between frames.

    ``skipped``: when given, an entry this machine cannot run (its load raises MissingRuntimeError: OpenVINO bf16
    without AMX/AVX512-BF16) is left out and named there with the reason instead of ending the run.

    Raises UsageError for a bad count or pause, and for a runner that declares ``untimed_reason`` (a numerics check
    such as coreml's MIL executor: its speed says nothing about the runtime an app uses); MissingRuntimeError from a
    load when ``skipped`` is None.
    """
    if interleave not in INTERLEAVES:
        raise ValueError(f"interleave must be one of {INTERLEAVES}, got {interleave!r}")
    if frames < 1 or warmup < 0 or rounds < 1 or not 0.0 <= settle_ms < float("inf"):
        raise UsageError(f"bench needs frames >= 1, warmup >= 0, rounds >= 1 and a finite settle_ms >= 0; got "
                         f"frames={frames}, warmup={warmup}, rounds={rounds}, settle_ms={settle_ms}")
    scene = MovingScene(bucket.width, bucket.height, distinct_frames, seed=7)
    clip = [scene.frame(t) for t in range(distinct_frames)]
    loaded = []
    for entry in entries:
        start = time.perf_counter()
        try:
            runner = entry.load()
        except MissingRuntimeError as exc:
            if skipped is None:
                raise
            skipped[entry.name] = str(exc)
            continue
        load_s = time.perf_counter() - start
        if getattr(runner, "untimed_reason", None):  # a numerics check, not a runtime (coreml's MIL executor)
            raise UsageError(f"{entry.name} is not timed here: {runner.untimed_reason}")
        stream = runner.stream(bucket)
        start = time.perf_counter()
        stream.step(clip[0])
        first_ms = _step_ms(stream, start)
        for i in range(warmup):
            stream.step(clip[(i + 1) % distinct_frames])
        loaded.append((entry, runner, stream, load_s, first_ms, []))
    if interleave == "frame":
        schedule = [(entry, i) for i in range(frames) for entry in (loaded if i % 2 == 0 else loaded[::-1])]
    else:
        per_round = max(1, frames // rounds)
        schedule = [(entry, i) for _ in range(rounds) for entry in loaded for i in range(per_round)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(schedule), desc=f"bench {bucket.label}", unit="frame", leave=False)
    for (_, _, stream, _, _, times), i in schedule:
        frame = clip[i % distinct_frames]
        if settle_ms > 0:
            time.sleep(settle_ms / 1e3)
        start = time.perf_counter()
        stream.step(frame)
        times.append(_step_ms(stream, start))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    results = []
    for entry, runner, stream, load_s, first_ms, times in loaded:
        arr = np.asarray(times)
        median = float(np.median(arr))
        results.append(BenchResult(entry.name, runner.label or type(runner).__name__, bucket.label,
                                   len(arr), load_s, first_ms, median, float(np.percentile(arr, 90)),
                                   float(arr.mean()), 1e3 / median, _size(entry.path)))
    return results


def machine_info() -> dict[str, Any]:
    """Platform, Python, CPU model and count, load average: the context every figure is quoted with."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import psutil

        info["load_average"] = [round(x, 2) for x in psutil.getloadavg()]
    except (ImportError, OSError):
        pass
    return info


def format_table(results: list[BenchResult], baseline: str | None = None) -> str:
    """Markdown table; with ``baseline`` a column of speed-ups (baseline median / row median) from the same run."""
    base = {r.bucket: r.median_ms for r in results if r.name == baseline} if baseline else {}
    header = "| artifact | bucket | median ms | p90 ms | FPS | first frame ms | load s | size MB |"
    rule = "|---|---|---|---|---|---|---|---|"
    if base:
        header += f" speed-up vs {baseline} |"
        rule += "---|"
    lines = [header, rule]
    for r in results:
        size = f"{r.file_bytes / 1e6:.1f}" if r.file_bytes else "-"
        row = (f"| {r.name} | {r.bucket} | {r.median_ms:.1f} | {r.p90_ms:.1f} | {r.fps:.1f} | {r.first_frame_ms:.0f} "
               f"| {r.load_s:.2f} | {size} |")
        if base:
            row += f" {base[r.bucket] / r.median_ms:.2f}x |" if r.bucket in base else " - |"
        lines.append(row)
    return "\n".join(lines)
