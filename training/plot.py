"""Plot a run's ``metrics.jsonl``: validation alpha MAD against the all-zero-alpha baseline, and the train losses.

    python -m training.plot runs/smoke/metrics.jsonl docs/figures/smoke_training_curve.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .metrics_log import read_records

__all__ = ["plot_run", "main"]


def plot_run(metrics_path: str | Path, png_path: str | Path, title: str | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_records(metrics_path)
    valid = [r for r in records if r["split"] == "valid"]
    train = [r for r in records if r["split"] == "train"]
    if not valid:
        raise ValueError(f"{metrics_path} has no validation records")
    fig, (ax_mad, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [r["step"] for r in valid]
    ax_mad.plot(steps, [r["pha_mad"] for r in valid], "o-", label="validation alpha MAD")
    ax_mad.plot(steps, [r["baseline_zero_pha_mad"] for r in valid], "--", color="grey", label="all-zero alpha")
    ax_mad.set_xlabel("step")
    ax_mad.set_ylabel("MAD x 1e3")
    ax_mad.set_ylim(bottom=0)
    ax_mad.legend()
    ax_mad.grid(alpha=0.3)
    if train:
        train_steps = [r["step"] for r in train]
        for key, label in (("matting_total", "matting loss (LR pass)"), ("matting_pha_l1", "alpha L1")):
            ax_loss.plot(train_steps, [r[key] for r in train], label=label, linewidth=1)
        seg = [(r["step"], r.get("seg_clip", r.get("seg_image"))) for r in train]
        seg = [(s, v) for s, v in seg if v is not None]
        if seg:
            ax_loss.plot(*zip(*seg), label="segmentation BCE", linewidth=1)
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("step")
        ax_loss.legend()
        ax_loss.grid(alpha=0.3)
    fig.suptitle(title or str(metrics_path))
    fig.tight_layout()
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return png_path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("metrics", type=Path, help="metrics.jsonl of a run")
    parser.add_argument("png", type=Path, help="where to write the figure")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    print(plot_run(args.metrics, args.png, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
