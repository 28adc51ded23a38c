"""Data order and the frame sampler.

Every sample drawn during training has a *position*: the running count of samples of its stream over the whole run
(all processes together). Batch ``k`` of process ``rank`` holds positions ``k*G + rank*B ... k*G + rank*B + B - 1``
with ``B`` the per-process and ``G = B * world_size`` the global batch, so the processes of a DDP run together see
exactly the samples a single process with batch ``G`` sees. A position maps to a dataset index through a per-epoch
permutation and seeds every random draw of that sample: data order and augmentation are pure functions of
(seed, stream, position), which is what makes resume exact (docs/training.md).
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Iterator

import numpy as np
from torch.utils.data import Sampler

__all__ = ["SPEEDS", "PositionBatchSampler", "epoch_permutation", "sample_rng", "position_to_index", "sample_frame_indices"]

SPEEDS = (0.5, 1.0, 2.0, 3.0, 4.0, 5.0)  # frame-sampler speeds: 0.5 repeats frames, 5 skips four of five


class PositionBatchSampler(Sampler[list[int]]):
    """Endless batches of positions for one process, starting at batch ``start_batch``."""

    def __init__(self, batch_size: int, rank: int = 0, world_size: int = 1, start_batch: int = 0) -> None:
        self.batch_size, self.rank, self.world_size, self.start_batch = batch_size, rank, world_size, start_batch

    def __iter__(self) -> Iterator[list[int]]:
        batch = self.start_batch
        global_batch = self.batch_size * self.world_size
        while True:
            first = batch * global_batch + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))
            batch += 1


@lru_cache(maxsize=8)
def epoch_permutation(seed: int, stream: int, epoch: int, size: int) -> np.ndarray:
    return np.random.default_rng([seed, stream, epoch, 0x5EED]).permutation(size)


def sample_rng(seed: int, stream: int, position: int) -> np.random.Generator:
    """The generator behind every random draw of the sample at ``position``."""
    return np.random.default_rng([seed, stream, position])


def position_to_index(seed: int, stream: int, position: int, size: int) -> int:
    """Dataset index at ``position``: epoch ``position // size`` visits every index once, in a seeded order."""
    return int(epoch_permutation(seed, stream, position // size, size)[position % size])


def _reflect(index: int, length: int) -> int:
    """Bounce off the clip's ends (..., 2, 1, 0, 1, 2, ...) so fast or late samples stay inside the clip."""
    if length == 1:
        return 0
    period = 2 * (length - 1)
    index %= period
    return index if index < length else period - index


def sample_frame_indices(rng: np.random.Generator, length: int, count: int, start: int | None = None) -> list[int]:
    """``count`` frame indices of a ``length``-frame clip at a random speed from :data:`SPEEDS`, reversed half of
    the time. ``start`` defaults to a random frame."""
    speed = float(rng.choice(SPEEDS))
    if start is None:
        start = int(rng.integers(length))
    indices = [_reflect(start + math.floor(i * speed), length) for i in range(count)]
    if rng.random() < 0.5:
        indices.reverse()
    return indices
