"""The PyTorch side of every comparison: ``MattingNetwork.forward`` itself, frame by frame, states fed back."""
from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from model import MattingNetwork

from .spec import OUTPUT_NAMES, STATE_INPUTS, STATE_PAIRS, Bucket, state_shapes

__all__ = ["TorchStream", "calibration_feeds"]


class TorchStream:
    """A :class:`~targets.base.Stream` over the PyTorch model (fp32, CPU unless the model lives elsewhere)."""

    label = "PyTorch eager (reference)"

    def __init__(self, model: MattingNetwork, bucket: Bucket) -> None:
        self.model = model.eval()
        self.bucket = bucket
        self.device = next(model.parameters()).device
        self.states: list[torch.Tensor | None] = [None] * 4

    def reset(self) -> None:
        self.states = [None] * 4

    @torch.inference_mode()
    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(src)).to(self.device)
        fgr, pha, *self.states = self.model(x, *self.states, downsample_ratio=self.bucket.ratio)
        values = [fgr, pha, *self.states]
        return {name: v.float().cpu().numpy() for name, v in zip(OUTPUT_NAMES, values)}


def calibration_feeds(model: MattingNetwork, bucket: Bucket, frames: Iterable[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """What an artifact sees on each frame of a rollout whose states the fp32 PyTorch model produced: real frames
    with real states, NCHW float32, contract names (int8 calibration must use these, never random states)."""
    stream = TorchStream(model, bucket)
    shapes = state_shapes(model.variant, bucket.height, bucket.width, bucket.ratio)
    states = {name: np.zeros(shape, np.float32) for name, shape in zip(STATE_INPUTS, shapes)}
    feeds: list[dict[str, np.ndarray]] = []
    for frame in frames:
        feeds.append({"src": frame, **states, "downsample_ratio": np.array([bucket.ratio], np.float32)})
        outputs = stream.step(frame)
        states = {inp: outputs[out] for out, inp in STATE_PAIRS}
    return feeds
