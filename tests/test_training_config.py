"""Stage presets against the paper's table, config validation, the LR schedule and parameter groups."""
from __future__ import annotations

import pytest
import torch

from model import MattingNetwork
from training.config import PRESETS, TrainConfig, get_lr, get_preset
from training.errors import ConfigError
from training.train import param_groups, resolve_steps

pytestmark = pytest.mark.training

# (T LR, HR pass, T HR, backbone / aspp / decoder / refiner LRs, epochs) from the paper's stage table.
STAGE_TABLE = {
    "stage1": (15, False, None, (1e-4, 2e-4, 2e-4, 0.0), 20, "videomatte_sd"),
    "stage2": (50, False, None, (5e-5, 1e-4, 1e-4, 0.0), 2, "videomatte_sd"),
    "stage3": (40, True, 6, (1e-5, 1e-5, 1e-5, 2e-4), 1, "videomatte_hd"),
    "stage4": (40, True, 6, (1e-5, 1e-5, 5e-5, 2e-4), 5, "imagematte"),
}


@pytest.mark.parametrize("name", sorted(STAGE_TABLE))
def test_stage_presets_match_the_paper(name):
    cfg = PRESETS[name]
    t_lr, hr, t_hr, lrs, epochs, matting_set = STAGE_TABLE[name]
    assert cfg.seq_length_lr == t_lr
    assert cfg.hr_pass is hr
    if hr:
        assert (cfg.seq_length_hr, cfg.hr_ratio, cfg.hr_size, cfg.lr_size) == (t_hr, 0.25, 2048, 512)
    assert (cfg.lr_backbone, cfg.lr_aspp, cfg.lr_decoder, cfg.lr_refiner) == lrs
    assert cfg.epochs == epochs
    assert cfg.matting_set == matting_set
    assert cfg.amp and cfg.segmentation and cfg.lr_schedule == "constant"


def test_unknown_preset_and_invalid_fields_are_refused():
    with pytest.raises(ConfigError, match="unknown config 'stage9'"):
        get_preset("stage9")
    with pytest.raises(ConfigError) as info:
        PRESETS["smoke"].replace(lr_size=48, seq_length_lr=1, lr_refiner=1e-4, batch_size=0)
    message = str(info.value)
    for expected in ("below 64 px", "seq_length_lr must be >= 2", "lr_refiner > 0 has no effect", "batch_size"):
        assert expected in message
    with pytest.raises(ConfigError, match="hr_ratio must be in"):
        PRESETS["stage3"].replace(hr_ratio=1.0)


def test_config_round_trips_through_a_plain_dict():
    cfg = PRESETS["stage3"]
    data = cfg.to_dict()
    assert isinstance(data["seg_image_sets"], list)  # no tuples or dataclasses in checkpoints
    assert TrainConfig.from_dict(data) == cfg
    with pytest.raises(ConfigError, match="unknown config field"):
        TrainConfig.from_dict({**data, "bogus": 1})


def test_get_lr_warmup_then_constant_or_cosine():
    constant = PRESETS["stage1"].replace(warmup_steps=4, max_steps=100)
    assert [get_lr(s, constant) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    cosine = constant.replace(lr_schedule="cosine", min_lr_ratio=0.1, warmup_steps=0, max_steps=10)
    assert get_lr(0, cosine) == pytest.approx(1.0)
    assert get_lr(5, cosine) == pytest.approx(0.1 + 0.9 * 0.5)  # half way: cos(pi/2) = 0
    assert get_lr(10, cosine) == pytest.approx(0.1)
    assert get_lr(5, cosine) == get_lr(5, cosine)  # pure


def test_resolve_steps_from_epochs():
    cfg = PRESETS["stage1"]  # 20 epochs, batch 4 per process
    assert resolve_steps(cfg, samples_per_epoch=100, world_size=2).max_steps == 250  # 20 * 100 / 8
    assert resolve_steps(cfg.replace(max_steps=7), 100, 2).max_steps == 7


def test_param_groups_give_each_module_its_learning_rate():
    cfg = PRESETS["stage4"]
    model = MattingNetwork("mobilenetv3", "deep_guided_filter")
    groups = {g["name"]: g for g in param_groups(model, cfg)}
    assert {n: g["lr"] for n, g in groups.items()} == {"backbone": 1e-5, "aspp": 1e-5, "decoder": 5e-5,
                                                       "refiner": 2e-4}
    ids = {n: {id(p) for p in g["params"]} for n, g in groups.items()}
    assert sum(len(v) for v in ids.values()) == len(list(model.parameters()))  # every parameter exactly once
    assert {id(p) for p in model.project_seg.parameters()} <= ids["decoder"]
    assert {id(p) for p in model.project_mat.parameters()} <= ids["decoder"]
    assert {id(p) for p in model.refiner.parameters()} == ids["refiner"]
    # The fast guided filter has no parameters: no empty refiner group.
    fgf = MattingNetwork("mobilenetv3", "fast_guided_filter")
    assert "refiner" not in {g["name"] for g in param_groups(fgf, cfg)}
    torch.optim.Adam(param_groups(fgf, cfg))  # accepted as is


@pytest.mark.parametrize("args,text", [
    (["--steps", "0"], "argument --steps: must be at least 1, got 0"),
    (["--steps", "-3"], "argument --steps: must be at least 1, got -3"),
    (["--batch-size", "0"], "argument --batch-size: must be at least 1"),
    (["--lr-scale", "0"], "argument --lr-scale: must be in (0, 1e+06]"),
    (["--crop-min", "1.5"], "argument --crop-min: must be in (0, 1]"),
    (["--seed", "-1"], "argument --seed: must be at least 0"),
], ids=["steps-0", "steps-negative", "batch-0", "lr-scale-0", "crop-min", "seed"])
def test_rvm_train_refuses_values_before_any_work(args, text, tmp_path, capsys):
    """rvm-train --steps 0 used to train the preset's epochs (80 steps) silently; now exit 2, nothing written."""
    from training.cli import main as train_main

    out = tmp_path / "run"
    code = train_main(["--config", "smoke", "--data", str(tmp_path), "--out", str(out), *args])
    assert code == 2
    assert text in capsys.readouterr().err
    assert not out.exists()
