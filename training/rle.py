"""COCO run-length encoding (as used by YouTubeVIS ``instances.json``), without pycocotools.

A mask of size ``[h, w]`` is flattened in column-major (Fortran) order and stored as alternating run lengths,
starting with a run of zeros (which may be 0). ``counts`` is either that list of ints ("uncompressed") or a string
("compressed"): each run, from the third on, is stored as the difference to the run two places before it; each
value is written as little-endian 5-bit groups, one character per group (``chr(group + 48)``), with bit 0x20 set
while more groups follow and bit 0x10 of the last group acting as the sign bit.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["decode_counts", "encode_counts", "decode_rle", "encode_rle", "mask_to_runs", "runs_to_mask"]


def decode_counts(text: str) -> list[int]:
    """Compressed ``counts`` string -> run lengths."""
    runs: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            group = ord(text[pos]) - 48
            if not 0 <= group < 64:
                raise ValueError(f"invalid RLE character {text[pos]!r} at position {pos}")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift  # sign-extend
            if more and pos >= len(text):
                raise ValueError("truncated RLE string")
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def encode_counts(runs: Sequence[int]) -> str:
    """Run lengths -> compressed ``counts`` string (inverse of :func:`decode_counts`)."""
    chars = []
    for i, run in enumerate(runs):
        value = int(run) - (int(runs[i - 2]) if i > 2 else 0)
        more = True
        while more:
            group = value & 0x1F
            value >>= 5  # arithmetic shift: negative values end at -1
            more = value != -1 if group & 0x10 else value != 0
            if more:
                group |= 0x20
            chars.append(chr(group + 48))
    return "".join(chars)


def runs_to_mask(runs: Sequence[int], height: int, width: int) -> np.ndarray:
    total = int(sum(runs))
    if total != height * width:
        raise ValueError(f"RLE runs cover {total} pixels but the mask is {height}x{width} = {height * width}")
    values = np.zeros(len(runs), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(runs, dtype=np.int64))
    return flat.reshape(width, height).T  # column-major


def mask_to_runs(mask: np.ndarray) -> list[int]:
    flat = np.asarray(mask, dtype=bool).T.ravel()  # column-major
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return [0] + runs if flat[0] else runs


def decode_rle(rle: Mapping[str, Any]) -> np.ndarray:
    """``{"size": [h, w], "counts": str | list[int]}`` -> boolean mask ``[h, w]``."""
    try:
        height, width = (int(v) for v in rle["size"])
        counts = rle["counts"]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an RLE dict with 'size' and 'counts': {exc}") from exc
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs = decode_counts(counts) if isinstance(counts, str) else [int(c) for c in counts]
    return runs_to_mask(runs, height, width)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Boolean mask ``[h, w]`` -> compressed RLE dict."""
    height, width = mask.shape
    return {"size": [int(height), int(width)], "counts": encode_counts(mask_to_runs(mask))}
