"""The Python end of ``web/harness/harness.mjs``: one Node process driving one headless Chromium per Python process.

Messages are one JSON line each way, followed by ``bytes`` raw bytes when the line says so (frames and outputs as
raw little-endian float32). Requests are answered in order; a lock keeps callers from interleaving. The process is
started on first use, shared by every runner (one browser page each) and stopped at interpreter exit.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

from rvm_export.core.errors import MissingRuntimeError

__all__ = ["chromium_path", "Harness", "HarnessError", "harness"]

REPLY_TIMEOUT_S = 900.0  # one request; a software-WebGPU frame at 512x288 takes seconds, session creation ~10 s
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def chromium_path() -> str | None:
    """``RVM_EXPORT_CHROMIUM`` if set, else the first Chromium found at the usual Debian/Ubuntu paths."""
    override = os.environ.get("RVM_EXPORT_CHROMIUM")
    if override:
        return override if Path(override).is_file() else None
    return next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None)


class HarnessError(RuntimeError):
    """The browser or the page refused or failed a request (the message is the page's one-line error)."""


class Harness:
    """A running ``node harness.mjs``. Use :func:`harness` to get the shared one."""

    def __init__(self, chromium: str, web_dir: Path) -> None:
        script = web_dir / "harness" / "harness.mjs"
        if not script.is_file():
            raise MissingRuntimeError(f"{script} is missing: the web/ sources are incomplete")
        # Node's stderr (diagnostics, quoted in errors); open for the harness's life, removed by close()
        self._log = tempfile.NamedTemporaryFile(prefix="rvm-web-harness.", suffix=".log", delete=False)  # noqa: SIM115
        self._lock = threading.Lock()
        command = ["node", str(script), "--chromium", chromium]
        extra = os.environ.get("RVM_EXPORT_CHROMIUM_ARGS", "").strip()  # extra switches, for diagnosing a browser
        if extra:
            command += ["--chromium-args", extra]
        self.process = subprocess.Popen(command, cwd=str(web_dir),
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)
        self._buffer = b""
        hello, _ = self.request({"cmd": "hello"}, timeout=180.0)
        self.chromium_version: str = hello["chromium"]

    # -- protocol --------------------------------------------------------------------------------------------------
    def request(self, header: dict[str, Any], payload: bytes = b"",
                timeout: float = REPLY_TIMEOUT_S) -> tuple[dict[str, Any], bytes]:
        """Send one request; return (reply header, reply bytes). Raises HarnessError with the page's message."""
        with self._lock:
            if self.process.poll() is not None:
                raise HarnessError(f"the browser harness has exited ({self.process.returncode}): {self.stderr_tail()}")
            message = json.dumps({**header, "bytes": len(payload)}).encode() + b"\n"
            try:
                self.process.stdin.write(message + payload)
                self.process.stdin.flush()
                reply = json.loads(self._read_line(timeout))
                data = self._read_exact(int(reply.get("bytes") or 0), timeout)
            except (BrokenPipeError, OSError) as exc:
                raise HarnessError(f"the browser harness stopped answering: {exc}; {self.stderr_tail()}") from exc
        if not reply.get("ok"):
            logs = "; ".join(reply.get("logs") or [])
            console = f" (page console: {logs})" if logs else ""
            raise HarnessError(reply.get("error", "unknown harness error") + console)
        return reply, data

    def _fill(self, timeout: float) -> None:
        fd = self.process.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:  # a late reply would be read as the next one's: this harness is done
            self.process.kill()
            raise HarnessError(f"the browser did not answer within {timeout:.0f} s; the harness was stopped")
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            raise HarnessError(f"the browser harness closed its output: {self.stderr_tail()}")
        self._buffer += chunk

    def _read_line(self, timeout: float) -> bytes:
        while b"\n" not in self._buffer:
            self._fill(timeout)
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _read_exact(self, count: int, timeout: float) -> bytes:
        while len(self._buffer) < count:
            self._fill(timeout)
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def stderr_tail(self, lines: int = 8) -> str:
        try:
            text = Path(self._log.name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(text.strip().splitlines()[-lines:])

    # -- helpers ---------------------------------------------------------------------------------------------------
    def mount(self, folder: Path) -> str:
        """Serve ``folder``; returns its URL prefix (``/m/1/``)."""
        reply, _ = self.request({"cmd": "mount", "dir": str(Path(folder).resolve())})
        return reply["prefix"]

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.request({"cmd": "quit"}, timeout=30.0)
                self.process.wait(timeout=30)
            except (HarnessError, subprocess.TimeoutExpired, OSError):
                self.process.kill()
                self.process.wait(timeout=10)
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


_SHARED: Harness | None = None
_SHARED_LOCK = threading.Lock()


def harness(chromium: str, web_dir: Path) -> Harness:
    """The process-wide harness (started on first use, restarted if it died, stopped at exit)."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED.process.poll() is not None:
            _SHARED = Harness(chromium, web_dir)
            atexit.register(_SHARED.close)
        return _SHARED
