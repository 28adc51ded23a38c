"""Run records: ``metrics.jsonl`` (one JSON object per line) and, optionally, TensorBoard scalars.

Every record has ``step`` (optimizer steps completed) and ``split`` ("train" or "valid"). On resume, records past
the checkpoint's step (written after it, before the interruption) are dropped so the file reads as one run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["MetricsLog", "read_records", "METRICS_NAME"]

METRICS_NAME = "metrics.jsonl"


def read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLog:
    def __init__(self, out_dir: Path, resume_step: int | None, tensorboard: bool) -> None:
        self.path = Path(out_dir) / METRICS_NAME
        if resume_step is None:
            self.path.write_text("")
        else:
            kept = [r for r in read_records(self.path) if r["step"] <= resume_step]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
            os.replace(tmp, self.path)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # imports TensorFlow when present: a few seconds

            self.writer = SummaryWriter(str(Path(out_dir) / "tensorboard"),
                                        purge_step=None if resume_step is None else resume_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "split") and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"{record['split']}/{key}", value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
