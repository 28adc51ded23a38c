"""The training loop on the tiny synthetic set: learning, checkpoints, exact resume, the HR pass, CLI errors."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from model import MattingNetwork, load_checkpoint
from training.cli import main as train_main
from training.datasets import STREAMS, MattingDataset, composite, open_data
from training.losses import matting_loss
from training.metrics_log import read_records
from training.train import param_groups, train

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("training_single_thread")]
REPO = Path(__file__).resolve().parents[1]


def _records(out: Path, split: str) -> dict[int, dict]:
    return {r["step"]: r for r in read_records(out / "metrics.jsonl") if r["split"] == split}


def test_a_few_steps_lower_the_loss_on_a_tiny_batch(training_synthetic_root, training_tiny_config):
    torch.manual_seed(0)
    sources = open_data(training_tiny_config, training_synthetic_root)
    data = MattingDataset(sources.matting_train, sources.backgrounds, 64, 2, seed=0, stream=STREAMS["matting_lr"])
    batch = {k: torch.stack([data[i][k] for i in range(2)]) for k in ("fgr", "pha", "bgr")}
    src = composite(batch["fgr"], batch["pha"], batch["bgr"])
    model = MattingNetwork("mobilenetv3").train()
    optimizer = torch.optim.Adam(param_groups(model, training_tiny_config))
    losses = []
    for _ in range(12):
        fgr, pha = model(src)[:2]
        loss = matting_loss(fgr, pha, batch["fgr"], batch["pha"])["total"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, training_synthetic_root, training_tiny_config):
    out = tmp_path_factory.mktemp("straight")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # module-scoped: set up before the function-scoped training_single_thread
    try:
        last = train(training_tiny_config, training_synthetic_root, out, progress=False)
    finally:
        torch.set_num_threads(previous)
    return out, last


def test_training_writes_a_loadable_checkpoint_and_metrics(straight_run, training_tiny_config):
    out, last = straight_run
    state = torch.load(out / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert state["step"] == 4 and state["config"] == training_tiny_config.to_dict()
    assert state["data"] == {"matting_lr": 4, "matting_hr": 4, "seg_video": 2, "seg_image": 2}
    model = load_checkpoint(out / "checkpoint_last.pth")  # the export side's loader reads it unchanged
    assert (model.variant, model.refiner_name) == ("mobilenetv3", "deep_guided_filter")
    assert torch.equal(model.state_dict()["project_mat.conv.weight"], state["model"]["project_mat.conv.weight"])
    train_records, valid_records = _records(out, "train"), _records(out, "valid")
    assert sorted(train_records) == [1, 2, 3, 4] and sorted(valid_records) == [0, 2, 4]
    assert "seg_clip" in train_records[1] and "seg_image" in train_records[2]  # even steps clips, odd images
    for key in ("pha_mad", "pha_mse", "pha_grad", "pha_conn", "pha_dtssd", "fgr_mse", "baseline_zero_pha_mad"):
        assert valid_records[4][key] >= 0.0
    assert last["valid"] == valid_records[4]
    # Stages 1-2 never run the refiner (ratio 1) and give it LR 0: its weights stay at their initial values.
    torch.manual_seed(training_tiny_config.seed)
    initial = MattingNetwork("mobilenetv3").state_dict()
    assert torch.equal(state["model"]["refiner.box_filter.weight"], initial["refiner.box_filter.weight"])
    assert not torch.equal(state["model"]["project_mat.conv.weight"], initial["project_mat.conv.weight"])


def test_trained_checkpoint_exports_with_rvm_export(straight_run, tmp_path):
    """The training output is what the exporter ships: rvm-export takes it unchanged and parity holds."""
    pytest.importorskip("onnxruntime")
    import json

    from rvm_export.cli import main as export_main

    out, _ = straight_run
    code = export_main(["--target", "onnx", "--checkpoint", str(out / "checkpoint_last.pth"), "--resolution",
                        "160x96@0.5", "--frames", "3", "--skip-bench", "--out", str(tmp_path), "--quiet"])
    assert code == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["model"]["untrained"] is False
    assert manifest["artifacts"][0]["parity"][0]["max_abs"] <= 1e-4


def test_resume_continues_exactly(tmp_path, straight_run, training_synthetic_root, training_tiny_config):
    out, _ = straight_run
    train(training_tiny_config.replace(max_steps=2), training_synthetic_root, tmp_path, progress=False)
    assert torch.load(tmp_path / "checkpoint_last.pth", weights_only=True)["step"] == 2
    train(training_tiny_config, training_synthetic_root, tmp_path, resume=True, progress=False)
    resumed, straight = _records(tmp_path, "train"), _records(out, "train")
    for step in (3, 4):
        for key, value in straight[step].items():
            if key != "elapsed_s":
                assert resumed[step][key] == value, (step, key)  # bit-identical, not just close
    a = torch.load(tmp_path / "checkpoint_last.pth", weights_only=True)
    b = torch.load(out / "checkpoint_last.pth", weights_only=True)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])


def test_hr_pass_trains_the_refiner(tmp_path, training_synthetic_root, training_tiny_config):
    cfg = training_tiny_config.replace(hr_pass=True, hr_size=128, seq_length_hr=2, hr_ratio=0.25, lr_refiner=1e-3,
                                       max_steps=2, eval_every=2, segmentation=False)
    train(cfg, training_synthetic_root, tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoint_last.pth", weights_only=True)
    torch.manual_seed(cfg.seed)
    initial = MattingNetwork("mobilenetv3").state_dict()
    for key in ("refiner.box_filter.weight", "refiner.conv.0.weight"):
        assert not torch.equal(state["model"][key], initial[key]), key
    records = _records(tmp_path, "train")
    assert records[2]["hr_matting_total"] > 0 and "seg_clip" not in records[2]


def test_cli_errors_have_distinct_exit_codes(tmp_path, straight_run, training_synthetic_root, capsys):
    out, _ = straight_run
    data = str(training_synthetic_root)
    common = ["--config", "smoke", "--no-progress", "--no-tensorboard", "--num-workers", "0"]
    assert train_main(common + ["--data", str(tmp_path / "none"), "--out", str(tmp_path / "o")]) == 3
    assert "data folder not found" in capsys.readouterr().err
    assert train_main(common + ["--data", data, "--out", str(out)]) == 4  # would overwrite a run
    assert "pass --resume" in capsys.readouterr().err
    assert train_main(common + ["--data", data, "--out", str(tmp_path / "fresh"), "--resume"]) == 4
    assert train_main(common + ["--data", data, "--out", str(out), "--resume"]) == 4  # tiny run vs smoke preset
    assert "another configuration" in capsys.readouterr().err
    assert train_main(common + ["--data", data, "--out", str(tmp_path / "o"), "--amp", "--device", "cpu"]) == 2
    assert "needs CUDA" in capsys.readouterr().err
    assert train_main(["--config", "smoke", "--out", str(tmp_path / "o")]) == 2
    assert train_main(["--make-synthetic", data]) == 2  # not empty
    assert train_main(["--config", "stage9"]) == 2


def test_make_synthetic_command(tmp_path, capsys):
    assert train_main(["--make-synthetic", str(tmp_path / "syn"), "--synthetic-spec", "tiny"]) == 0
    assert "videomatte_sd" in capsys.readouterr().out
    assert (tmp_path / "syn/youtubevis/train/instances.json").is_file()


def _cli(data: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "training.cli", "--config", "smoke", "--data", str(data), "--out", str(out),
            "--steps", "8", "--checkpoint-every", "2", "--eval-every", "4", "--log-every", "1", "--num-workers", "0",
            "--no-tensorboard", "--no-progress", "--threads", "1", *extra]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_losses(tmp_path, training_synthetic_root):
    """A real SIGKILL after the step-4 checkpoint, then --resume, against an uninterrupted run."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run(_cli(training_synthetic_root, tmp_path / "straight"), check=True, env=env, cwd=REPO)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli(training_synthetic_root, killed), env=env, cwd=REPO)
    deadline = time.time() + 300
    while time.time() < deadline:
        checkpoint = killed / "checkpoint_last.pth"
        if checkpoint.exists() and torch.load(checkpoint, weights_only=True)["step"] >= 4:
            break
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    step_at_kill = torch.load(killed / "checkpoint_last.pth", weights_only=True)["step"]
    assert 4 <= step_at_kill < 8
    subprocess.run(_cli(training_synthetic_root, killed, "--resume"), check=True, env=env, cwd=REPO)
    straight, resumed = _records(tmp_path / "straight", "train"), _records(killed, "train")
    assert sorted(resumed) == list(range(1, 9))
    for step in range(1, 9):
        assert resumed[step]["matting_total"] == straight[step]["matting_total"], step
    assert _records(killed, "valid")[8]["pha_mad"] == _records(tmp_path / "straight", "valid")[8]["pha_mad"]
