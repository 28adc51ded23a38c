"""The finetune preset: the user's clip layout, its check (every bad layout exits 2 naming the file), the clip
datasets, and a short fine-tuning run that must lower the held-out alpha MAD and keep the best checkpoint."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model import MattingNetwork, load_checkpoint
from training.clip_data import ClipMattingDataset, ClipValidation, open_clip_data
from training.clips import read_alpha, scan_clip_set, split_clips
from training.cli import _config as cli_config
from training.cli import build_parser
from training.cli import main as train_main
from training.config import get_preset
from training.datasets import composite
from training.errors import ConfigError
from training.losses import matting_loss
from training.metrics_log import read_records
from training.synthetic import ClipSetSpec, make_clip_set
from training.train import train, validate

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("training_single_thread")]
SPEC = ClipSetSpec(size=(48, 64), frames=2, image_clips=5, video_clips=0)  # frames + alpha images only: no PyAV
FINETUNE = get_preset("finetune")


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    make_clip_set(root, seed=0, spec=SPEC)
    return root


@pytest.fixture
def clip_copy(clip_root, tmp_path) -> Path:
    """A private copy to break."""
    return Path(shutil.copytree(clip_root, tmp_path / "set"))


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("rvm-train: error:")]


def test_generated_set_is_found_as_written_and_split_by_name(clip_root, capsys):
    found = scan_clip_set(clip_root)
    assert found.problems == []
    assert [c.name for c in found.clips] == [f"clip_{i:03d}" for i in range(5)]
    assert all(len(c) == 2 and (c.height, c.width) == (48, 64) for c in found.clips)
    train, valid = split_clips(found.clips, 0.2)
    assert (len(train), len(valid)) == (4, 1) and not {c.name for c in train} & {c.name for c in valid}
    assert split_clips(found.clips[::-1], 0.2)[1] == valid  # the listing order does not change the split
    assert len(split_clips(found.clips, 0.99)[0]) == 1  # at least one clip always trains
    assert train_main(["--check-data", str(clip_root), "--config", "finetune"]) == 0
    out = capsys.readouterr().out
    assert "5 clips (4 train, 1 valid), 10 frames" in out
    assert f"{valid[0].name}  frames       2      64x48  valid" in out
    assert "segmentation off: no segmentation data" in out


def _drop_alpha(root: Path) -> str:
    (root / "clips/clip_001/alpha/0001.png").unlink()
    return "clips/clip_001/frames/0001.jpg"


def _shrink_alpha(root: Path) -> str:
    Image.new("L", (32, 24)).save(root / "clips/clip_002/alpha/0000.png")
    return "clips/clip_002/alpha/0000.png is 32x24 but its frame"


def _empty_clip(root: Path) -> str:
    (root / "clips/clip_009").mkdir()
    return "clips/clip_009: empty folder"


def _empty_frames(root: Path) -> str:
    for path in (root / "clips/clip_003/frames").iterdir():
        path.unlink()
    return "clips/clip_003/frames: empty folder"


@pytest.mark.parametrize("breaks", [_drop_alpha, _shrink_alpha, _empty_clip, _empty_frames],
                         ids=["missing-alpha", "size-mismatch", "empty-clip-folder", "empty-frames-folder"])
def test_bad_layout_exits_2_with_one_line_naming_the_file(clip_copy, capsys, breaks):
    named = breaks(clip_copy)
    assert train_main(["--check-data", str(clip_copy), "--config", "finetune"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and named in errors[0], errors


def test_every_problem_gets_its_own_line(clip_copy, capsys):
    named = [_drop_alpha(clip_copy), _shrink_alpha(clip_copy), _empty_clip(clip_copy)]
    assert train_main(["--check-data", str(clip_copy), "--config", "finetune"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 3 and all(any(n in e for e in errors) for n in named), errors


def test_training_on_a_bad_layout_stops_before_any_step(clip_copy, tmp_path, capsys):
    init = tmp_path / "init.pth"
    torch.save(MattingNetwork().state_dict(), init)
    named = _drop_alpha(clip_copy)
    out = tmp_path / "run"
    common = ["--config", "finetune", "--data", str(clip_copy), "--out", str(out), "--no-progress"]
    assert train_main(common + ["--init", str(init)]) == 2
    assert named in _errors(capsys)[0] and not out.exists()  # nothing written: no step, no checkpoint
    assert train_main(common) == 2  # no --init: the preset refuses random weights
    assert "pass --init" in _errors(capsys)[0] and not out.exists()


def test_video_clip_reads_back_and_a_frame_count_mismatch_is_named(clip_copy, capsys):
    pytest.importorskip("av")
    from training.video import write_video

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8)
    alphas = rng.integers(0, 256, (3, 48, 64), dtype=np.uint8)
    folder = clip_copy / "clips/clip_video"
    write_video(folder / "video.mkv", frames)  # FFV1: lossless, so the frames must come back exactly
    write_video(folder / "alpha.mkv", alphas)
    clip = next(c for c in scan_clip_set(clip_copy).clips if c.name == "clip_video")
    rgb, pha = clip.read([2, 0, 2], size=48)
    assert (len(clip), clip.kind) == (3, "video")
    assert torch.equal((rgb * 255).round().byte(), torch.from_numpy(frames[[2, 0, 2]]).permute(0, 3, 1, 2))
    assert torch.equal((pha[:, 0] * 255).round().byte(), torch.from_numpy(alphas[[2, 0, 2]]))
    write_video(clip_copy / "backgrounds/street.mkv", frames)  # a background video, drawn when own_prob is 0
    data = open_clip_data(FINETUNE.replace(own_background_prob=0.0), clip_copy)
    sample = ClipMattingDataset(data.matting_train, data.backgrounds, 32, 4, seed=0, stream=0)[0]
    assert len(data.backgrounds.videos) == 1 and sample["bgr"].shape == (4, 3, 32, 32)
    assert (sample["bgr"] - sample["fgr"]).abs().mean().item() > 0.1  # the noise video, not the frame
    write_video(folder / "alpha.mkv", alphas[:2])
    assert train_main(["--check-data", str(clip_copy), "--config", "finetune"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1, errors
    assert f"{folder / 'alpha.mkv'} has 2 frames but {folder / 'video.mkv'} has 3" in errors[0]


def test_rgba_alpha_images_give_their_a_channel(tmp_path):
    matte = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))  # [8, 64], 0..252
    rgba = np.dstack([np.full((8, 64, 3), 255, np.uint8), matte])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "cutout.png")
    Image.fromarray(matte, "L").save(tmp_path / "gray.png")
    for name in ("cutout.png", "gray.png"):
        assert torch.equal((read_alpha(tmp_path / name)[0] * 255).round().byte(), torch.from_numpy(matte)), name


def test_own_composite_is_the_frame_and_backgrounds_replace_it(clip_root, clip_copy):
    data = open_clip_data(FINETUNE, clip_root)
    own = ClipMattingDataset(data.matting_train, data.backgrounds, 64, 2, seed=0, stream=0)[0]
    assert (composite(own["fgr"], own["pha"], own["bgr"]) - own["fgr"]).abs().max().item() < 1e-6
    assert data.backgrounds.images == [] and data.valid_backgrounds is None
    Image.fromarray(np.full((48, 64, 3), (255, 0, 255), np.uint8)).save(clip_copy / "backgrounds.png")
    (clip_copy / "backgrounds").mkdir()
    shutil.move(clip_copy / "backgrounds.png", clip_copy / "backgrounds/magenta.png")
    moved = open_clip_data(FINETUNE.replace(own_background_prob=0.0), clip_copy)
    sample = ClipMattingDataset(moved.matting_train, moved.backgrounds, 64, 2, seed=0, stream=0)[0]
    assert (sample["bgr"] - sample["fgr"]).abs().mean().item() > 0.1  # a magenta background, not the frame
    assert (sample["bgr"][:, 1] < 0.1).float().mean().item() > 0.5  # green channel of magenta stays near 0
    valid = ClipValidation(data.matting_valid, None, 64, 16, count=8)[0]
    assert valid["fgr"].shape == (2, 3, 64, 85) and torch.equal(valid["fgr"], valid["bgr"])  # whole frames


def test_segmentation_turns_on_only_with_its_sets(clip_copy, training_synthetic_root, capsys):
    assert open_clip_data(FINETUNE, clip_copy).seg_video is None
    shutil.copytree(training_synthetic_root / "coco", clip_copy / "coco")
    assert train_main(["--check-data", str(clip_copy), "--config", "finetune"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "segmentation needs youtubevis/" in errors[0] and "found coco/" in errors[0]
    shutil.copytree(training_synthetic_root / "youtubevis", clip_copy / "youtubevis")
    data = open_clip_data(FINETUNE, clip_copy)
    assert len(data.seg_video.clips) == 2 and len(data.seg_images) == 1 and "segmentation on" in data.notes[-1]
    assert open_clip_data(FINETUNE.replace(segmentation=False), clip_copy).seg_video is None


def test_foreground_loss_counts_only_above_the_alpha_threshold():
    pha = torch.tensor([1.0, 0.995, 0.5, 0.0]).repeat_interleave(16).view(1, 1, 1, 1, 64).expand(1, 2, 1, 64, 64)
    true_fgr, pred_fgr = torch.zeros(1, 2, 3, 64, 64), torch.ones(1, 2, 3, 64, 64)
    paper = matting_loss(pred_fgr, pha, true_fgr, pha)["fgr_l1"].item()
    clips = matting_loss(pred_fgr, pha, true_fgr, pha, fgr_alpha_threshold=0.99)["fgr_l1"].item()
    assert paper == pytest.approx(0.75) and clips == pytest.approx(0.5)  # 3 of 4 columns vs the 2 opaque ones


def test_finetune_config_is_checked():
    args = build_parser().parse_args(["--config", "finetune", "--lr-scale", "10", "--size", "256"])
    scaled = cli_config(args)
    assert (scaled.lr_backbone, scaled.lr_decoder, scaled.lr_refiner, scaled.lr_size) == pytest.approx(
        (1e-4, 5e-4, 0.0, 256))
    assert (FINETUNE.data_layout, FINETUNE.segmentation, FINETUNE.init_required) == ("clips", "auto", True)
    assert FINETUNE.lr_backbone <= 1e-5 and FINETUNE.lr_decoder <= 5e-5  # stage 3-4 levels: keep the released
    with pytest.raises(ConfigError, match="for the clips layout"):
        get_preset("stage1").replace(segmentation="auto")
    with pytest.raises(ConfigError, match="valid_fraction"):
        FINETUNE.replace(valid_fraction=1.0)


@pytest.fixture(scope="module")
def finetune_run(tmp_path_factory, clip_root):
    """16 steps from a deliberately poor init (alpha bias +0.5, random weights) at the smoke preset's LR."""
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    tmp = tmp_path_factory.mktemp("finetune")
    torch.manual_seed(0)
    model = MattingNetwork()
    with torch.no_grad():
        model.project_mat.conv.bias[3] = 0.5
    save_file(model.state_dict(), str(tmp / "poor.safetensors"))
    cfg = FINETUNE.replace(lr_size=64, batch_crop_min=1.0, seq_length_lr=2, batch_size=2, lr_backbone=1e-3,
                           lr_aspp=1e-3, lr_decoder=1e-3, lr_schedule="constant", max_steps=16, eval_every=8,
                           checkpoint_every=16, num_workers=0, tensorboard=False)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set up before the function-scoped training_single_thread
    try:
        last = train(cfg, clip_root, tmp / "run", init=tmp / "poor.safetensors", progress=False)
    finally:
        torch.set_num_threads(previous)
    return last, tmp / "run"


def test_finetuning_lowers_the_held_out_alpha_mad_and_keeps_the_best(finetune_run, clip_root):
    last_records, out = finetune_run
    valid = {r["step"]: r for r in read_records(out / "metrics.jsonl") if r["split"] == "valid"}
    assert sorted(valid) == [0, 8, 16]
    assert valid[16]["pha_mad"] < 0.85 * valid[0]["pha_mad"], valid  # measured: 475 -> about 356
    best_step = min(valid, key=lambda s: valid[s]["pha_mad"])
    best = torch.load(out / "checkpoint_best.pth", weights_only=True)
    last = torch.load(out / "checkpoint_last.pth", weights_only=True)
    assert last_records["best"]["step"] == best_step == best["step"]
    assert last["best"] == {"step": best_step, "pha_mad": valid[best_step]["pha_mad"]}
    assert last["config"]["segmentation"] is False  # "auto" resolved: no segmentation sets under the data folder
    # The file holds the weights that scored it: re-validating them gives the same number.
    model = load_checkpoint(out / "checkpoint_best.pth")
    data = open_clip_data(FINETUNE, clip_root)
    again = validate(model, ClipValidation(data.matting_valid, None, 64, 16, 64), torch.device("cpu"), False)
    assert again["pha_mad"] == pytest.approx(valid[best_step]["pha_mad"], rel=1e-5)
