"""Checkpoint loading: safe, strict, explicit about what does not fit."""
from __future__ import annotations

import os
import pickle

import pytest
import torch

from model import CheckpointError, MattingNetwork, UnsafeCheckpointError, load_backbone_weights, load_checkpoint


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_pth_loads_in_eval_mode(golden_model):
    assert not golden_model.training
    assert golden_model.variant == "mobilenetv3" and golden_model.refiner_name == "deep_guided_filter"


def test_variant_and_refiner_detected_from_file(golden_pth, golden_model):
    assert _same_weights(load_checkpoint(golden_pth), golden_model)


def test_safetensors_roundtrip(tmp_path, golden_model):
    from safetensors.torch import save_file

    path = tmp_path / "rvm.safetensors"
    save_file({k: v.contiguous() for k, v in golden_model.state_dict().items()}, str(path))
    assert _same_weights(load_checkpoint(path, "mobilenetv3", "deep_guided_filter"), golden_model)


def test_half_precision_checkpoint_loads_as_float32(tmp_path, golden_model):
    path = tmp_path / "half.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in golden_model.state_dict().items()}, path)
    model = load_checkpoint(path)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    pairs = list(zip(model.state_dict().values(), golden_model.state_dict().values()))
    assert any(not torch.equal(a, b) for a, b in pairs)  # really rounded to half...
    assert all(torch.allclose(a, b, rtol=1e-3, atol=1e-6) for a, b in pairs if a.is_floating_point())  # ...and widened


def test_training_checkpoint_wrapper(tmp_path, golden_model):
    path = tmp_path / "ckpt.pth"
    torch.save({"model": golden_model.state_dict(), "step": 12, "config": {"stage": "smoke"}}, path)
    assert _same_weights(load_checkpoint(path), golden_model)


def test_fast_guided_filter_from_deep_checkpoint(golden_pth):
    model = load_checkpoint(golden_pth, refiner="fast_guided_filter")
    assert model.refiner_name == "fast_guided_filter"
    assert not any(k.startswith("refiner.") for k in model.state_dict())


def test_wrong_variant_names_keys_and_what_the_file_looks_like(golden_pth):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(golden_pth, variant="resnet50", refiner="deep_guided_filter")
    message = str(info.value)
    assert "looks like mobilenetv3 + deep_guided_filter" in message
    assert "missing key(s)" in message and "backbone.layer1.0.conv1.weight" in message
    assert "unexpected key(s)" in message and "backbone.features.0.0.weight" in message
    assert "mis-shaped key(s)" in message and "aspp.aspp1.0.weight: file [128, 960, 1, 1] vs model [256, 2048, 1, 1]" \
        in message


def test_missing_and_extra_key_are_both_named(tmp_path, golden_model):
    state = dict(golden_model.state_dict())
    del state["decoder.decode0.conv.4.running_var"]
    state["decoder.extra.weight"] = torch.zeros(1)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"(?s)1 missing key.*decode0\.conv\.4\.running_var.*1 unexpected key.*"
                                              r"decoder\.extra\.weight"):
        load_checkpoint(path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_pickle_that_runs_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as handle:
        pickle.dump({"backbone.x": _Exploit()}, handle)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_torch_save_of_a_module_is_refused(tmp_path):
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), path)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"],
                         ids=["empty", "text", "truncated-zip"])
def test_corrupt_file(tmp_path, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)):
        load_checkpoint(path)


def test_truncated_real_checkpoint(tmp_path, golden_pth):
    path = tmp_path / "truncated.pth"
    path.write_bytes(golden_pth.read_bytes()[: 1 << 20])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)


def test_missing_file():
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint("/nonexistent/rvm.pth")


def test_corrupt_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_checkpoint(path)


@pytest.mark.parametrize("variant", ["mobilenetv3", "resnet50"])
def test_torchvision_imagenet_weights_load_into_backbone(tmp_path, variant):
    """A torchvision-format classifier state dict (backbone keys + classifier/fc) loads into the backbone alone."""
    source = MattingNetwork(variant)
    for p in source.backbone.parameters():
        torch.nn.init.normal_(p, std=0.05)
    state = dict(source.backbone.state_dict())
    if variant == "mobilenetv3":
        state.update({"classifier.0.weight": torch.zeros(1280, 960), "classifier.0.bias": torch.zeros(1280),
                      "classifier.3.weight": torch.zeros(1000, 1280), "classifier.3.bias": torch.zeros(1000)})
    else:
        state.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})
    path = tmp_path / "imagenet.pth"
    torch.save(state, path)
    target = load_backbone_weights(MattingNetwork(variant), path)
    assert _same_weights(target.backbone, source.backbone)


def test_wrong_backbone_weights(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(MattingNetwork("resnet50").backbone.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit the mobilenetv3 backbone"):
        load_backbone_weights(MattingNetwork("mobilenetv3"), path)
