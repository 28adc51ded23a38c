"""``rvm-export``: export (the default command), bench, verify, targets. ``main(argv=None) -> int`` so tests drive it
in-process; one argparse parser with a sub-parser per command (rvm_export/cli/<command>.py).

    rvm-export --target onnx --checkpoint rvm_mobilenetv3.pth --resolution 1920x1080 --out exports/
    rvm-export bench exports/ --foreign rvm_mobilenetv3_fp32.onnx --resolution 1920x1080@0.25 --threads 2
    rvm-export verify exports/ --checkpoint rvm_mobilenetv3.pth
    rvm-export targets
    rvm-export matte clip.mp4 --model exports/ --composite out.mp4 --alpha alpha/

Exit codes (rvm_export.core.errors.ExitCode): 0 ok, 1 parity failed, 2 usage or input, 3 missing runtime,
4 converter failed, 130 interrupted.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from contextlib import contextmanager
from typing import Iterator, Sequence

from rvm_export.core import __version__
from rvm_export.core.args import OneLineParser, one_line
from rvm_export.core.errors import ExitCode, RvmExportError

from ..quiet import flush_all, native_output_filtered, quiet_third_party
from . import bench, export, matte, targets, verify

__all__ = ["main", "build_parser", "COMMANDS", "DEFAULT_COMMAND"]

COMMANDS = {"export": export, "bench": bench, "verify": verify, "targets": targets, "matte": matte}
DEFAULT_COMMAND = "export"  # `rvm-export --target ...` with no command name exports (the README's first form)


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one sub-parser per command, each defined by its module's ``add_arguments``."""
    parser = OneLineParser(
        prog="rvm-export", description="Export Robust Video Matting, check parity with PyTorch over a recurrent "
        "rollout and measure throughput. Without a command name, the arguments are export's.")
    parser.add_argument("--version", action="version", version=f"rvm-export {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for name, module in COMMANDS.items():
        sub = commands.add_parser(name, help=module.HELP, description=module.__doc__.split("\n\n")[0])
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def _with_command(argv: list[str]) -> list[str]:
    """``argv`` with the default command inserted when none is named (``rvm-export --target onnx ...``)."""
    if argv and (argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version")):
        return argv
    return [DEFAULT_COMMAND, *argv]


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the run unwinds like Ctrl-C (staged files removed)."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum, frame):
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (tests may call main() from one): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (errors are one line on stderr)."""
    argv = _with_command(list(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        with _sigterm_as_interrupt():
            args = build_parser().parse_args(argv)
            quiet = getattr(args, "quiet", False)
            if quiet:
                quiet_third_party()
            with native_output_filtered(quiet):  # --quiet: the runtimes' INFO lines dropped (rvm_export/quiet.py)
                return int(args.run(args))
    except RvmExportError as exc:
        exc.__traceback__ = None  # release the runtimes the frames hold before the last line (rvm_export/quiet.py)
        flush_all()
        print(f"rvm-export: error: {one_line(exc)}", file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"rvm-export: {'terminated (SIGTERM)' if terminated else 'interrupted'}; the output folder is as it "
              "was before this run (its staged files were removed)", file=sys.stderr)
        return int(ExitCode.TERMINATED if terminated else ExitCode.INTERRUPTED)
    except SystemExit as exc:  # argparse: --help exits 0, bad arguments exit 2
        return int(exc.code or 0)


if __name__ == "__main__":
    sys.exit(main())
