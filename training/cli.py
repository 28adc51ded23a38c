"""``rvm-train``: train RVM with one of the stage presets, fine-tune it on your own clips, or write a synthetic set.

    rvm-train --config stage1 --data DATA --out runs/stage1 [--backbone-weights mobilenet_v3_large.pth]
    rvm-train --config stage2 --data DATA --out runs/stage2 --init runs/stage1/checkpoint_last.pth
    rvm-train --config smoke --data runs/synthetic --out runs/smoke [--resume] [--steps N]
    rvm-train --make-synthetic runs/synthetic [--seed 0] [--synthetic-spec small]
    rvm-train --check-data MY_CLIPS --config finetune          (check the layout, print what was found)
    rvm-train --config finetune --data MY_CLIPS --out runs/ft --init rvm_mobilenetv3.pth [--size 512]
    rvm-train --config qat --data runs/synthetic --out runs/qat --init CKPT      (quantisation-aware, for int8)
    torchrun --standalone --nproc_per_node 2 -m training.cli --config ...   (DDP)

Exit codes: 0 done, 2 bad arguments or configuration or a clip folder (finetune) that breaks its layout,
3 the paper's data sets missing or mis-laid, 4 checkpoint/resume problem.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import torch

from model import CheckpointError

from .config import PRESETS, get_preset
from .errors import EXIT_CHECKPOINT, EXIT_OK, EXIT_USAGE, ConfigError, TrainingError

__all__ = ["main", "build_parser"]


class _OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line on stderr and exit 2 (the usage block stays behind --help)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _float_in(low: float, high: float, low_open: bool = True):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not ((low < value) if low_open else (low <= value)) or not value <= high:
            raise argparse.ArgumentTypeError(f"must be in {'(' if low_open else '['}{low:g}, {high:g}], got {value:g}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="rvm-train", description=__doc__.split("\n\n")[0].replace("``", ""),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="Data layouts, stages and DDP launch: docs/training.md")
    parser.add_argument("--config", choices=sorted(PRESETS), help="training preset")
    parser.add_argument("--data", type=Path, help="data root holding the layouts the preset names")
    parser.add_argument("--out", type=Path, help="run folder: checkpoint_last.pth, metrics.jsonl, tensorboard/")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint_last.pth")
    parser.add_argument("--steps", type=_int_at_least(1), help="total optimizer steps (overrides the preset's epochs)")
    parser.add_argument("--batch-size", type=_int_at_least(1), help="clips per process per pass")
    parser.add_argument("--size", type=_int_at_least(16), help="side of the square training crop in px (the preset's lr_size)")
    parser.add_argument("--crop-min", type=_float_in(0.0, 1.0), help="smallest per-batch random crop side, as a fraction of --size")
    parser.add_argument("--lr-scale", type=_float_in(0.0, 1e6), help="multiply every learning rate of the preset by this")
    parser.add_argument("--seed", type=_int_at_least(0), help="seed of initialisation, data order and augmentation")
    parser.add_argument("--num-workers", type=_int_at_least(0), help="DataLoader workers per data stream")
    parser.add_argument("--log-every", type=_int_at_least(1), help="steps between loss records")
    parser.add_argument("--eval-every", type=_int_at_least(1), help="steps between validations")
    parser.add_argument("--checkpoint-every", type=_int_at_least(1), help="steps between checkpoints")
    parser.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                        help="float16 autocast (CUDA only); default: the preset's choice")
    parser.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=None,
                        help="write TensorBoard events; default: the preset's choice")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=_int_at_least(1), help="torch.set_num_threads for this process")
    parser.add_argument("--init", type=Path, help="start from these weights (the previous stage's checkpoint)")
    parser.add_argument("--backbone-weights", type=Path, help="torchvision ImageNet weights for the encoder")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    parser.add_argument("--make-synthetic", type=Path, metavar="DIR",
                        help="write the synthetic data set to DIR and exit")
    parser.add_argument("--synthetic-spec", choices=("small", "tiny", "clips", "clips-tiny"), default="small",
                        help="small: the smoke preset's set; tiny: tests; clips, clips-tiny: a set in the "
                             "finetune layout (clips/<clip>/frames + alpha, and videos)")
    parser.add_argument("--check-data", type=Path, metavar="DIR",
                        help="check DIR against --config's data layout, print what was found, and exit")
    return parser


_OVERRIDES = {"steps": "max_steps", "batch_size": "batch_size", "size": "lr_size", "crop_min": "batch_crop_min",
              "seed": "seed", "num_workers": "num_workers",
              "log_every": "log_every", "eval_every": "eval_every", "checkpoint_every": "checkpoint_every",
              "amp": "amp", "tensorboard": "tensorboard"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.make_synthetic is not None:
            return _make_synthetic(parser, args)
        if args.check_data is not None:
            return _check_data(args)
        missing = [flag for flag, value in (("--config", args.config), ("--data", args.data), ("--out", args.out))
                   if value is None]
        if missing:
            parser.print_usage(sys.stderr)
            print(f"rvm-train: error: {', '.join(missing)} required (or use --make-synthetic DIR)", file=sys.stderr)
            return EXIT_USAGE
        if args.threads is not None:
            torch.set_num_threads(args.threads)
        cfg = _config(args)
        from .train import train  # heavy imports only when training

        last = train(cfg, args.data, args.out, resume=args.resume, init=args.init,
                     backbone_weights=args.backbone_weights, device=args.device, progress=not args.no_progress)
        if "valid" in last:
            valid = last["valid"]
            print(f"step {valid['step']}: valid pha_mad {valid['pha_mad']:.2f} "
                  f"(all-zero baseline {valid['baseline_zero_pha_mad']:.2f}); checkpoint in {args.out}")
        if last.get("best"):
            print(f"best: step {last['best']['step']}, valid pha_mad {last['best']['pha_mad']:.2f} "
                  f"-> {args.out / 'checkpoint_best.pth'}")
        return EXIT_OK
    except TrainingError as exc:
        for line in getattr(exc, "problems", None) or [str(exc)]:  # a clip layout: one line per problem
            print(f"rvm-train: error: {line}", file=sys.stderr)
        return exc.exit_code
    except CheckpointError as exc:
        print(f"rvm-train: error: {exc}", file=sys.stderr)
        return EXIT_CHECKPOINT


def _config(args: argparse.Namespace):
    """The preset named by ``--config`` with the command line's overrides; raises ConfigError."""
    cfg = get_preset(args.config)
    changes = {field: getattr(args, arg) for arg, field in _OVERRIDES.items() if getattr(args, arg) is not None}
    if args.lr_scale is not None:
        if not args.lr_scale > 0:
            raise ConfigError(f"--lr-scale must be > 0, got {args.lr_scale}")
        changes.update({f: getattr(cfg, f) * args.lr_scale for f in ("lr_backbone", "lr_aspp", "lr_decoder",
                                                                      "lr_refiner")})
    return cfg.replace(**changes)


def _check_data(args: argparse.Namespace) -> int:
    """``--check-data DIR``: open DIR as ``--config`` would before training; print what was found."""
    conflicting = [flag for flag, value in (("--data", args.data), ("--out", args.out), ("--resume", args.resume),
                                            ("--make-synthetic", args.make_synthetic)) if value]
    if args.config is None or conflicting:
        raise ConfigError("--check-data DIR needs --config (e.g. finetune) and does not combine with "
                          f"{', '.join(conflicting) or '--data/--out/--resume'}")
    cfg = _config(args)
    if cfg.data_layout == "clips":
        from .clip_data import check_clip_data

        lines = check_clip_data(cfg, args.check_data)
    else:
        from .datasets import open_data

        data = open_data(cfg, args.check_data)
        lines = [f"{args.check_data}: {len(data.matting_train.clips)} train and {len(data.matting_valid.clips)} "
                 f"valid {cfg.matting_set} clips; segmentation {'on' if cfg.segmentation else 'off'}"]
    print("\n".join(lines + [f"ok: {args.check_data} is usable by the {cfg.name} preset"]))
    return EXIT_OK


def _make_synthetic(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    conflicting = [flag for flag, value in (("--config", args.config), ("--data", args.data), ("--out", args.out),
                                            ("--resume", args.resume), ("--check-data", args.check_data)) if value]
    if conflicting:
        print(f"rvm-train: error: --make-synthetic does not combine with {', '.join(conflicting)}", file=sys.stderr)
        return EXIT_USAGE
    root: Path = args.make_synthetic
    if root.exists() and any(root.iterdir()):
        print(f"rvm-train: error: {root} exists and is not empty; choose a new folder", file=sys.stderr)
        return EXIT_USAGE
    from .synthetic import make_synthetic

    counts = make_synthetic(root, seed=args.seed or 0, spec=args.synthetic_spec)
    print(f"wrote the {args.synthetic_spec!r} synthetic set (seed {args.seed or 0}) to {root}: "
          + ", ".join(f"{name} {n} files" for name, n in counts.items()))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
