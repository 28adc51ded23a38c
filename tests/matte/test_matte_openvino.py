"""OpenVINO hands out views of buffers its next step overwrites; matte copies them. A static IR at the clip's own
size runs the carphone clip and its PNG alpha must still equal PyTorch's round(pha * 255) within 1 on every frame."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av")

from matte_helpers import SMALL_RATIO, decode_rgb, read_png_folder  # noqa: E402
from rvm_export.matte import matte  # noqa: E402

pytestmark = [pytest.mark.openvino, pytest.mark.matte]


@pytest.fixture(scope="module")
def openvino_export(golden_pth, tmp_path_factory):
    pytest.importorskip("openvino")
    from rvm_export.cli import main

    out = tmp_path_factory.mktemp("matte_openvino") / "export"
    code = main(["--target", "openvino", "--checkpoint", str(golden_pth), "--resolution", "176x144",
                 "--downsample-ratio", str(SMALL_RATIO), "--option", "openvino.stateful=false", "--frames", "2",
                 "--skip-bench", "--threads", "2", "--quiet", "--out", str(out)])
    assert code == 0
    return out


def test_openvino_static_alpha_equals_pytorch(clips, openvino_export, tmp_path, torch_reference):
    frames = 24
    summary = matte(clips["carphone"], openvino_export, alpha=tmp_path / "alpha", rgba=tmp_path / "rgba.webm",
                    max_frames=frames, threads=2, progress=False)
    assert summary.model.startswith("openvino fp32 static") and summary.geometry == "176x144@0.5"
    reference = torch_reference(decode_rgb(clips["carphone"], frames), SMALL_RATIO)
    pngs = read_png_folder(tmp_path / "alpha")
    assert len(pngs) == frames
    assert max(np.abs(png - np.round(pha * 255)).max() for png, (_, pha) in zip(pngs, reference)) <= 1
