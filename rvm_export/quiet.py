"""``--quiet`` for third-party chatter: the runtimes' log lines, and the final error as the last line of a run.

Runtimes log on their own: LiteRT's C++ logger prints ``INFO: Created TensorFlow Lite XNNPACK delegate for CPU.``
straight to file descriptor 2 (no environment variable or Python API turns it off, tensorflow/tensorflow#58050),
coremltools warns through the ``coremltools`` logger when its macOS-only native module is absent, TensorFlow and
absl print ``I0000 ...`` lines. With ``--quiet``:

- :func:`quiet_third_party` sets ``TF_CPP_MIN_LOG_LEVEL=3`` and ``GLOG_minloglevel=2`` (unless already set; read when
  those libraries are imported, which is lazily, after argument parsing) and the libraries' Python loggers to ERROR;
- :func:`native_output_filtered` makes file descriptor 2 a pipe for the run, which a thread copies to the real
  stderr line by line, live, except the runtimes' INFO chatter (:data:`CHATTER`). Warnings and errors are kept, in
  order, and all of them come out before the command's final error line, printed once the filter has drained.

Without ``--quiet`` nothing is captured (progress bars stay live); :func:`flush_all` still flushes Python's and C's
buffers before the final error is printed.
"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
from contextlib import contextmanager
from typing import Iterator

__all__ = ["quiet_third_party", "native_output_filtered", "flush_all", "is_chatter", "CHATTER", "QUIET_ENV",
           "QUIET_LOGGERS"]

QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GLOG_minloglevel": "2"}
QUIET_LOGGERS = ("coremltools", "openvino", "tensorflow", "absl", "litert_torch", "ai_edge_litert",
                 "ai_edge_quantizer", "onnxruntime", "onnxscript", "jax", "torchao", "torch.utils._pytree")
# LiteRT/TFLite minimal logger (INFO: ...), glog/absl info lines (I1201 08:00:00.000000 ... or I0000 ...), absl's
# note before its logging is initialised, and coremltools' import-time note about its macOS-only module.
CHATTER = re.compile(r"^(INFO: |[IV]\d{4} |WARNING: All log messages before absl::InitializeLog|"
                     r"(WARNING coremltools: )?Failed to load _MLModel\w*Proxy: )")


def is_chatter(line: str) -> bool:
    """True for a runtime's informational line that ``--quiet`` drops (:data:`CHATTER`)."""
    return bool(CHATTER.match(line))


def quiet_third_party() -> None:
    """Environment variables and logger levels that silence the libraries' INFO/WARNING logs (see module doc)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def flush_all() -> None:
    """Flush Python's stdout/stderr and every C stdio stream (``fflush(NULL)``), so that what the runtimes buffered
    comes out before the next line."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def _forward(read_fd: int, write_fd: int) -> None:
    """Copy lines from ``read_fd`` to ``write_fd`` until EOF, dropping :data:`CHATTER` (a partial last line is kept)."""
    pending = b""
    with os.fdopen(read_fd, "rb", buffering=0) as source:
        while True:
            chunk = source.read(65536)
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            out = b"".join(line + b"\n" for line in lines if not is_chatter(line.decode("utf-8", "replace")))
            if out:
                os.write(write_fd, out)
    if pending and not is_chatter(pending.decode("utf-8", "replace")):
        os.write(write_fd, pending)


@contextmanager
def native_output_filtered(enabled: bool = True) -> Iterator[None]:
    """While inside (and ``enabled``), file descriptor 2 is a pipe that a thread copies to the real stderr line by
    line, live, without the runtimes' :data:`CHATTER`; on leaving, fd 2 is restored and the thread drained, so a
    line printed afterwards is the last. A no-op where fd 2 cannot be duplicated."""
    if not enabled:
        yield
        return
    import threading

    flush_all()
    try:
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
    except OSError:
        yield
        return
    os.dup2(write_fd, 2)
    os.close(write_fd)
    forwarder = threading.Thread(target=_forward, args=(read_fd, saved), name="stderr-filter", daemon=True)
    forwarder.start()
    try:
        yield
    finally:
        flush_all()
        os.dup2(saved, 2)  # closes the pipe's last write end (unless a child process still holds it)
        forwarder.join(timeout=5.0)
        if not forwarder.is_alive():
            os.close(saved)
