"""Golden frames for app CI through the CLI: written on request, equal to PyTorch's rollout, checkable against the
exported model, and removed with the export that wrote them."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from rvm_export.cli import main  # noqa: E402
from rvm_export.core.bucket import Bucket  # noqa: E402
from rvm_export.core.names import STATE_PAIRS  # noqa: E402
from rvm_export.core.rollout import MovingScene, TorchStream  # noqa: E402
from rvm_export.golden import read_golden  # noqa: E402

pytestmark = pytest.mark.onnx
BUCKET = Bucket(128, 72, 0.5)


def test_golden_frames_equal_pytorch_and_the_model_reproduces_them(golden_pth, golden_model, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "out"
    assert main(["--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(out), "--resolution",
                 BUCKET.label, "--downsample-ratio", "0.5", "--frames", "2", "--skip-bench", "--golden-frames", "3",
                 "--quiet"]) == 0
    frames = read_golden(out / "golden" / "golden.json", BUCKET)
    assert len(frames) == 3
    reference = TorchStream(golden_model, BUCKET)
    scene = MovingScene(BUCKET.width, BUCKET.height, 3, seed=0)
    for t, frame in enumerate(frames):
        assert np.array_equal(frame["src"], scene.frame(t))
        expected = reference.step(frame["src"])
        for name in ("fgr", "pha"):
            assert float(np.abs(frame[name] - expected[name]).max()) <= 1e-6, (t, name)
    # what an app's test does: feed the frames to the exported model with its own states fed back
    manifest = json.loads((out / "manifest.json").read_text())
    session = ort.InferenceSession(str(out / manifest["artifacts"][0]["path"]), providers=["CPUExecutionProvider"])
    index = json.loads((out / "golden" / "golden.json").read_text())
    states = {name: np.zeros(shape, np.float32)
              for name, shape in index["buckets"][BUCKET.label]["zero_states"].items()}
    for frame in frames:
        outputs = dict(zip([o.name for o in session.get_outputs()],
                           session.run(None, {"src": frame["src"], **states})))
        assert max(float(np.abs(outputs[n] - frame[n]).max()) for n in ("fgr", "pha")) <= 1e-4
        states = {inp: outputs[o] for o, inp in STATE_PAIRS}
    assert "golden/golden.json" in manifest["files"]
    # a later export without golden frames takes them away with the rest of the previous run
    assert main(["--target", "onnx", "--checkpoint", str(golden_pth), "--out", str(out), "--resolution",
                 BUCKET.label, "--downsample-ratio", "0.5", "--frames", "2", "--skip-bench", "--quiet"]) == 0
    assert not (out / "golden").exists()
