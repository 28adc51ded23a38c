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
