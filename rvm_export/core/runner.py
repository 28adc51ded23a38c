"""How an artifact runs: a :class:`Runner` (one loaded model) and the :class:`Stream` it opens per bucket.

A stream steps consecutive frames, keeping the recurrent states as the runtime's own values between calls;
``reset()`` starts a new clip from zero states. Every stream takes and returns NCHW float32 arrays whatever the
model's layout and dtype (the fed-back states keep the model's own). :class:`ArrayStream` is the one state-feedback
loop for runtimes that take states as arrays: ``rKo`` of frame t goes back in as ``rKi`` of frame t+1.
"""
from __future__ import annotations

from typing import Callable, ClassVar, Mapping, Protocol, runtime_checkable

import numpy as np

from .bucket import Bucket
from .errors import InputError
from .names import STATE_PAIRS
from .spec import IOSpec

__all__ = ["Stream", "Runner", "ArrayStream", "fed_back", "check_frame"]


@runtime_checkable
class Stream(Protocol):
    """Runs consecutive frames of one bucket.

    A stream whose runtime lives elsewhere (a browser page) may also set ``timed_ms``, the last step's time measured
    there; the benchmark reports it instead of the wall time seen from Python."""

    def step(self, src: np.ndarray) -> Mapping[str, np.ndarray]:
        """``src``: NCHW float32 ``[1, 3, H, W]`` RGB in [0, 1]. Returns NCHW float32 ``fgr`` [1,3,H,W], ``pha``
        [1,1,H,W] in [0, 1] and, where the model exposes them, ``r1o..r4o``. Raises InputError when ``src`` does not
        fit the stream's bucket."""
        ...

    def reset(self) -> None:
        """Start a new clip: the next step uses zero states."""
        ...


class Runner:
    """One loaded artifact. Subclasses set ``label`` and implement :meth:`run` and :meth:`stream`.

    ``untimed_reason``: why a benchmark must not time this runner (e.g. a numerics check that is not the real
    runtime), None when its speed means something."""

    untimed_reason: ClassVar[str | None] = None
    label: str = ""  # e.g. "ONNX Runtime 1.32.0 CPUExecutionProvider, 2 threads"
    artifact: object | None = None  # the Artifact it was loaded from, when there is one

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One call with contract-named inputs (in the artifact's layout/dtype); returns contract-named outputs."""
        raise NotImplementedError

    def stream(self, bucket: Bucket) -> Stream:
        """A :class:`Stream` at ``bucket``; raises UsageError when the artifact does not serve it."""
        raise NotImplementedError


def fed_back(outputs: Mapping[str, object]) -> dict[str, object]:
    """The next frame's state inputs from this frame's outputs: ``{rKi: outputs[rKo]}`` for the states present."""
    return {inp: outputs[out] for out, inp in STATE_PAIRS if out in outputs}


def check_frame(src: np.ndarray, bucket: Bucket, expected: str = "NCHW") -> None:
    """Raise InputError unless ``src`` is ``[1, 3, H, W]`` of ``bucket`` (the message says what to do)."""
    want = (1, 3, bucket.height, bucket.width)
    if tuple(np.shape(src)) != want:
        raise InputError(f"frame has shape {list(np.shape(src))} but this stream was opened for {bucket.label} "
                         f"({expected} {list(want)}); open a new stream (and reset the states) for another size")


class ArrayStream:
    """The state-feedback loop over ``run(feeds) -> outputs`` for runtimes whose states are arrays.

    ``run``: one call with contract-named inputs in the model's layout and dtype. ``zero_states``: the first frame's
    states (default: the spec's zeros in its I/O dtype)."""

    def __init__(self, run: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]], spec: IOSpec,
                 bucket: Bucket, zero_states: Callable[[], dict[str, np.ndarray]] | None = None) -> None:
        spec.check_bucket(bucket)
        self._run, self.spec, self.bucket = run, spec, bucket
        self._zeros = zero_states or (lambda: spec.zero_states(bucket))
        self.states: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        self.states = self._zeros()

    def step(self, src: np.ndarray) -> dict[str, np.ndarray]:
        check_frame(src, self.bucket)
        outputs = self._run(self.spec.feeds(np.asarray(src, np.float32), self.states, self.bucket))
        self.states = fed_back(outputs)  # type: ignore[assignment]  # in the model's layout and dtype, unchanged
        return {name: self.spec.from_layout(np.asarray(value)).astype(np.float32, copy=False)
                if np.ndim(value) == 4 else np.asarray(value) for name, value in outputs.items()}

