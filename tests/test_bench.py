"""rvm_export.bench: the timing schedule and the records, with stand-in runners (no runtime, no model)."""
from __future__ import annotations

import numpy as np
import pytest

from rvm_export.bench import BenchEntry, bench_side_by_side, format_table
from rvm_export.core.bucket import Bucket

BUCKET = Bucket(64, 36, 0.5)


class _Recorder:
    """A runner whose stream logs (name, frame checksum) for every step into a shared list."""

    def __init__(self, name: str, log: list) -> None:
        self.name, self.log, self.label = name, log, f"fake {name}"

    def stream(self, bucket: Bucket):
        outer = self

        class _Stream:
            def step(self, frame: np.ndarray):
                outer.log.append((outer.name, float(frame.sum())))
                return frame, frame[:, :1]

        return _Stream()


def _entries(log: list, names=("a", "b", "c")):
    return [BenchEntry(n, (lambda n=n: _Recorder(n, log))) for n in names]


def test_frame_interleave_alternates_one_frame_each():
    log: list = []
    results = bench_side_by_side(_entries(log), BUCKET, frames=4, warmup=0, progress=False)
    timed = [name for name, _ in log[3:]]  # after the three first-frame steps
    assert timed == list("abccbaabccba")
    assert [r.frames for r in results] == [4, 4, 4]
    # every entry sees the same frames in the same order
    sums = {n: [s for name, s in log[3:] if name == n] for n in "abc"}
    assert sums["a"] == sums["b"] == sums["c"]


def test_block_interleave_runs_rounds_of_consecutive_frames():
    log: list = []
    bench_side_by_side(_entries(log, ("a", "b")), BUCKET, frames=4, warmup=1, rounds=2, progress=False,
                       interleave="block")
    timed = [name for name, _ in log[4:]]  # first frame + one warm-up step per entry
    assert timed == list("aabbaabb")


def test_unknown_interleave_is_refused():
    with pytest.raises(ValueError, match="interleave must be one of"):
        bench_side_by_side([], BUCKET, interleave="random")


def test_table_speed_up_divides_the_baseline_median():
    log: list = []
    results = bench_side_by_side(_entries(log, ("base", "x")), BUCKET, frames=2, warmup=0, progress=False)
    results[0].median_ms, results[1].median_ms = 10.0, 4.0
    table = format_table(results, baseline="base")
    assert "speed-up vs base" in table
    assert table.splitlines()[-1].endswith(" 2.50x |") and table.splitlines()[-2].endswith(" 1.00x |")


def test_settle_pause_separates_steps_and_is_not_timed():
    import time

    stamps: list = []

    class _Stamper(_Recorder):
        def stream(self, bucket):
            inner = super().stream(bucket)

            class _S:
                def step(self, frame):
                    stamps.append(time.perf_counter())
                    return inner.step(frame)

            return _S()

    log: list = []
    entries = [BenchEntry(n, (lambda n=n: _Stamper(n, log))) for n in ("a", "b")]
    results = bench_side_by_side(entries, BUCKET, frames=3, warmup=0, progress=False, settle_ms=30)
    timed = stamps[2:]
    assert min(b - a for a, b in zip(timed, timed[1:])) >= 0.029  # a pause before every timed step
    assert all(r.median_ms < 29 for r in results)  # ... that the timings do not include


def test_an_entry_this_machine_cannot_run_is_skipped_with_its_reason():
    """A load that raises MissingRuntimeError (OpenVINO bf16 without AMX) leaves that row out, named with the reason,
    and the other rows are timed; without a ``skipped`` dict the error propagates as before."""
    from rvm_export.core.errors import MissingRuntimeError

    def lacking():
        raise MissingRuntimeError("CPU (test) cannot run inference precision bf16")

    log: list = []
    entries = [*_entries(log, ("a",)), BenchEntry("bf16", lacking), *_entries(log, ("b",))]
    skipped: dict = {}
    results = bench_side_by_side(entries, BUCKET, frames=2, warmup=0, progress=False, settle_ms=0, skipped=skipped)
    assert [r.name for r in results] == ["a", "b"]
    assert skipped == {"bf16": "CPU (test) cannot run inference precision bf16"}
    with pytest.raises(MissingRuntimeError):
        bench_side_by_side(entries, BUCKET, frames=2, warmup=0, progress=False, settle_ms=0)
