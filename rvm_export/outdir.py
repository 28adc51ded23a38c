"""The output folder of an export run: staged, then swapped in whole, so that it never misleads.

Rule (docs/decisions.md 22): an output folder holds one run. A run writes everything into a staging folder inside
it (``OUT/.rvm-export-stage-<pid>-<random>/``); when the run ends with a manifest (exit 0, 1 or 4), the files the
previous rvm-export manifest listed (its artifacts, their plots, ``manifest.json``, ``report.md``) are removed, the new
run's files are moved in, and ``manifest.json`` is replaced last. A run that fails before that point, is interrupted
(Ctrl-C, SIGTERM) or crashes leaves the folder exactly as it was. Nothing rvm-export did not write is ever deleted:
a ``manifest.json`` or ``report.md`` that is not rvm-export's makes the run refuse to start, and files no rvm-export
manifest lists are left alone. Leftovers of earlier killed runs (staging folders whose process is gone, the
``.stage.*`` and ``*.partial`` folders older versions used) are removed at the start. One run at a time per folder
(an advisory lock).
"""
from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from rvm_export.core.errors import InputError, UsageError

__all__ = ["OutputFolder", "STAGE_PREFIX", "check_writable"]

STAGE_PREFIX = ".rvm-export-stage-"
LOCK_NAME = ".rvm-export.lock"
MANIFEST, REPORT = "manifest.json", "report.md"


def check_writable(folder: Path) -> None:
    """Raise UsageError unless ``folder`` exists as a writable directory or can be created (nothing is created)."""
    folder = Path(folder)
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe != folder and not probe.is_dir():
        raise UsageError(f"--out {folder}: {probe} is a file, not a folder")
    if probe == folder and not folder.is_dir():
        raise UsageError(f"--out {folder} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"--out {folder}: {probe} is not writable (read-only file system or no permission)")
    try:  # os.access does not see read-only mounts on every system: try it
        with tempfile.TemporaryDirectory(prefix=".rvm-export-probe-", dir=probe):
            pass
    except OSError as exc:
        raise UsageError(f"--out {folder}: cannot write in {probe}: {exc.strerror or exc}") from None


def _ours(manifest: Any) -> bool:
    return isinstance(manifest, dict) and "rvm_export_version" in manifest and isinstance(manifest.get("artifacts"),
                                                                                         list)


def _read_previous(folder: Path) -> dict[str, Any] | None:
    """The folder's rvm-export manifest, None when there is none; UsageError when it holds a foreign one."""
    path = folder / MANIFEST
    if not path.exists():
        if (folder / REPORT).exists() and not _report_is_ours(folder / REPORT):
            raise UsageError(f"{folder / REPORT} was not written by rvm-export and would be replaced: choose another "
                             "--out (rvm-export never deletes files it did not write)")
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    if not _ours(manifest):
        raise UsageError(f"{path} was not written by rvm-export and would be replaced: choose another --out "
                         "(rvm-export never deletes files it did not write)")
    return manifest


def _report_is_ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.readline().strip() == "# rvm-export report"
    except (OSError, UnicodeDecodeError):
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM while the new files are swapped in (delivered when the swap is done)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, ValueError, OSError):  # not the main thread, or no pthread_sigmask here
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class OutputFolder:
    """One run's view of ``--out``. Use as a context manager: ``stage`` is where the run writes; :meth:`commit`
    swaps the staged files in; leaving the block without a commit removes the stage and leaves the folder as it was.

    Raises UsageError (exit 2, before any work) when the folder cannot be written, holds a manifest or report that
    rvm-export did not write, or another run holds its lock."""

    def __init__(self, final: Path) -> None:
        self.final = Path(final)
        check_writable(self.final)
        self._created = not self.final.exists()
        self.previous: dict[str, Any] | None = None if self._created else _read_previous(self.final)
        self.stage: Path | None = None
        self._lock = None
        self.committed = False

    def __enter__(self) -> "OutputFolder":
        self.final.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.final / LOCK_NAME, "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            self._lock = None
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UsageError(f"another rvm-export run is writing {self.final}; wait for it or choose another "
                                 "--out") from None
            raise
        self._clean_leftovers()
        self.stage = Path(tempfile.mkdtemp(prefix=f"{STAGE_PREFIX}{os.getpid()}-", dir=self.final))
        return self

    def __exit__(self, *exc_info) -> None:
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
        if self._lock is not None:
            self._lock.close()
            (self.final / LOCK_NAME).unlink(missing_ok=True)
        if self._created and not self.committed and self.final.is_dir() and not any(self.final.iterdir()):
            self.final.rmdir()  # a run that wrote nothing leaves no empty folder it created

    def _clean_leftovers(self) -> None:
        for entry in self.final.iterdir():
            name = entry.name
            if name.startswith(STAGE_PREFIX):
                pid = name[len(STAGE_PREFIX):].split("-", 1)[0]
                if pid.isdigit() and not _pid_alive(int(pid)):
                    shutil.rmtree(entry, ignore_errors=True)
        for leftover in [*self.final.glob(".stage.*"), *self.final.glob("*/.stage.*"),
                         *self.final.glob(".*.partial"), *self.final.glob("*/.*.partial")]:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)

    def _previous_files(self) -> list[Path]:
        if not self.previous:
            return []
        root = self.final.resolve()
        listed = self.previous.get("files")
        if isinstance(listed, list):  # every file the previous run wrote (manifests from this version on)
            paths = [(self.final / str(name)).resolve() for name in listed]
            return [p for p in paths if root in p.parents]
        files = []  # older manifests: their artifacts, plots and companions
        for entry in self.previous.get("artifacts", []):
            if isinstance(entry, dict) and isinstance(entry.get("path"), str):
                path = (self.final / entry["path"]).resolve()
                if self.final.resolve() in path.parents:
                    files += [path, *path.parent.glob(f"{glob.escape(path.name)}*.parity.png")]
                companions = entry.get("companions") if isinstance(entry.get("companions"), list) else []
                for companion in companions:
                    extra = (self.final / str(companion)).resolve()
                    if self.final.resolve() in extra.parents:
                        files.append(extra)
        return [*files, self.final / REPORT]

    def commit(self) -> None:
        """Swap the staged run in: remove what the previous manifest listed (artifacts, their plots and companion
        files, the report), move every staged file in, then ``manifest.json`` last."""
        assert self.stage is not None, "commit() outside the with-block"
        with _signals_deferred():
            previous = self._previous_files()
            for path in previous:
                _remove(path)
            self._prune_empty({p.parent for p in previous})
            for source in sorted(p for p in self.stage.rglob("*") if p.is_file() or p.is_symlink()):
                relative = source.relative_to(self.stage)
                if relative == Path(MANIFEST):
                    continue
                target = self.final / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(source, target)
            staged_manifest = self.stage / MANIFEST
            if not staged_manifest.is_file():
                raise InputError(f"no {MANIFEST} was staged in {self.stage}")
            os.replace(staged_manifest, self.final / MANIFEST)
            self.committed = True

    def _prune_empty(self, folders: set[Path]) -> None:
        """Remove folders the previous run's files leave empty (package directories, target folders), bottom up,
        never ``final`` itself."""
        root = self.final.resolve()
        for folder in sorted(folders, key=lambda p: -len(p.parts)):
            current = folder.resolve()
            while current != root and root in current.parents and current.is_dir() and not any(current.iterdir()):
                current.rmdir()
                current = current.parent
