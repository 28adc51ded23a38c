"""Three stages that overlap: produce (a thread: decode and prepare), infer (the calling thread), consume (a thread:
composite and encode), joined by bounded queues, so at most ``depth`` items wait between two stages whatever the
video's length. The model runs on the calling thread so that Ctrl-C (delivered to the main thread) stops it between
frames. A failure in any stage stops the others and is re-raised in the caller; nothing is left running.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator

__all__ = ["StageTimes", "run_stages"]

_END = object()
_POLL = 0.1  # seconds between checks of the stop flag while a queue is full or empty


def _lower_priority(increment: int) -> None:
    """Raise this thread's nice value by ``increment`` (Linux: the nice value is per thread, and threads the codecs
    start from it inherit it). Elsewhere, or without permission, nothing happens."""
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + increment)
    except OSError:
        pass


@dataclass
class StageTimes:
    """Seconds each stage spent working (not waiting), the CPU seconds of the two helper threads (libraries' own
    worker threads not included), the whole process's CPU seconds, and the wall time of the run."""

    produce: float = 0.0
    infer: float = 0.0
    consume: float = 0.0
    produce_cpu: float = 0.0
    consume_cpu: float = 0.0
    process_cpu: float = 0.0
    wall: float = 0.0
    items: int = 0


class _Stopped(Exception):
    pass


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> None:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=_POLL)
            return
        except queue.Full:
            continue


def _get(q: queue.Queue, stop: threading.Event) -> Any:
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=_POLL)
        except queue.Empty:
            continue


def run_stages(produce: Iterator[Any], infer: Callable[[Any], Any], consume: Callable[[Any], None],
               depth: int = 3, helper_nice: int = 0) -> StageTimes:
    """Run ``consume(infer(item))`` for every item of ``produce``, the three overlapping. Returns the stage times.
    ``helper_nice`` raises the nice value of the produce and consume threads (and of the codec threads they start)
    so that the calling thread's work, the model, keeps priority on a machine with fewer free cores than threads.
    Raises the first exception any stage raised (KeyboardInterrupt included) after every thread has stopped."""
    if depth < 1:
        raise ValueError(f"queue depth must be at least 1, got {depth}")
    times = StageTimes()
    inbox: queue.Queue = queue.Queue(maxsize=depth)
    outbox: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    errors: list[BaseException] = []

    def producer() -> None:
        _lower_priority(helper_nice)
        cpu = time.thread_time()
        try:
            iterator = iter(produce)
            while True:
                start = time.perf_counter()
                item = next(iterator, _END)
                times.produce += time.perf_counter() - start
                _put(inbox, item, stop)
                if item is _END:
                    return
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)
            stop.set()
        finally:
            close = getattr(produce, "close", None)
            if close is not None:
                close()
            times.produce_cpu = time.thread_time() - cpu

    def consumer() -> None:
        _lower_priority(helper_nice)
        cpu = time.thread_time()
        try:
            while True:
                item = _get(outbox, stop)
                if item is _END:
                    return
                start = time.perf_counter()
                consume(item)
                times.consume += time.perf_counter() - start
        except _Stopped:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            errors.append(exc)
            stop.set()
        finally:
            times.consume_cpu = time.thread_time() - cpu

    threads = [threading.Thread(target=producer, name="matte-produce", daemon=True),
               threading.Thread(target=consumer, name="matte-consume", daemon=True)]
    wall, process = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    try:
        while True:
            item = _get(inbox, stop)
            if item is _END:
                _put(outbox, _END, stop)
                break
            start = time.perf_counter()
            result = infer(item)
            times.infer += time.perf_counter() - start
            times.items += 1
            _put(outbox, result, stop)
        threads[1].join()  # the consumer drains the outbox and finishes
    except _Stopped:
        pass
    except BaseException as exc:
        errors.insert(0, exc)
    finally:
        for thread in threads:
            while thread.is_alive():
                if errors:
                    stop.set()
                thread.join(timeout=_POLL)
    times.wall = time.perf_counter() - wall
    times.process_cpu = time.process_time() - process
    if errors:
        raise errors[0]
    return times
