"""Training configurations: the paper's four stages (Lin et al., arXiv 2108.11515, section 4), a CPU smoke preset
and ``finetune``, which starts from trained weights and needs only the user's own clips (training/clips.py).

A configuration is a frozen, validated dataclass; a run's resolved configuration is stored in its checkpoints as a
plain dict (``to_dict``) and read back with ``from_dict``. ``get_lr`` is a pure function of the step.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from .errors import ConfigError

__all__ = ["TrainConfig", "PRESETS", "get_preset", "get_lr", "MIN_MATTING_SIZE", "BOOKKEEPING_FIELDS"]

# The 5-level Laplacian loss pads each level by 2 (reflect) and halves 4 times: level 4 needs at least 4 pixels.
MIN_MATTING_SIZE = 64
# Fields that only change how a run is observed or scheduled; a resumed run may change them, nothing else.
BOOKKEEPING_FIELDS = frozenset({"max_steps", "log_every", "eval_every", "checkpoint_every", "num_workers",
                                "tensorboard"})


@dataclass(frozen=True)
class TrainConfig:
    name: str  # preset name, recorded in checkpoints and logs
    variant: Literal["mobilenetv3", "resnet50"] = "mobilenetv3"  # encoder: RVM (MobileNetV3) or RVM-Large (ResNet-50)
    refiner: Literal["deep_guided_filter", "fast_guided_filter"] = "deep_guided_filter"  # trained by the HR pass

    # -- data (subfolders of --data; see docs/training.md for the layouts) -----------------------------------------
    data_layout: Literal["paper", "clips"] = "paper"  # paper: the stages' data sets; clips: the user's own clips
    matting_set: str = "videomatte_sd"  # foreground+alpha source: VideoMatte240K SD/HD clips or image-matting sets
    matting_kind: Literal["video", "image"] = "video"  # clips (frame sampler) or single images repeated T times
    background_images: str = "backgrounds/images"  # half of the backgrounds: still images moved by augmentation
    background_videos: str = "backgrounds/videos"  # the other half: clips read through the frame sampler
    segmentation: bool | Literal["auto"] = True  # the paper trains it jointly; "auto" (clips): on if its sets exist
    seg_video_set: str = "youtubevis"  # even steps: YouTubeVIS person clips
    seg_image_sets: tuple[str, ...] = ("coco", "supervisely")  # odd steps: COCO panoptic + Supervisely images (T=1)
    valid_fraction: float = 0.2  # clips layout: share of the clips held out for validation (picked by name hash)
    own_background_prob: float = 0.5  # clips layout with backgrounds/: chance a sample keeps the footage as shot

    # -- shapes ----------------------------------------------------------------------------------------------------
    lr_size: int = 512  # side of the square LR crop (paper: 512 px)
    seq_length_lr: int = 15  # frames per LR clip (paper: 15, 50, 40, 40 for stages 1-4)
    hr_pass: bool = False  # stages 3-4 add a high-resolution pass that trains the refiner
    hr_size: int = 2048  # side of the square HR crop (paper: 2048 px)
    seq_length_hr: int = 6  # frames per HR clip (paper: 6)
    hr_ratio: float = 0.25  # downsample_ratio of the HR pass (paper: 0.25, so the low-res path sees 512 px)
    seg_seq_length: int = 15  # frames per segmentation clip; odd steps take batch_size * this many images
    batch_size: int = 4  # clips per process per pass; the global batch is this times the world size
    batch_crop_min: float = 0.5  # random crop per batch (same for all frames): each side in [min * size, size]

    # -- optimisation ----------------------------------------------------------------------------------------------
    lr_backbone: float = 1e-4  # Adam LR of the encoder
    lr_aspp: float = 2e-4  # Adam LR of LR-ASPP
    lr_decoder: float = 2e-4  # Adam LR of the decoder and both projection heads
    lr_refiner: float = 0.0  # Adam LR of the refiner (0 until the HR pass exists, stages 1-2)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # the paper keeps each stage's LRs constant
    warmup_steps: int = 0  # linear warm-up from 0; helps training from scratch (smoke preset)
    min_lr_ratio: float = 0.1  # cosine schedule floor, as a fraction of each base LR
    epochs: float = 20.0  # paper's stage length; one epoch = every matting sample once (global batch)
    max_steps: int = 0  # if > 0, overrides epochs (smoke preset, --steps)
    amp: bool = True  # float16 autocast + GradScaler; CUDA only (refused on CPU)
    fgr_alpha_threshold: float = 0.0  # foreground loss where true alpha > this; clips: 0.99, where frame = foreground
    init_required: bool = False  # finetune: refuse to start from random weights (pass --init)
    qat: bool = False  # quantisation-aware training: int8 fake quantisation in the loop (training/qat.py)
    seed: int = 0  # drives initialisation, data order and every augmentation draw

    # -- bookkeeping -----------------------------------------------------------------------------------------------
    log_every: int = 10  # steps between JSONL/TensorBoard loss records
    eval_every: int = 1000  # steps between validations (alpha MAD etc. on the matting set's valid split)
    checkpoint_every: int = 500  # steps between atomic checkpoint_last.pth writes
    valid_clips: int = 16  # validation clips (the first N of the valid split)
    valid_seq_length: int = 15  # frames per validation clip, run recurrently at ratio 1
    num_workers: int = 4  # DataLoader worker processes per data stream
    tensorboard: bool = True  # also write TensorBoard events next to metrics.jsonl

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ConfigError(f"invalid training config {self.name!r}:\n  " + "\n  ".join(problems))

    def _problems(self):
        from model import VARIANTS
        from model.guided_filter import REFINERS

        if self.variant not in VARIANTS:
            yield f"variant must be one of {sorted(VARIANTS)}, got {self.variant!r}"
        if self.refiner not in REFINERS:
            yield f"refiner must be one of {sorted(REFINERS)}, got {self.refiner!r}"
        if self.data_layout not in ("paper", "clips"):
            yield f"data_layout must be 'paper' or 'clips', got {self.data_layout!r}"
        if self.segmentation not in (True, False, "auto"):
            yield f"segmentation must be True, False or 'auto', got {self.segmentation!r}"
        if self.segmentation == "auto" and self.data_layout != "clips":
            yield "segmentation='auto' is for the clips layout; the paper's stages name their sets (True or False)"
        if not 0.0 < self.valid_fraction < 1.0:
            yield f"valid_fraction must be in (0, 1), got {self.valid_fraction}"
        if not 0.0 <= self.own_background_prob <= 1.0:
            yield f"own_background_prob must be in [0, 1], got {self.own_background_prob}"
        if not 0.0 <= self.fgr_alpha_threshold < 1.0:
            yield f"fgr_alpha_threshold must be in [0, 1), got {self.fgr_alpha_threshold}"
        if self.matting_kind not in ("video", "image"):
            yield f"matting_kind must be 'video' or 'image', got {self.matting_kind!r}"
        if self.lr_schedule not in ("constant", "cosine"):
            yield f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}"
        if not 0.0 < self.batch_crop_min <= 1.0:
            yield f"batch_crop_min must be in (0, 1], got {self.batch_crop_min}"
        sizes = [("lr_size", self.lr_size)] + ([("hr_size", self.hr_size)] if self.hr_pass else [])
        for field, size in sizes:
            if math.ceil(size * self.batch_crop_min) < MIN_MATTING_SIZE:
                yield (f"{field} * batch_crop_min = {size * self.batch_crop_min:g} px is below {MIN_MATTING_SIZE} px, "
                       f"the smallest side the 5-level Laplacian loss accepts")
        for field in ("seq_length_lr", "seq_length_hr", "valid_seq_length"):
            if getattr(self, field) < 2:
                yield f"{field} must be >= 2 (the temporal-coherence losses need two frames), got {getattr(self, field)}"
        if self.segmentation and self.seg_seq_length < 1:
            yield f"seg_seq_length must be >= 1, got {self.seg_seq_length}"
        if self.segmentation and not self.seg_image_sets:
            yield "seg_image_sets is empty but segmentation is on"
        if self.hr_pass and not 0.0 < self.hr_ratio < 1.0:
            yield f"hr_ratio must be in (0, 1) (the refiner only runs below 1), got {self.hr_ratio}"
        if self.hr_pass and self.hr_size * self.hr_ratio * self.batch_crop_min < 32:
            yield f"the HR pass's low-res side ({self.hr_size * self.hr_ratio * self.batch_crop_min:g} px) is below 32"
        lrs = {"lr_backbone": self.lr_backbone, "lr_aspp": self.lr_aspp, "lr_decoder": self.lr_decoder,
               "lr_refiner": self.lr_refiner}
        for field, value in lrs.items():
            if not value >= 0.0:
                yield f"{field} must be >= 0, got {value}"
        if self.lr_refiner > 0 and not self.hr_pass:
            yield "lr_refiner > 0 has no effect without hr_pass (the refiner only runs at ratio < 1); set it to 0"
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            yield f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"
        if self.max_steps < 0 or (self.max_steps == 0 and not self.epochs > 0):
            yield f"set max_steps > 0 or epochs > 0 (got max_steps={self.max_steps}, epochs={self.epochs})"
        for field in ("batch_size", "log_every", "eval_every", "checkpoint_every", "valid_clips"):
            if getattr(self, field) < 1:
                yield f"{field} must be >= 1, got {getattr(self, field)}"
        for field in ("warmup_steps", "num_workers"):
            if getattr(self, field) < 0:
                yield f"{field} must be >= 0, got {getattr(self, field)}"

    # -- serialisation (checkpoints hold only weights_only-safe containers) -----------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; this checkpoint was written by another version")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def get_lr(step: int, cfg: TrainConfig) -> float:
    """LR multiplier at ``step`` (0-based): linear warm-up, then constant or cosine down to ``min_lr_ratio``.

    Needs a resolved ``cfg.max_steps`` for the cosine schedule. Pure: the same step always gives the same value.
    """
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    span = max(cfg.max_steps - cfg.warmup_steps, 1)
    progress = min(max(step - cfg.warmup_steps, 0) / span, 1.0)
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


_STAGE1 = TrainConfig(name="stage1", matting_set="videomatte_sd", seq_length_lr=15, seg_seq_length=15, batch_size=4,
                      lr_backbone=1e-4, lr_aspp=2e-4, lr_decoder=2e-4, lr_refiner=0.0, epochs=20)

PRESETS: dict[str, TrainConfig] = {
    "stage1": _STAGE1,
    "stage2": _STAGE1.replace(name="stage2", seq_length_lr=50, seg_seq_length=50, batch_size=2, lr_backbone=5e-5,
                              lr_aspp=1e-4, lr_decoder=1e-4, epochs=2),
    "stage3": _STAGE1.replace(name="stage3", matting_set="videomatte_hd", seq_length_lr=40, seg_seq_length=40,
                              batch_size=1, hr_pass=True, lr_backbone=1e-5, lr_aspp=1e-5, lr_decoder=1e-5,
                              lr_refiner=2e-4, epochs=1),
    "stage4": _STAGE1.replace(name="stage4", matting_set="imagematte", matting_kind="image", seq_length_lr=40,
                              seg_seq_length=40, batch_size=1, hr_pass=True, lr_backbone=1e-5, lr_aspp=1e-5,
                              lr_decoder=5e-5, lr_refiner=2e-4, epochs=5),
    # CPU smoke test on the synthetic set (rvm-train --make-synthetic): random init, so higher LRs and a warm-up.
    "smoke": _STAGE1.replace(name="smoke", lr_size=64, seq_length_lr=4, seg_seq_length=4, batch_size=2,
                             batch_crop_min=1.0, lr_backbone=1e-3, lr_aspp=1e-3, lr_decoder=1e-3, lr_schedule="cosine",
                             warmup_steps=50, max_steps=1200, amp=False, log_every=10, eval_every=100,
                             checkpoint_every=100, valid_clips=8, valid_seq_length=8, num_workers=1),
    # The user's own clips from trained weights: LRs at stage 3-4 level (the released behaviour stays), validation
    # every 50 steps on held-out clips, checkpoint_best.pth kept; AMP off so the same command runs on CPU.
    "finetune": _STAGE1.replace(name="finetune", data_layout="clips", matting_set="clips",
                                background_images="backgrounds", background_videos="", segmentation="auto",
                                seq_length_lr=8, seg_seq_length=8, batch_size=2, lr_backbone=1e-5, lr_aspp=1e-5,
                                lr_decoder=5e-5, lr_schedule="cosine", max_steps=500, amp=False,
                                fgr_alpha_threshold=0.99, init_required=True, log_every=10, eval_every=50,
                                checkpoint_every=50, valid_clips=64, valid_seq_length=16, num_workers=2),
    # Quantisation-aware training from trained weights (training/qat.py): int8 fake quantisation of weights and
    # activations, BatchNorm frozen, LRs a tenth of the smoke preset's, on the smoke preset's data and shapes; the
    # checkpoint holds weights already on the int8 grid, for rvm-export --precision int8.
    "qat": _STAGE1.replace(name="qat", lr_size=64, seq_length_lr=4, seg_seq_length=4, batch_size=2,
                           batch_crop_min=1.0, lr_backbone=1e-4, lr_aspp=1e-4, lr_decoder=1e-4, lr_schedule="cosine",
                           max_steps=300, amp=False, qat=True, init_required=True, log_every=10, eval_every=50,
                           checkpoint_every=50, valid_clips=8, valid_seq_length=8, num_workers=1),
}


def get_preset(name: str) -> TrainConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown config {name!r}; choose one of {sorted(PRESETS)}") from None
