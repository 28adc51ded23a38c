"""The seeded default model used when no checkpoint is given: random but non-degenerate weights.

Untrained weights would leave every BatchNorm at identity statistics and the alpha head saturated at 0 or 1, which
hides numeric errors (a clamp swallows them). Like the golden vectors' model, we perturb BN statistics and affine
parameters, perturb the deep guided filter's box filter around 1/9, and rescale the output heads so alpha spans (0, 1).
It is NOT a matting model: its mattes are meaningless. The CLI says so loudly and the manifest records it.
"""
from __future__ import annotations

import torch
from torch import nn

from model import MattingNetwork

__all__ = ["seeded_default_model", "UNTRAINED_WARNING"]

UNTRAINED_WARNING = (
    "WARNING: no --checkpoint given: exporting the SEEDED DEFAULT model. Its weights are random (UNTRAINED) and its "
    "mattes are meaningless. Use it to test the export pipeline only; pass --checkpoint rvm_mobilenetv3.pth (or your "
    "own training output) for a real model."
)


@torch.no_grad()
def seeded_default_model(variant: str = "mobilenetv3", refiner: str = "deep_guided_filter",
                         seed: int = 0) -> MattingNetwork:
    """A seeded, UNTRAINED model with non-degenerate weights (BN statistics and heads perturbed, see the
    module docstring): for testing the export pipeline only."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MattingNetwork(variant, refiner)  # type: ignore[arg-type]

    def uniform(shape, low, high):
        return torch.rand(shape, generator=generator) * (high - low) + low

    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(uniform(n, -0.1, 0.1))
            module.running_var.copy_(uniform(n, 0.5, 1.5))
            module.weight.copy_(uniform(n, 0.7, 1.3))
            module.bias.copy_(uniform(n, -0.1, 0.1))
    if refiner == "deep_guided_filter":
        box = model.refiner.box_filter.weight
        box.copy_(1.0 / 9.0 + uniform(box.shape, -0.02, 0.02))
    for head in (model.project_mat.conv, model.project_seg.conv):
        head.weight.mul_(0.25)
        head.bias.zero_()
    model.project_mat.conv.bias[3] = 0.5  # alpha centred in (0, 1), so the clamp rarely hides errors
    return model.eval()
