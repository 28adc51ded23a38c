"""The RVM training loop (Lin et al., arXiv 2108.11515, section 4), one flat loop in the spirit of nanoGPT.

One step: LR matting pass at ratio 1; for stages 3-4 an HR matting pass at ``hr_ratio``; then a segmentation pass
(even steps: YouTubeVIS clips; odd steps: COCO + Supervisely images as one-frame clips). Each pass has its own
backward and optimizer step. Launch several processes with ``torchrun`` for DDP (SyncBatchNorm, gloo on CPU).
"""
from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from model import MattingNetwork, load_backbone_weights, load_checkpoint

from . import distributed
from .checkpoint import BEST_NAME, CHECKPOINT_NAME, capture_rng, read_training_checkpoint, restore_rng, save_atomic
from .clip_data import ClipMattingDataset, ClipValidation, open_clip_data
from .config import BOOKKEEPING_FIELDS, TrainConfig, get_lr
from .datasets import (STREAMS, DataSources, MattingDataset, SegmentationClipDataset, SegmentationImageDataset,
                       ValidationClips, composite, open_data)
from .errors import ConfigError, ResumeError
from .losses import matting_loss, segmentation_loss
from .metrics import MetricAccumulator
from .metrics_log import MetricsLog
from .qat import prepare_qat, project_weights
from .sampler import PositionBatchSampler

__all__ = ["train", "validate", "param_groups", "random_crop", "resolve_steps", "DataLayout", "DATA_LAYOUTS"]

MODULE_GROUPS = {"backbone": "backbone", "aspp": "aspp", "decoder": "decoder", "project_mat": "decoder",
                 "project_seg": "decoder", "refiner": "refiner"}


@dataclass(frozen=True)
class DataLayout:
    """How a ``data_layout`` is read: ``open(cfg, root)`` checks it all before any work (raises DataLayoutError);
    ``matting(...)`` and ``validation(...)`` take :class:`MattingDataset`'s and :class:`ValidationClips`' arguments."""
    open: Callable[[TrainConfig, Path], DataSources]
    matting: type
    validation: type


DATA_LAYOUTS = {"paper": DataLayout(open_data, MattingDataset, ValidationClips),
                "clips": DataLayout(open_clip_data, ClipMattingDataset, ClipValidation)}


def param_groups(model: MattingNetwork, cfg: TrainConfig) -> list[dict[str, Any]]:
    """Adam parameter groups with the per-module learning rates (decoder LR also for both projection heads)."""
    lrs = {"backbone": cfg.lr_backbone, "aspp": cfg.lr_aspp, "decoder": cfg.lr_decoder, "refiner": cfg.lr_refiner}
    params: dict[str, list[Tensor]] = {name: [] for name in lrs}
    for name, param in model.named_parameters():
        params[MODULE_GROUPS[name.split(".")[0]]].append(param)
    return [{"params": p, "lr": lrs[g], "base_lr": lrs[g], "name": g} for g, p in params.items() if p]


def random_crop(rng: np.random.Generator, min_fraction: float, *tensors: Tensor) -> list[Tensor]:
    """One random crop for the whole batch (all samples and frames): each side uniform in [min * size, size]."""
    h, w = tensors[0].shape[-2:]
    ch = int(rng.integers(math.ceil(h * min_fraction), h + 1))
    cw = int(rng.integers(math.ceil(w * min_fraction), w + 1))
    top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    return [t[..., top:top + ch, left:left + cw] for t in tensors]


def resolve_steps(cfg: TrainConfig, samples_per_epoch: int, world_size: int) -> TrainConfig:
    """Fill in ``max_steps`` from ``epochs`` (one epoch = every matting sample once at the global batch size)."""
    if cfg.max_steps > 0:
        return cfg
    return cfg.replace(max_steps=max(1, math.ceil(cfg.epochs * samples_per_epoch / (cfg.batch_size * world_size))))


def _loader(dataset: Dataset, batch_size: int, env: distributed.DistEnv, start_batch: int, workers: int):
    sampler = PositionBatchSampler(batch_size, env.rank, env.world_size, start_batch)
    return iter(DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                           pin_memory=env.device.type == "cuda", prefetch_factor=2 if workers else None))


@torch.no_grad()
def validate(model: MattingNetwork, clips: ValidationClips, device: torch.device, amp: bool) -> dict[str, float]:
    """Paper metrics over the validation clips (run recurrently at ratio 1) and the all-zero-alpha baseline MAD."""
    was_training = model.training
    model.eval()
    metrics, zero = MetricAccumulator(), MetricAccumulator(("pha_mad",))
    for index in range(len(clips)):
        sample = clips[index]
        src = composite(sample["fgr"], sample["pha"], sample["bgr"])[None].to(device)
        with torch.autocast(device.type, torch.float16, enabled=amp):
            pred_fgr, pred_pha = model(src)[:2]
        pred_pha = pred_pha[0, :, 0].float().cpu().numpy()
        true_pha = sample["pha"][:, 0].numpy()
        metrics.add_clip(pred_pha, true_pha, pred_fgr[0].float().cpu().numpy(), sample["fgr"].numpy())
        zero.add_clip(np.zeros_like(true_pha), true_pha)
    model.train(was_training)
    return {**metrics.result(), "baseline_zero_pha_mad": zero.result()["pha_mad"]}


def _check_resume(saved: TrainConfig, requested: TrainConfig) -> TrainConfig:
    changed = [f"{f}: checkpoint {getattr(saved, f)!r}, requested {getattr(requested, f)!r}"
               for f in saved.to_dict() if f not in BOOKKEEPING_FIELDS and getattr(saved, f) != getattr(requested, f)]
    if changed:
        raise ResumeError("the checkpoint was written with another configuration; only "
                          f"{sorted(BOOKKEEPING_FIELDS)} may change on resume:\n  " + "\n  ".join(changed))
    keep = {f: getattr(requested, f) for f in BOOKKEEPING_FIELDS if f != "max_steps"}
    return saved.replace(max_steps=requested.max_steps or saved.max_steps, **keep)


def train(cfg: TrainConfig, data_dir: str | Path, out_dir: str | Path, *, resume: bool = False,
          init: str | Path | None = None, backbone_weights: str | Path | None = None, device: str = "auto",
          progress: bool = True) -> dict[str, Any]:
    """Train ``cfg`` on ``data_dir``; write ``checkpoint_last.pth``, ``checkpoint_best.pth`` (the weights of the
    lowest validation alpha MAD so far) and ``metrics.jsonl`` to ``out_dir``.

    Returns the last train and valid records and the best one. Raises ConfigError, DataLayoutError (before any
    file is written) or ResumeError on bad input, CheckpointError for an unusable ``init``.
    """
    env = distributed.setup(device)
    try:
        return _train(cfg, Path(data_dir), Path(out_dir), env, resume, init, backbone_weights, progress)
    finally:
        distributed.cleanup(env)


def _train(cfg: TrainConfig, data_dir: Path, out_dir: Path, env: distributed.DistEnv, resume: bool,
           init: str | Path | None, backbone_weights: str | Path | None, progress: bool) -> dict[str, Any]:
    checkpoint_path = out_dir / CHECKPOINT_NAME
    if cfg.amp and env.device.type != "cuda":
        raise ConfigError(f"config {cfg.name!r} asks for mixed precision, which needs CUDA; pass --no-amp on "
                          f"{env.device.type}")
    if resume and (init or backbone_weights):
        raise ConfigError("--resume continues from the checkpoint's weights; do not combine it with --init or "
                          "--backbone-weights")
    if cfg.init_required and not (init or resume):
        raise ConfigError(f"config {cfg.name!r} fine-tunes trained weights: pass --init CKPT (the released "
                          f"rvm_{cfg.variant}.pth or .safetensors, or a checkpoint_best.pth of ours)")
    if not resume and checkpoint_path.exists():
        raise ResumeError(f"{checkpoint_path} exists: pass --resume to continue that run or choose another --out")
    layout = DATA_LAYOUTS[cfg.data_layout]
    data = layout.open(cfg, data_dir)
    if cfg.segmentation == "auto":
        cfg = cfg.replace(segmentation=data.seg_video is not None)
    out_dir.mkdir(parents=True, exist_ok=True)
    lr_data = layout.matting(data.matting_train, data.backgrounds, cfg.lr_size, cfg.seq_length_lr, cfg.seed,
                             STREAMS["matting_lr"])
    cfg = resolve_steps(cfg, len(lr_data), env.world_size)
    state = read_training_checkpoint(checkpoint_path) if resume else None
    if state is not None:
        cfg = _check_resume(TrainConfig.from_dict(state["config"]), cfg)

    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    model = MattingNetwork(cfg.variant, cfg.refiner)
    if init:
        model.load_state_dict(load_checkpoint(init, cfg.variant, cfg.refiner).state_dict())
    if backbone_weights:
        load_backbone_weights(model, backbone_weights)
    if state is not None:
        model.load_state_dict(state["model"])  # before QAT's fake quantisation renames the conv weights
    model = distributed.convert_sync_batchnorm(model.to(env.device).train(), env)
    if cfg.qat:
        counts = prepare_qat(model)
        if env.is_main:
            print(f"note: QAT: {counts['weights']} convolutions with int8 weights, {counts['activations']} "
                  "activations fake-quantised (training/qat.py)")
        model.train()
    optimizer = torch.optim.Adam(param_groups(model, cfg))
    scaler = torch.amp.GradScaler(env.device.type, enabled=cfg.amp)
    start_step = 0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scaler.load_state_dict(state["scaler"])
        restore_rng(state["rng"])
        start_step = int(state["step"])
        if int(state.get("world_size", env.world_size)) != env.world_size and env.is_main:
            print(f"note: resuming a {state['world_size']}-process run with {env.world_size} processes: "
                  "data positions continue, but batches are not split as before")
    raw_model = model
    if env.distributed:
        model = DistributedDataParallel(model, device_ids=[env.local_rank] if env.device.type == "cuda" else None,
                                        find_unused_parameters=True)  # each pass leaves some heads unused

    # Data streams start at the batch that follows the checkpoint; positions are pure functions of the step.
    data_state = state["data"] if state is not None else {
        "matting_lr": start_step, "matting_hr": start_step, "seg_video": 0, "seg_image": 0}
    lr_iter = _loader(lr_data, cfg.batch_size, env, data_state["matting_lr"], cfg.num_workers)
    if cfg.hr_pass:
        hr_data = layout.matting(data.matting_train, data.backgrounds, cfg.hr_size, cfg.seq_length_hr, cfg.seed,
                                 STREAMS["matting_hr"])
        hr_iter = _loader(hr_data, cfg.batch_size, env, data_state["matting_hr"], cfg.num_workers)
    if cfg.segmentation:
        seg_clips = SegmentationClipDataset(data.seg_video, cfg.lr_size, cfg.seg_seq_length, cfg.seed,
                                            STREAMS["seg_video"])
        seg_images = SegmentationImageDataset(data.seg_images, cfg.lr_size, cfg.seed, STREAMS["seg_image"])
        seg_clip_iter = _loader(seg_clips, cfg.batch_size, env, data_state["seg_video"], cfg.num_workers)
        seg_image_iter = _loader(seg_images, cfg.batch_size * cfg.seg_seq_length, env, data_state["seg_image"],
                                 cfg.num_workers)
    valid = layout.validation(data.matting_valid, data.valid_backgrounds, cfg.lr_size, cfg.valid_seq_length,
                              cfg.valid_clips)
    if env.is_main:
        for note in filter(None, data.notes):
            print(f"note: {note}")
    log = MetricsLog(out_dir, start_step if state is not None else None, cfg.tensorboard) if env.is_main else None
    autocast = torch.autocast("cuda", torch.float16) if cfg.amp else nullcontext()

    def optimise(loss: Tensor) -> None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

    def matting_pass(batch: dict[str, Tensor], ratio: float, crop_rng: np.random.Generator) -> dict[str, Tensor]:
        layers = (batch[k].to(env.device, non_blocking=True) for k in ("fgr", "pha", "bgr"))
        fgr, pha, bgr = random_crop(crop_rng, cfg.batch_crop_min, *layers)
        with autocast:
            pred_fgr, pred_pha = model(composite(fgr, pha, bgr), downsample_ratio=ratio)[:2]
        losses = matting_loss(pred_fgr, pred_pha, fgr, pha, cfg.fgr_alpha_threshold)
        optimise(losses["total"])
        return losses

    def weights() -> dict[str, Tensor]:
        """What checkpoints store: a plain MattingNetwork state dict (QAT: weights projected onto the int8 grid)."""
        return project_weights(raw_model) if cfg.qat else raw_model.state_dict()

    last: dict[str, Any] = {"best": state.get("best", {}) if state is not None else {}}

    def validate_and_keep_best(done: int) -> None:
        """Validate (rank 0); a lower alpha MAD than any before replaces checkpoint_best.pth (weights only)."""
        last["valid"] = {"step": done, "split": "valid", **validate(raw_model, valid, env.device, cfg.amp)}
        log.write(last["valid"])
        if last["valid"]["pha_mad"] < last["best"].get("pha_mad", math.inf):
            last["best"] = {"step": done, "pha_mad": last["valid"]["pha_mad"]}
            save_atomic({"model": weights(), "config": cfg.to_dict(), "step": done,
                         "valid": last["valid"]}, out_dir / BEST_NAME)

    if start_step == 0 and env.is_main:
        validate_and_keep_best(0)
    distributed.barrier(env)
    bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not (progress and env.is_main), desc=cfg.name)
    started = time.perf_counter()
    for step in range(start_step, cfg.max_steps):
        lr_scale = get_lr(step, cfg)
        for group in optimizer.param_groups:
            group["lr"] = group["base_lr"] * lr_scale
        crop_rng = np.random.default_rng([cfg.seed, 0xC409, step])  # same crop on every process
        record: dict[str, Tensor] = {}  # detached losses; read back (a device sync) only on log steps

        losses = matting_pass(next(lr_iter), 1.0, crop_rng)
        record.update({f"matting_{k}": v.detach() for k, v in losses.items()})
        if cfg.hr_pass:
            losses = matting_pass(next(hr_iter), cfg.hr_ratio, crop_rng)
            record.update({f"hr_matting_{k}": v.detach() for k, v in losses.items()})
        if cfg.segmentation:
            batch = next(seg_clip_iter) if step % 2 == 0 else next(seg_image_iter)
            img, seg = random_crop(crop_rng, cfg.batch_crop_min, batch["img"].to(env.device),
                                   batch["seg"].to(env.device))
            with autocast:
                logits = model(img, segmentation_pass=True)[0]
            loss = segmentation_loss(logits, seg)
            optimise(loss)
            record["seg_" + ("clip" if step % 2 == 0 else "image")] = loss.detach()

        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.max_steps:
            values = distributed.all_reduce_mean({k: v.item() for k, v in record.items()}, env)
            last["train"] = {"step": done, "split": "train", "lr_scale": lr_scale, **values,
                             "elapsed_s": round(time.perf_counter() - started, 3)}
            if env.is_main:
                log.write(last["train"])
            bar.set_postfix(loss=f"{values['matting_total']:.4f}")
        if done % cfg.eval_every == 0 or done == cfg.max_steps:
            if env.is_main:
                validate_and_keep_best(done)
                bar.write(f"step {done}: valid pha_mad {last['valid']['pha_mad']:.2f} "
                          f"(all-zero baseline {last['valid']['baseline_zero_pha_mad']:.2f})")
            distributed.barrier(env)
        if done % cfg.checkpoint_every == 0 or done == cfg.max_steps:
            if env.is_main:
                save_atomic({"model": weights(), "optimizer": optimizer.state_dict(),
                             "scaler": scaler.state_dict(), "config": cfg.to_dict(), "step": done,
                             "data": {"matting_lr": done, "matting_hr": done, "seg_video": (done + 1) // 2,
                                      "seg_image": done // 2},
                             "rng": capture_rng(), "world_size": env.world_size, "best": last["best"]},
                            checkpoint_path)
            distributed.barrier(env)
        bar.update(1)
    bar.close()
    if log is not None:
        log.close()
    return last
