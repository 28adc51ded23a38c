"""``rvm-evaluate``: the paper's matting metrics over a folder of predictions against a folder of ground truth.

    rvm-evaluate --pred PRED --true TRUE [--metrics pha_mad,pha_dtssd] [--json results.json]

Both folders hold clips ``<clip>/pha/<frame>.png|jpg`` (and optionally ``<clip>/fgr/<frame>``), or are one clip
themselves (``pha/`` directly inside). Frames pair up by file stem, in sorted order (dtSSD needs that order).
Metrics are averaged over all frames (dtSSD over frames with a predecessor); the table is in training/metrics.py.
Prints a JSON report; exit codes: 0 done, 2 bad arguments, 3 missing or mismatched files.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from .errors import EXIT_OK, EXIT_USAGE, DataLayoutError
from .layouts import list_images
from .metrics import ALL_METRICS, MetricAccumulator

__all__ = ["main", "build_parser", "evaluate_folders"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rvm-evaluate", description=__doc__.split("\n\n")[0].replace("``", ""))
    parser.add_argument("--pred", type=Path, required=True, help="predictions: <clip>/pha/<frame>, <clip>/fgr/<frame>")
    parser.add_argument("--true", type=Path, required=True, help="ground truth in the same layout")
    parser.add_argument("--metrics", default=",".join(ALL_METRICS),
                        help=f"comma-separated subset of {','.join(ALL_METRICS)} (default: all)")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    return parser


def _clips(root: Path) -> dict[str, Path]:
    if not root.is_dir():
        raise DataLayoutError(f"folder not found: {root}")
    if (root / "pha").is_dir():
        return {root.name: root}
    clips = {d.name: d for d in sorted(root.iterdir()) if (d / "pha").is_dir()}
    if not clips:
        raise DataLayoutError(f"{root}: no clip folders with a pha/ subfolder (expected <clip>/pha/<frame>.png)")
    return clips


def _read(path: Path, mode: str) -> np.ndarray:
    with Image.open(path) as image:
        array = np.asarray(image.convert(mode), dtype=np.float64) / 255.0
    return array


def _frames(clip: Path, layer: str) -> dict[str, Path]:
    folder = clip / layer
    return {p.stem: p for p in list_images(folder)} if folder.is_dir() else {}


def evaluate_folders(pred_root: Path, true_root: Path, metrics: Sequence[str] = ALL_METRICS) -> dict:
    pred_clips, true_clips = _clips(pred_root), _clips(true_root)
    if len(pred_clips) == 1 and len(true_clips) == 1:
        pred_clips = {next(iter(true_clips)): next(iter(pred_clips.values()))}  # two single-clip folders
    missing = sorted(set(true_clips) - set(pred_clips))
    if missing:
        raise DataLayoutError(f"{pred_root}: no predictions for clip(s) {missing[:5]}")
    total = MetricAccumulator(tuple(metrics))
    report: dict = {"clips": {}}
    for name, true_clip in true_clips.items():
        pred_clip = pred_clips[name]
        true_pha, pred_pha = _frames(true_clip, "pha"), _frames(pred_clip, "pha")
        if sorted(true_pha) != sorted(pred_pha):
            raise DataLayoutError(f"clip {name}: alpha frames differ between {pred_clip / 'pha'} and "
                                  f"{true_clip / 'pha'} (only in truth: {sorted(set(true_pha) - set(pred_pha))[:3]}, "
                                  f"only in prediction: {sorted(set(pred_pha) - set(true_pha))[:3]})")
        stems = sorted(true_pha)
        pha_pairs = [(_read(pred_pha[s], "L"), _read(true_pha[s], "L")) for s in stems]
        for stem, (p, t) in zip(stems, pha_pairs):
            if p.shape != t.shape:
                raise DataLayoutError(f"clip {name}, frame {stem}: prediction {p.shape} vs truth {t.shape}")
        fgr_pred, fgr_true = None, None
        if "fgr_mse" in metrics:
            true_fgr, pred_fgr = _frames(true_clip, "fgr"), _frames(pred_clip, "fgr")
            if all(s in true_fgr and s in pred_fgr for s in stems):
                fgr_pred = [_read(pred_fgr[s], "RGB") for s in stems]
                fgr_true = [_read(true_fgr[s], "RGB") for s in stems]
        report["clips"][name] = total.add_clip([p for p, _ in pha_pairs], [t for _, t in pha_pairs],
                                               fgr_pred, fgr_true)
        report["clips"][name]["frames"] = len(stems)
    report["mean"] = total.result()
    report["frames"] = sum(c["frames"] for c in report["clips"].values())
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    unknown = sorted(set(metrics) - set(ALL_METRICS))
    if unknown or not metrics:
        print(f"rvm-evaluate: error: unknown metric(s) {unknown}; choose from {','.join(ALL_METRICS)}",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        report = evaluate_folders(args.pred, args.true, metrics)
    except DataLayoutError as exc:
        print(f"rvm-evaluate: error: {exc}", file=sys.stderr)
        return exc.exit_code
    text = json.dumps(report, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
