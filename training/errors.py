"""Typed errors of the training package and the exit codes the commands map them to."""
from __future__ import annotations

__all__ = ["TrainingError", "ConfigError", "DataLayoutError", "ClipLayoutError", "ResumeError",
           "EXIT_OK", "EXIT_USAGE", "EXIT_DATA", "EXIT_CHECKPOINT"]

EXIT_OK = 0
EXIT_USAGE = 2  # bad arguments, an invalid configuration, or a user clip folder (finetune) that breaks its layout
EXIT_DATA = 3  # the data folder is missing or does not follow the documented layout
EXIT_CHECKPOINT = 4  # resume/overwrite problems: no checkpoint, or one that does not fit the request


class TrainingError(Exception):
    """Base class; ``exit_code`` is what the command-line entry points return."""
    exit_code = EXIT_USAGE


class ConfigError(TrainingError, ValueError):
    """A training configuration or command-line combination that cannot work."""
    exit_code = EXIT_USAGE


class DataLayoutError(TrainingError):
    """A data folder is missing, empty, or not laid out as docs/training.md describes."""
    exit_code = EXIT_DATA


class ClipLayoutError(DataLayoutError):
    """The user's clip folder (finetune preset, training/clips.py) breaks its layout; ``problems`` holds one line per
    problem, each naming the file. Exit 2, as bad input the user hands over (the paper's sets keep exit 3)."""
    exit_code = EXIT_USAGE

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{len(self.problems)} layout problem(s):\n  " + "\n  ".join(self.problems))


class ResumeError(TrainingError):
    """A checkpoint is missing, unreadable, or was written for another configuration."""
    exit_code = EXIT_CHECKPOINT
