"""The int8 calibration set (generated scene + real footage, real states, every 3rd frame) and the report's list of
layers that are not int8. No export: PyTorch at 96x64 only."""
from __future__ import annotations

import numpy as np
import pytest

from rvm_export.core.bucket import Bucket
from rvm_export.core.footage import CALIBRATION_CLIP, EVALUATION_CLIPS, clip_frames, clip_path, footage_missing
from rvm_export.core.names import STATE_INPUTS
from rvm_export.core.rollout import (CALIBRATION_SEED, CALIBRATION_STRIDE, MovingScene, TorchStream, calibration_set,
                                     calibration_sources)
from rvm_export.report import _not_int8_section

BUCKET = Bucket(96, 64, 1.0)


def _states_after(model, frames):
    stream = TorchStream(model, BUCKET)
    out = None
    for frame in frames:
        out = stream.step(frame)
    return {name: out[name.replace("i", "o")] for name in STATE_INPUTS}


def test_calibration_mixes_real_footage_with_the_scene_and_feeds_real_states(golden_model):
    if footage_missing():
        pytest.skip(footage_missing())
    feeds = calibration_set(golden_model, (BUCKET,), 8)
    assert len(feeds) == 8 and "carphone_distorted" in calibration_sources()
    assert CALIBRATION_CLIP not in EVALUATION_CLIPS  # never calibrate on what the benchmark measures
    scene = MovingScene(96, 64, 4 * CALIBRATION_STRIDE, seed=CALIBRATION_SEED)
    clip = clip_frames(clip_path(CALIBRATION_CLIP), 96, 64, limit=4 * CALIBRATION_STRIDE)
    for i in range(4):
        np.testing.assert_array_equal(feeds[i]["src"], scene.frame(i * CALIBRATION_STRIDE))
        np.testing.assert_array_equal(feeds[4 + i]["src"], clip[i * CALIBRATION_STRIDE])
    assert all(not feeds[k][name].any() for k in (0, 4) for name in STATE_INPUTS)  # each rollout starts at zero
    expected = _states_after(golden_model, clip[:2 * CALIBRATION_STRIDE])  # feed 6 = clip frame 6, after 0..5
    for name in STATE_INPUTS:
        np.testing.assert_allclose(feeds[6][name], expected[name], atol=1e-5)
    assert np.abs(feeds[6]["r1i"]).max() > 1e-2  # real, non-trivial states


def test_calibration_without_footage_is_the_scene_alone(golden_model):
    feeds = calibration_set(golden_model, (BUCKET,), 4, footage=False)
    scene = MovingScene(96, 64, 4 * CALIBRATION_STRIDE, seed=CALIBRATION_SEED)
    assert [f["src"].tobytes() for f in feeds] == [scene.frame(i * CALIBRATION_STRIDE).tobytes() for i in range(4)]
    assert "only" in calibration_sources(footage=False)


def test_report_groups_layers_not_int8_by_reason():
    entries = [{"layer": f"backbone.{i}.0", "op": "CONV_2D", "kept_as": "float32", "reason": "sensitive"}
               for i in range(8)]
    entries.append({"layer": "decoder.decode1.gru.ih.0", "op": "CONV_2D", "kept_as": "int16", "reason": "recurrence"})
    artifacts = [{"path": "a_int8_mixed.tflite", "precision": "int8", "details": {"not_int8": entries,
                                                                                  "recipe": "static"}},
                 {"path": "b_fp32.onnx", "precision": "fp32", "details": {}},
                 {"path": "c_int8.onnx", "precision": "int8", "details": {"not_int8": []}}]
    lines = _not_int8_section(artifacts)
    assert lines[:3] == ["", "## Layers not in int8", ""]
    assert "`a_int8_mixed.tflite` (static): 9 layer(s) not int8" in lines[3]
    assert lines[4] == ("  - float32: `backbone.0.0`, `backbone.1.0`, `backbone.2.0`, `backbone.3.0`, `backbone.4.0`, "
                        "`backbone.5.0` and 2 more (sensitive)")
    assert lines[5] == "  - int16: `decoder.decode1.gru.ih.0` (recurrence)"
    assert lines[6] == "- `c_int8.onnx`: 0 layer(s) not int8 (every quantisable layer is int8)"
    assert not any("b_fp32" in line for line in lines)
