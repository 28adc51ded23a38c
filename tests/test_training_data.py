"""Layout readers, datasets, sampler and augmentation on the generated synthetic set."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from training.augment import FOREGROUND, affine_matrix, augment_clip, fit_short_side, warp
from training.config import get_preset
from training.datasets import (STREAMS, MattingDataset, SegmentationClipDataset, SegmentationImageDataset,
                               ValidationClips, composite, open_data)
from training.errors import DataLayoutError
from training.layouts import (BackgroundVideoReader, CocoPanopticReader, ImageMatteReader, SuperviselyReader,
                              VideoMatteReader, YouTubeVISReader)
from training.sampler import SPEEDS, PositionBatchSampler, position_to_index, sample_frame_indices
from training.synthetic import SPECS, make_synthetic

pytestmark = pytest.mark.training
TINY = SPECS["tiny"]


def test_videomatte_and_image_matte_readers(training_synthetic_root):
    train = VideoMatteReader(training_synthetic_root / "videomatte_sd", "train")
    assert len(train.clips) == TINY.matting_clips[0]
    assert all(len(c) == TINY.frames and len(c.alphas) == TINY.frames for c in train.clips)
    assert [p.stem for p in train.clips[0].frames] == [p.stem for p in train.clips[0].alphas]
    assert len(VideoMatteReader(training_synthetic_root / "videomatte_sd", "valid").clips) == TINY.matting_clips[1]
    images = ImageMatteReader(training_synthetic_root / "imagematte", "train")
    assert len(images.clips) == TINY.image_mattes[0] and all(len(c) == 1 for c in images.clips)
    videos = BackgroundVideoReader(training_synthetic_root / "backgrounds/videos", "train")
    assert len(videos.clips) == TINY.background_videos[0]


def test_coco_panoptic_person_masks_include_backpacks_and_skip_images_without_people(training_synthetic_root):
    coco = CocoPanopticReader(training_synthetic_root / "coco")
    assert len(coco) == TINY.coco_images  # the extra image without a person is skipped
    image, mask = coco.load(0)
    assert image.shape == (3, *TINY.size) and mask.shape == (1, *TINY.size)
    _, png, ids = coco.items[0]
    assert ids == (2, 3)  # person and backpack segments, not the wall
    assert 0.05 < mask.mean().item() < 0.9 and set(mask.unique().tolist()) == {0.0, 1.0}


def test_supervisely_masks(training_synthetic_root):
    spd = SuperviselyReader(training_synthetic_root / "supervisely")
    image, mask = spd.load(1)
    assert len(spd) == TINY.supervisely_images
    assert image.shape == (3, *TINY.size) and set(mask.unique().tolist()) == {0.0, 1.0}


def test_youtubevis_masks_from_compressed_and_uncompressed_rle(training_synthetic_root):
    vis = YouTubeVISReader(training_synthetic_root / "youtubevis")
    assert len(vis.clips) == TINY.youtubevis_videos  # only the person instances are kept, the panda is not
    instances = json.loads((training_synthetic_root / "youtubevis/train/instances.json").read_text())
    assert isinstance(instances["annotations"][2]["segmentations"][0]["counts"], list)  # video 2: uncompressed
    # Video 1: the person appears from frame 2 on (null segmentations before).
    assert vis.load(0, 0)[1].sum().item() == 0 and vis.load(0, 1)[1].sum().item() == 0
    image, mask = vis.load(0, 3)
    assert image.shape == (3, *TINY.size) and 0.05 < mask.mean().item() < 0.9
    # The panda square is painted 0.9 grey and never part of the mask.
    image, mask = vis.load(1, 0)
    grey = (image - 0.9).abs().amax(0) < 0.03
    assert grey.sum().item() > 20 and mask.sum().item() > 0
    assert mask[0][grey].sum().item() == 0


def test_layout_errors_name_the_missing_path(tmp_path, training_synthetic_root):
    with pytest.raises(DataLayoutError, match="expected a folder at .*videomatte_sd/train/fgr"):
        VideoMatteReader(tmp_path / "videomatte_sd", "train")
    broken = tmp_path / "vm"
    shutil.copytree(training_synthetic_root / "videomatte_sd", broken)
    next((broken / "train/pha/0000").iterdir()).unlink()
    with pytest.raises(DataLayoutError, match="no partner"):
        VideoMatteReader(broken, "train")
    (tmp_path / "vis/train/JPEGImages").mkdir(parents=True)
    (tmp_path / "vis/train/instances.json").write_text("{not json")
    with pytest.raises(DataLayoutError, match="not valid JSON"):
        YouTubeVISReader(tmp_path / "vis")
    with pytest.raises(DataLayoutError, match="data folder not found"):
        open_data(get_preset("smoke"), tmp_path / "nowhere")


def test_synthetic_set_is_deterministic(tmp_path, training_synthetic_root):
    make_synthetic(tmp_path, seed=0, spec="tiny")
    for relative in ("videomatte_sd/train/pha/0001/0003.jpg", "coco/annotations/panoptic_train2017.json",
                     "youtubevis/train/instances.json", "backgrounds/videos/valid/0000/0002.jpg"):
        assert (tmp_path / relative).read_bytes() == (training_synthetic_root / relative).read_bytes()


@pytest.fixture(scope="module")
def sources(training_synthetic_root):
    return open_data(get_preset("smoke"), training_synthetic_root)


def test_matting_dataset_samples(sources, training_synthetic_root):
    data = MattingDataset(sources.matting_train, sources.backgrounds, 64, 4, seed=0, stream=STREAMS["matting_lr"])
    assert len(data) == TINY.matting_clips[0] * 2  # 6 frames per clip, one sample per 4 frames
    sample = data[3]
    assert sample["fgr"].shape == (4, 3, 64, 64) and sample["pha"].shape == (4, 1, 64, 64)
    assert sample["bgr"].shape == (4, 3, 64, 64)
    for value in sample.values():
        assert value.dtype == torch.float32 and value.min() >= 0 and value.max() <= 1
    again = data[3]
    assert all(torch.equal(sample[k], again[k]) for k in sample)  # a pure function of the position
    assert not torch.equal(sample["bgr"], data[4]["bgr"])
    src = composite(sample["fgr"], sample["pha"], sample["bgr"])
    assert torch.allclose(src, sample["fgr"] * sample["pha"] + sample["bgr"] * (1 - sample["pha"]))
    image_data = MattingDataset(ImageMatteReader(training_synthetic_root / "imagematte", "train"),
                                sources.backgrounds, 64, 3, seed=0, stream=STREAMS["matting_lr"])
    assert image_data[0]["pha"].shape == (3, 1, 64, 64)


def test_segmentation_datasets(sources):
    clips = SegmentationClipDataset(sources.seg_video, 64, 3, seed=0, stream=STREAMS["seg_video"])
    sample = clips[1]
    assert sample["img"].shape == (3, 3, 64, 64) and sample["seg"].shape == (3, 1, 64, 64)
    assert set(sample["seg"].unique().tolist()) <= {0.0, 1.0}
    images = SegmentationImageDataset(sources.seg_images, 64, seed=0, stream=STREAMS["seg_image"])
    assert len(images) == TINY.coco_images + TINY.supervisely_images
    assert images[5]["img"].shape == (1, 3, 64, 64)


def test_validation_clips_are_deterministic_centre_crops(sources):
    valid = ValidationClips(sources.matting_valid, sources.valid_backgrounds, 64, 8, count=5)
    assert len(valid) == TINY.matting_clips[1]  # fewer clips than asked for
    sample = valid[0]
    assert sample["fgr"].shape == (8, 3, 64, 64)
    assert torch.equal(sample["pha"][-1], sample["pha"][TINY.frames - 1])  # short clips hold their last frame
    assert torch.equal(valid[0]["bgr"], sample["bgr"])


def test_positions_split_the_global_batch_across_processes():
    single = iter(PositionBatchSampler(4, rank=0, world_size=1, start_batch=3))
    ranks = [iter(PositionBatchSampler(2, rank=r, world_size=2, start_batch=3)) for r in range(2)]
    for _ in range(3):
        assert next(single) == next(ranks[0]) + next(ranks[1])
    # Each epoch visits every index once.
    assert sorted(position_to_index(0, 0, p, 10) for p in range(10, 20)) == list(range(10))


def test_frame_sampler_speeds_reversal_and_bounds():
    seen_speeds, reversed_seen = set(), False
    for seed in range(200):
        rng = np.random.default_rng(seed)
        indices = sample_frame_indices(rng, length=7, count=10, start=2)
        assert all(0 <= i < 7 for i in indices)
        steps = {abs(b - a) for a, b in zip(indices, indices[1:])}
        seen_speeds |= steps
        reversed_seen |= indices[-1] == 2
    assert reversed_seen and {0, 1, 2, 3, 4, 5} <= seen_speeds  # 0: speed 0.5 repeats frames
    assert SPEEDS == (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)


def test_identity_warp_and_fit_short_side():
    frames = torch.rand(2, 4, 16, 16)
    identity = np.repeat(np.eye(3)[None], 2, axis=0)
    assert torch.allclose(warp(frames, identity, 16, "zeros"), frames, atol=1e-5)
    half = np.repeat(np.diag([0.5, 0.5, 1.0])[None], 2, axis=0)  # source -> output scaled by 1/2
    assert torch.allclose(warp(frames, half, 8, "zeros"), torch.nn.functional.avg_pool2d(frames, 2), atol=1e-5)
    assert fit_short_side(torch.rand(1, 3, 30, 60), 15).shape[-2:] == (15, 30)
    assert fit_short_side(torch.rand(1, 3, 30, 60), 45, shrink_only=True).shape[-2:] == (30, 60)
    rotate = affine_matrix((8.0, 8.0), degrees=90.0)
    assert np.allclose(rotate @ [12.0, 8.0, 1.0], [8.0, 12.0, 1.0])  # about the centre


def test_augment_clip_keeps_alpha_aligned_and_in_range():
    frames = torch.zeros(4, 4, 32, 32)
    frames[:, :3] = 0.5
    frames[:, 3, 8:24, 8:24] = 1.0
    out = augment_clip(np.random.default_rng(1), FOREGROUND, frames, 24)
    assert out.shape == (4, 4, 24, 24)
    assert out.min() >= 0 and out.max() <= 1
    assert out[:, 3].sum() > 0
