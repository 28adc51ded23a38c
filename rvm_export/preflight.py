"""Checks that run before a model is loaded or a byte written: will the run fit in this machine's memory?

The peak of an export run grows with the pixels of its largest bucket: the generated scene, PyTorch's reference
forward, the traced graph's constant folding and each runtime's activations all hold several full-resolution float32
planes. Measured with ``/usr/bin/time -v`` on ``--target all --frames 3 --skip-bench`` (onnx, openvino with its
stateful IR, tflite, coreml): peak RSS 1.25 GB at 256x144 and 2.25 GB at 1280x720, i.e. about 1130 bytes per
full-resolution pixel over a base of 1.2 GB. The constants below add a third to both.
"""
from __future__ import annotations

from typing import Sequence

from rvm_export.core.bucket import MAX_SIDE, Bucket
from rvm_export.core.errors import UsageError

__all__ = ["estimate_peak_bytes", "check_resources", "BYTES_PER_PIXEL", "BASE_BYTES"]

BYTES_PER_PIXEL = 1500  # peak resident bytes per full-resolution pixel of the largest bucket (1130 measured)
BASE_BYTES = 2 << 30  # the runtimes, the toolchain and the model themselves (1.2 GB measured with every file target)


def estimate_peak_bytes(buckets: Sequence[Bucket]) -> int:
    """Estimated peak resident memory of a run over ``buckets``, in bytes."""
    pixels = max(b.width * b.height for b in buckets)
    return BASE_BYTES + BYTES_PER_PIXEL * pixels


def _available() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.virtual_memory().available)


def check_resources(buckets: Sequence[Bucket]) -> None:
    """Raise UsageError (exit 2) for a frame side beyond :data:`MAX_SIDE` or a run whose estimated peak memory is
    more than this machine has available, naming the bucket and both figures."""
    for bucket in buckets:
        if max(bucket.width, bucket.height) > MAX_SIDE:
            raise UsageError(f"resolution {bucket.width}x{bucket.height} is larger than {MAX_SIDE} px on a side, "
                             "beyond what the runtimes take")
    need = estimate_peak_bytes(buckets)
    have = _available()
    if have is not None and need > have:
        largest = max(buckets, key=lambda b: b.width * b.height)
        raise UsageError(f"resolution {largest.width}x{largest.height} needs about {need / 2**30:.1f} GiB of memory "
                         f"for export and parity, and this machine has {have / 2**30:.1f} GiB available: choose a "
                         "smaller --resolution")
