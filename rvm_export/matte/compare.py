"""``--compare``: how far a second model's alpha is from the first's, frame by frame, as a picture."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rvm_export.core.errors import MissingRuntimeError

__all__ = ["plot_alpha_difference"]


def plot_alpha_difference(path: Path, summary: Any) -> None:
    """Write a PNG: per frame, the mean and the max of |pha - pha2| (alpha in [0, 1]); states resets marked.
    ``summary`` carries ``alpha_diff_mean``, ``alpha_diff_max``, ``resets``, ``model``, ``compare_model``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingRuntimeError("matplotlib (the --compare-plot figure)", "plot", "matplotlib") from None
    frames = range(len(summary.alpha_diff_mean))
    floor = 1e-8  # a log axis cannot show 0: identical frames sit on the floor
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=110)
    ax.plot(frames, [max(v, floor) for v in summary.alpha_diff_max], label="max |Δα|", color="tab:red", linewidth=1)
    ax.plot(frames, [max(v, floor) for v in summary.alpha_diff_mean], label="mean |Δα|", color="tab:blue",
            linewidth=1.4)
    for index in summary.resets:
        ax.axvline(index, color="0.6", linestyle=":", linewidth=1)
    ax.set_yscale("log")
    ax.set_xlabel("frame" + (" (dotted: states reset)" if summary.resets else ""))
    ax.set_ylabel("alpha difference (0..1)")
    ax.set_title(f"{summary.model}\nvs {summary.compare_model}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
