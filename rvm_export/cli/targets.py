"""List the registered targets: installed or not (with the install line), precisions, what they write."""
from __future__ import annotations

import argparse

from rvm_export.core.errors import ExitCode
from targets import REGISTRY, get_target

__all__ = ["add_arguments", "run", "HELP"]

HELP = "which targets are installed here"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """This command's arguments, added to its sub-parser."""
    pass


def run(args: argparse.Namespace) -> int:
    """Run the command from parsed arguments; returns the exit code (errors are raised as RvmExportError)."""
    for name in REGISTRY:
        module = get_target(name)
        description = module.DESCRIPTION
        missing = module.missing()
        state = "available" if not missing else f"not available ({missing})"
        precisions = ", ".join(map(str, description.precisions))
        print(f"{name:9s} {state}; precisions: {precisions}; {description.summary}")
    return ExitCode.OK
