"""Shared fixtures. Small, seeded, session-scoped: the default test run must stay fast on 2 cores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[2] / "shared"
GOLDEN_DIR = SHARED / "golden"
REFERENCE_DIR = SHARED / "reference"


def pytest_configure(config):
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} (golden vectors and reference shapes) is not present")
    return SHARED


@pytest.fixture(scope="session")
def golden_pth(shared_dir) -> Path:
    return GOLDEN_DIR / "golden_mobilenetv3.pth"


@pytest.fixture(scope="session")
def golden_npz(shared_dir):
    return dict(np.load(GOLDEN_DIR / "golden_mobilenetv3.npz"))


@pytest.fixture(scope="session")
def golden_fgf_npz(shared_dir):
    return dict(np.load(GOLDEN_DIR / "golden_mobilenetv3_fgf.npz"))


@pytest.fixture(scope="session")
def golden_model(golden_pth):
    from model import load_checkpoint

    return load_checkpoint(golden_pth, "mobilenetv3", "deep_guided_filter")


@pytest.fixture(scope="session")
def golden_fgf_model(golden_pth):
    from model import load_checkpoint

    return load_checkpoint(golden_pth, "mobilenetv3", "fast_guided_filter")


@pytest.fixture(scope="session")
def default_model():
    from rvm_export.default_model import seeded_default_model

    return seeded_default_model("mobilenetv3", "deep_guided_filter", seed=0)


# -- training package (tests/test_training_*.py) -------------------------------------------------------------------
@pytest.fixture(scope="session")
def training_synthetic_root(tmp_path_factory) -> Path:
    """The 'tiny' synthetic data set in every training layout (about 1 s to write)."""
    from training.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("training_synthetic")
    make_synthetic(root, seed=0, spec="tiny")
    return root


@pytest.fixture(scope="session")
def training_tiny_config():
    """Smallest useful training config: 64 px, 2-frame clips, batch 1, constant LR, no workers, no TensorBoard."""
    from training.config import get_preset

    return get_preset("smoke").replace(
        name="tiny", seq_length_lr=2, seg_seq_length=2, batch_size=1, lr_schedule="constant", warmup_steps=0,
        max_steps=4, log_every=1, eval_every=2, checkpoint_every=2, valid_clips=1, valid_seq_length=2,
        num_workers=0, tensorboard=False)


@pytest.fixture
def training_single_thread():
    """Training tests run on one thread: at 64 px two threads gain little, and on a loaded machine they thrash."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def float32_ratio_rollout(golden_model):
    """A checker for dynamic graphs run directly (no Bucket: it refuses ratios whose float32 value PyTorch treats
    differently): ``check(run, width, height, ratio, frames)`` feeds ``run({name: array}) -> {name: array}`` the
    generated scene with zero states of PyTorch's shapes and ``downsample_ratio`` as float32, steps PyTorch with the
    same float32 ratio (a tensor, as the graph gets it), and returns ``(max abs error per output, mean pha MAD)``
    after checking every output's shape."""
    from model.matting import state_shapes
    from rvm_export.core.names import OUTPUT_NAMES, RATIO, SRC, STATE_INPUTS, STATE_PAIRS
    from rvm_export.core.rollout import MovingScene

    def check(run, width: int, height: int, ratio: float, frames: int = 3):
        r32 = np.array([ratio], np.float32)
        shapes = state_shapes(golden_model.variant, height, width, float(r32[0]))
        states = {name: np.zeros(shape, np.float32) for name, shape in zip(STATE_INPUTS, shapes)}
        scene, torch_states = MovingScene(width, height, frames, seed=0), [None] * 4
        errors, mads = dict.fromkeys(OUTPUT_NAMES, 0.0), []
        for t in range(frames):
            frame = scene.frame(t)
            with torch.inference_mode():
                fgr, pha, *torch_states = golden_model(torch.from_numpy(frame), *torch_states,
                                                       downsample_ratio=torch.from_numpy(r32))
            outputs = run({SRC: frame, **states, RATIO: r32})
            for name, want in zip(OUTPUT_NAMES, (fgr, pha, *torch_states)):
                assert outputs[name].shape == tuple(want.shape), (name, outputs[name].shape, tuple(want.shape))
                errors[name] = max(errors[name], float(np.abs(outputs[name] - want.numpy()).max()))
            mads.append(float(np.abs(outputs["pha"] - pha.numpy()).mean()))
            states = {state_in: outputs[state_out] for state_out, state_in in STATE_PAIRS}
        return errors, float(np.mean(mads))

    return check
