"""Quantisation-aware training (``rvm-train --config qat --init CKPT``): PyTorch fake quantisation in the loop, so the
weights learn to live on the int8 grid every exporter uses, and the checkpoint stays a plain float MattingNetwork
that ``rvm-export --precision int8`` quantises as usual (TFLite full/mixed, ONNX QDQ, OpenVINO/NNCF).

What is simulated (Jacob et al., arXiv 1712.05877, section 3; the exporters' own int8 schemes):

- weights: every Conv2d outside :data:`FLOAT_MODULES`, per output channel, symmetric, scale = max|w| / 127 over the
  channel, values -127..127 (``torch.fake_quantize_per_channel_affine``, straight-through gradient). Quantising the
  pre-BatchNorm weight per channel is exactly what the exporters do to the folded weight: folding multiplies each
  output channel by one constant, which scales that channel's max and its grid alike;
- activations: the outputs of BatchNorm, of activation modules and of Conv2d layers no BatchNorm follows, per
  tensor, asymmetric uint8 with moving-average min/max ranges (``torch.ao.quantization.FakeQuantize``). Functional
  ops (residual adds, the ConvGRU's gates, resizes) are not simulated;
- BatchNorm is frozen (running statistics used and kept), as it will be folded into the convolutions.

The checkpoint stores each quantised weight *projected onto its grid*: post-training quantisation by any exporter
then reproduces those weights exactly (the max of a projected channel is 127 steps of the same scale), so the
exported int8 model carries no weight-rounding error beyond what training already saw.

This is eager-mode fake quantisation with PyTorch's own fake-quant ops, not the PT2E (``torch.export``) flow:
the recurrent network's first-frame ``None`` states and its segmentation pass make one exported training graph a
poor fit, and the result must be a plain checkpoint for rvm-export anyway.
"""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["FLOAT_MODULES", "prepare_qat", "project_weights", "quantised_convs", "is_prepared"]

# Modules the int8 exports keep float (targets/*/quantize.py): the output projection writes alpha directly; the
# segmentation head is not exported; the refiner runs at ratio < 1 only and ONNX/OpenVINO keep it float.
FLOAT_MODULES = ("project_mat", "project_seg", "refiner")
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.Tanh)
WEIGHT_QMAX = 127  # symmetric int8 weights, -127..127 (TFLite, ONNX Runtime QInt8 per-channel)


class PerChannelWeightFakeQuant(nn.Module):
    """Parametrisation ``w -> fq(w)``: per-output-channel symmetric int8, scale = max|w_c| / 127 (not learnt)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        scale = weight.detach().abs().amax(dim=tuple(range(1, weight.dim()))).clamp_min(1e-12) / WEIGHT_QMAX
        zero = torch.zeros(scale.shape, dtype=torch.int32, device=weight.device)
        return torch.fake_quantize_per_channel_affine(weight, scale.float(), zero, 0, -WEIGHT_QMAX, WEIGHT_QMAX)


def _activation_fake_quant() -> nn.Module:
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver

    return FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, dtype=torch.quint8,
                        qscheme=torch.per_tensor_affine, averaging_constant=0.01)


def _skipped(name: str) -> bool:
    return any(name == scope or name.startswith(scope + ".") for scope in FLOAT_MODULES)


def quantised_convs(model: nn.Module) -> Iterator[tuple[str, nn.Conv2d]]:
    """(name, Conv2d) of every convolution QAT quantises (all outside :data:`FLOAT_MODULES`)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and not _skipped(name):
            yield name, module


def _folded_convs(model: nn.Module) -> set[int]:
    """ids of Conv2d modules directly followed by a BatchNorm2d in a Sequential (their output is never a tensor of
    the exported graph: the BatchNorm is folded into them)."""
    folded = set()
    for module in model.modules():
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            for first, second in zip(children, children[1:]):
                if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                    folded.add(id(first))
    return folded


def _freeze_batchnorm(bn: nn.Module) -> None:
    bn.eval()
    bn.train = lambda mode=True: nn.Module.train(bn, False)  # model.train() leaves it in eval mode


def _fake_quant_output(module: nn.Module, inputs, output):
    return module.qat_output(output)


def is_prepared(model: nn.Module) -> bool:
    return any(parametrize.is_parametrized(conv, "weight") for _, conv in quantised_convs(model))


def prepare_qat(model: nn.Module) -> dict[str, int]:
    """Add fake quantisation to ``model`` in place (see the module docstring); returns counts for the log:
    ``{"weights": convs with fake-quantised weights, "activations": fake-quantised outputs}``."""
    if is_prepared(model):
        raise ValueError("the model already has QAT fake quantisation")
    folded = _folded_convs(model)
    weights = activations = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            _freeze_batchnorm(module)  # every BatchNorm, the float heads' too: all are folded at export
        if _skipped(name) or not name:
            continue
        if isinstance(module, nn.Conv2d):
            parametrize.register_parametrization(module, "weight", PerChannelWeightFakeQuant())
            weights += 1
        if isinstance(module, (nn.BatchNorm2d, *ACTIVATIONS)) or (isinstance(module, nn.Conv2d)
                                                                 and id(module) not in folded):
            module.qat_output = _activation_fake_quant()
            module.register_forward_hook(_fake_quant_output)
            activations += 1
    return {"weights": weights, "activations": activations}


def project_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain MattingNetwork state dict of a QAT model: each quantised conv weight replaced by its projection
    onto the int8 grid (float32), no parametrisation or observer entries. Works on an unprepared model too (it
    projects the same convolutions), so ``project_weights(load_checkpoint(qat_ckpt))`` is the identity."""
    state: dict[str, torch.Tensor] = {}
    fake_quant = PerChannelWeightFakeQuant()
    quantised = {name for name, _ in quantised_convs(model)}
    for key, value in model.state_dict().items():
        if ".qat_output." in key or key.endswith(".qat_output") or ".parametrizations." in key:
            continue
        state[key] = value
    for name, conv in quantised_convs(model):
        original = (conv.parametrizations.weight.original if parametrize.is_parametrized(conv, "weight")
                    else conv.weight)
        with torch.no_grad():
            state[f"{name}.weight"] = fake_quant(original.detach().float()).clone()
    missing = [f"{name}.weight" for name in quantised if f"{name}.weight" not in state]
    if missing:
        raise RuntimeError(f"projected weights missing for {missing[:3]}")
    return state
