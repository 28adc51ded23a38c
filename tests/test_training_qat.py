"""Quantisation-aware training (training/qat.py, ``rvm-train --config qat --init CKPT``): fake quantisation is in
the forward pass with gradients, BatchNorm is frozen, the checkpoint is a plain MattingNetwork whose quantised
weights lie on the int8 grid (so every exporter's post-training weight quantisation is exact on them), and the
result exports to int8 through rvm-export."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from model import MattingNetwork, load_checkpoint
from training.cli import main as train_main
from training.config import get_preset
from training.qat import FLOAT_MODULES, WEIGHT_QMAX, prepare_qat, project_weights, quantised_convs
from training.train import train

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("training_single_thread")]


def _grid_error(model) -> float:
    """Largest distance (in quantisation steps) of a quantised conv weight from its per-channel int8 grid."""
    worst = 0.0
    for _, conv in quantised_convs(model):
        w = conv.weight.detach()
        scale = w.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12) / WEIGHT_QMAX
        worst = max(worst, float(((w / scale) - (w / scale).round()).abs().max()))
    return worst


def test_prepare_fake_quantises_with_gradients_and_freezes_batchnorm(golden_model):
    model = copy.deepcopy(golden_model).train()  # trained weights: a random model's alpha saturates (no gradient)
    convs = sum(1 for _ in quantised_convs(model))
    counts = prepare_qat(model)
    assert counts["weights"] == convs > 60 and counts["activations"] > 60
    model.train()
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert _grid_error(model) < 1e-3  # the forward pass sees grid weights...
    src = torch.rand(1, 2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    fgr, pha = model(src)[:2]
    (fgr.mean() + pha.mean()).backward()
    grads = [conv.parametrizations.weight.original.grad for _, conv in quantised_convs(model)]
    assert sum(g is not None and bool(g.abs().sum() > 0) for g in grads) > 0.9 * len(grads)  # straight-through
    assert all(not any(name.startswith(s) for s in FLOAT_MODULES) for name, _ in quantised_convs(model))
    with pytest.raises(ValueError, match="already"):
        prepare_qat(model)


def test_projected_state_dict_is_a_plain_checkpoint_on_the_grid():
    torch.manual_seed(0)
    model = MattingNetwork("mobilenetv3")
    assert _grid_error(model) > 0.1  # random weights are not on the grid
    prepare_qat(model)
    plain = MattingNetwork("mobilenetv3")
    plain.load_state_dict(project_weights(model), strict=True)
    assert _grid_error(plain) < 1e-3
    again = project_weights(plain)
    assert all(torch.equal(again[k], v) for k, v in plain.state_dict().items())  # projecting twice changes nothing
    assert torch.equal(plain.project_mat.conv.weight, model.project_mat.conv.weight)  # float head left alone


def test_qat_preset_refuses_random_weights(tmp_path, training_synthetic_root, capsys):
    code = train_main(["--config", "qat", "--data", str(training_synthetic_root), "--out", str(tmp_path / "q")])
    assert code == 2 and "--init" in capsys.readouterr().err


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory, training_synthetic_root, training_tiny_config, golden_pth):
    out = tmp_path_factory.mktemp("qat")
    cfg = get_preset("qat").replace(**{k: getattr(training_tiny_config, k) for k in (
        "seq_length_lr", "seg_seq_length", "batch_size", "log_every", "eval_every", "checkpoint_every",
        "valid_clips", "valid_seq_length", "num_workers", "tensorboard")}, max_steps=2)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(cfg, training_synthetic_root, out, init=golden_pth, progress=False)
    finally:
        torch.set_num_threads(previous)
    return out


def test_qat_checkpoint_weights_are_exact_under_post_training_quantisation(qat_run, golden_model):
    model = load_checkpoint(qat_run / "checkpoint_last.pth")
    assert _grid_error(model) < 1e-3 < 0.1 < _grid_error(golden_model)
    # Two steps at the qat preset's LR stay near the weights they started from. The golden weights are seeded and
    # untrained, so alpha is sensitive to every weight: the grid projection alone moves it by 5.8e-3 (pha MAD) and
    # two Adam steps of 1e-4 by 4.9e-2 in all (measured); a diverged or saturated run moves it by far more than 0.1.
    src = torch.rand(1, 3, 3, 96, 160, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        drift = (model(src)[1] - golden_model(src)[1]).abs().mean()
    assert drift < 1e-1


def test_qat_checkpoint_exports_to_int8_with_rvm_export(qat_run, tmp_path):
    """The QAT result goes through the normal exporter (ONNX QDQ here) and holds the int8 bound against itself."""
    pytest.importorskip("onnxruntime")
    from rvm_export.cli import main as export_main

    code = export_main(["--target", "onnx", "--precision", "int8", "--checkpoint", str(qat_run / "checkpoint_last.pth"),
                        "--resolution", "160x96@1.0", "--frames", "6", "--skip-bench", "--out", str(tmp_path),
                        "--quiet"])
    assert code == 0
    (artifact,) = json.loads((tmp_path / "manifest.json").read_text())["artifacts"]
    # The int8 parity bound (2e-2). Not issue 17's 1e-2: the QAT run starts from the seeded golden weights, on which
    # ONNX int8 reads 1.6e-2 (measured: 1.63e-2 here; docs/onnx.md "int8 recipe", golden weights not holding 1e-2).
    assert artifact["parity"][0]["passed"] and artifact["parity"][0]["pha_mad"] <= 2e-2
    assert any(e["layer"].startswith("/project_mat/") for e in artifact["details"]["not_int8"])
