"""COCO RLE decoding (YouTubeVIS masks) against strings encoded by hand."""
from __future__ import annotations

import numpy as np
import pytest

from training.rle import decode_counts, decode_rle, encode_counts, encode_rle, mask_to_runs, runs_to_mask

pytestmark = pytest.mark.training


def test_counts_string_by_hand():
    # 1 -> group 1, no continuation: chr(48 + 1) = "1"; 3 -> "3".
    assert decode_counts("13") == [1, 3]
    # 100 = 0b11_00100: low group 4 with continuation (4 | 0x20 = 36 -> "T"), then 3 -> "3".
    assert decode_counts("T3") == [100]
    assert encode_counts([100]) == "T3"
    # From the fourth run (index 3) on, values are stored as differences to the run two before:
    # [5, 2, 3, 1] stores 5, 2, 3 and 1 - 2 = -1, which is group 0b11111 (31: sign bit 0x10 set, no
    # continuation since the shifted value is -1): chr(48 + 31) = "O".
    assert encode_counts([5, 2, 3, 1]) == "523O"
    assert decode_counts("523O") == [5, 2, 3, 1]


def test_mask_is_column_major_starting_with_zeros():
    # [[0, 1], [1, 1]] read down the columns: 0, 1, 1, 1 -> runs [1 zero, 3 ones] -> "13".
    mask = np.array([[0, 1], [1, 1]], dtype=bool)
    assert mask_to_runs(mask) == [1, 3]
    assert encode_rle(mask) == {"size": [2, 2], "counts": "13"}
    assert np.array_equal(decode_rle({"size": [2, 2], "counts": "13"}), mask)
    # A mask starting with a one has an empty first run of zeros.
    assert mask_to_runs(np.array([[1, 0]], dtype=bool)) == [0, 1, 1]


def test_uncompressed_counts_decode():
    mask = np.array([[1, 0, 0], [1, 1, 0]], dtype=bool)  # columns: [1,1], [0,1], [0,0] -> 0 zeros, 2 ones, 1, 1, 2
    assert decode_rle({"size": [2, 3], "counts": [0, 2, 1, 1, 2]}).tolist() == mask.tolist()


def test_round_trip_on_random_masks():
    rng = np.random.default_rng(0)
    for shape in [(1, 1), (3, 7), (48, 64), (129, 65)]:
        for density in (0.0, 0.02, 0.5, 1.0):
            mask = rng.random(shape) < density
            encoded = encode_rle(mask)
            assert np.array_equal(decode_rle(encoded), mask)
            assert np.array_equal(runs_to_mask(decode_counts(encoded["counts"]), *shape), mask)


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="cover"):
        decode_rle({"size": [2, 2], "counts": [1, 2]})
    with pytest.raises(ValueError, match="RLE"):
        decode_rle({"counts": "13"})
