"""Evaluation metrics on small cases worked out by hand, and the rvm-evaluate command."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from training.evaluate import main as evaluate_main
from training.metrics import (MetricAccumulator, fgr_mse, gaussian_gradient_filters, pha_conn, pha_dtssd, pha_grad,
                              pha_mad, pha_mse)

pytestmark = pytest.mark.training


def test_mad_and_mse_by_hand():
    pred, true = np.array([[0.1, 0.3]]), np.zeros((1, 2))
    assert pha_mad(pred, true) == pytest.approx(200.0)  # mean 0.2, x 1e3
    assert pha_mse(pred, true) == pytest.approx(50.0)  # mean (0.01 + 0.09) / 2, x 1e3


def test_gradient_filters_are_9x9_unit_norm_derivatives_of_gaussians():
    fx, fy = gaussian_gradient_filters(1.4)
    assert fx.shape == (9, 9)  # half size ceil(1.4 * sqrt(-2 ln(sqrt(2 pi) * 1.4 * 0.01))) = ceil(3.62) = 4
    assert (fx ** 2).sum() == pytest.approx(1.0)
    assert np.allclose(fy, fx.T)
    assert np.allclose(fx.sum(axis=1), 0.0)  # a derivative along x: rows sum to 0


def test_grad_of_an_impulse_is_twice_its_square():
    # Both filters have unit L2 norm, so an impulse of height a gives sum(gx^2 + gy^2) = 2 a^2 (away from borders).
    pred = np.zeros((21, 21))
    pred[10, 10] = 1.0
    assert pha_grad(pred, np.zeros_like(pred)) == pytest.approx(2.0 / 1e3, rel=1e-9)


def test_grad_of_a_ramp_in_the_interior_by_hand():
    # For p = a * x the x-response is a * sum_i g_i * sum_j (j-h)^2 g_j / sigma^2 / norm; the y-response is 0.
    sigma, a = 1.4, 0.01
    x = np.arange(-4, 5, dtype=np.float64)
    g = np.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * math.sqrt(2 * math.pi))
    d = -x * g / sigma ** 2
    norm = math.sqrt((np.outer(g, d) ** 2).sum())
    expected = a * g.sum() * (x ** 2 * g).sum() / sigma ** 2 / norm
    ramp = np.tile(a * np.arange(40, dtype=np.float64), (40, 1))
    # Gradient error against the zero image over the 10x10 interior patch = sum of squared magnitudes there.
    from training.metrics import _gradient_magnitude

    interior = _gradient_magnitude(ramp, sigma)[15:25, 15:25]
    assert np.allclose(interior, expected, rtol=1e-9)


def test_grad_ignores_constant_offsets():
    rng = np.random.default_rng(0)
    true = rng.random((16, 16))
    assert pha_grad(true, true) == 0.0
    assert pha_grad(true + 0.2, true) == pytest.approx(0.0, abs=1e-12)


def test_conn_by_hand_two_pixels():
    # t = [1, 0], p = [1, 1]: pixel 1 leaves the component at the first threshold (l = 0), pixel 0 never (l = 1).
    # phi_p = [1, 1 - 1] = [1, 0], phi_t = [1, 1]: error 1, / 1e3.
    assert pha_conn(np.array([[1.0, 1.0]]), np.array([[1.0, 0.0]])) == pytest.approx(1e-3)
    assert pha_conn(np.array([[1.0, 0.0]]), np.array([[1.0, 0.0]])) == 0.0


def test_conn_uses_4_connectivity():
    # The corner pixel touches the 2x2 block only diagonally: with 4-connectivity it is its own (smaller) component,
    # so it drops out at the first threshold (l = 0): phi_p = 1 - 0.9 = 0.1, phi_t = 1 - 1 = 0 -> error 0.1 / 1e3.
    # (With 8-connectivity it would stay until 0.9 and the error would be 0.)
    true = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    pred = true.copy()
    pred[2, 2] = 0.9
    assert pha_conn(pred, true) == pytest.approx(0.1 / 1e3)


def test_dtssd_by_hand():
    zeros = np.zeros((1, 2))
    pred_now = np.array([[0.2, 0.0]])
    # (0.2 - 0) - (0 - 0) on one of two pixels: sqrt(0.04 / 2) = 0.1414..., x 1e2
    assert pha_dtssd(pred_now, zeros, zeros, zeros) == pytest.approx(math.sqrt(0.02) * 100)
    assert pha_dtssd(pred_now, zeros, pred_now, zeros) == 0.0  # the same change as the truth costs nothing


@pytest.mark.parametrize("layout", ["hwc", "chw"])
def test_fgr_mse_counts_only_pixels_where_true_alpha_is_positive(layout):
    true_pha = np.array([[1.0, 0.0], [0.0, 0.0]])
    pred, true = np.full((2, 2, 3), 0.5), np.zeros((2, 2, 3))
    pred[1, 1] = 9.0  # outside the mask: ignored
    if layout == "chw":
        pred, true = pred.transpose(2, 0, 1), true.transpose(2, 0, 1)
    assert fgr_mse(pred, true, true_pha) == pytest.approx(250.0)  # 0.5^2 on the one masked pixel, x 1e3
    assert fgr_mse(pred, true, np.zeros((2, 2))) == 0.0


def test_accumulator_averages_frames_and_dtssd_over_frames_with_a_predecessor():
    true = [np.zeros((1, 2))] * 3
    pred = [np.zeros((1, 2)), np.array([[0.2, 0.0]]), np.array([[0.2, 0.0]])]
    acc = MetricAccumulator(("pha_mad", "pha_dtssd"))
    clip = acc.add_clip(pred, true)
    assert clip["pha_mad"] == pytest.approx((0 + 100 + 100) / 3)
    assert clip["pha_dtssd"] == pytest.approx((math.sqrt(0.02) * 100 + 0.0) / 2)
    assert acc.result() == pytest.approx(clip)


def _write_clip(root, name, pha_value, fgr_value, frames=2):
    for layer, value, mode in (("pha", pha_value, "L"), ("fgr", fgr_value, "RGB")):
        (root / name / layer).mkdir(parents=True)
        for f in range(frames):
            shape = (8, 8) if mode == "L" else (8, 8, 3)
            Image.fromarray(np.full(shape, value, np.uint8), mode).save(root / name / layer / f"{f:04d}.png")


def test_evaluate_command_reports_known_values(tmp_path, capsys):
    _write_clip(tmp_path / "true", "clip", 255, 0)
    _write_clip(tmp_path / "pred", "clip", 204, 51)  # alpha 0.8 vs 1.0, foreground 0.2 vs 0.0
    out = tmp_path / "report.json"
    assert evaluate_main(["--pred", str(tmp_path / "pred"), "--true", str(tmp_path / "true"),
                          "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == report
    mean = report["mean"]
    assert report["frames"] == 2
    assert mean["pha_mad"] == pytest.approx(200.0)
    assert mean["pha_mse"] == pytest.approx(40.0)
    assert mean["pha_dtssd"] == pytest.approx(0.0)
    assert mean["pha_grad"] == pytest.approx(0.0, abs=1e-9)  # constant images: no gradients
    assert mean["fgr_mse"] == pytest.approx(40.0)  # 0.2^2 everywhere (true alpha is 1 everywhere)


def test_evaluate_command_errors(tmp_path, capsys):
    _write_clip(tmp_path / "true", "clip", 255, 0)
    assert evaluate_main(["--pred", str(tmp_path / "missing"), "--true", str(tmp_path / "true")]) == 3
    assert "folder not found" in capsys.readouterr().err
    _write_clip(tmp_path / "pred", "clip", 255, 0, frames=1)
    assert evaluate_main(["--pred", str(tmp_path / "pred"), "--true", str(tmp_path / "true")]) == 3
    assert "frames differ" in capsys.readouterr().err
    assert evaluate_main(["--pred", str(tmp_path / "pred"), "--true", str(tmp_path / "true"),
                          "--metrics", "pha_mad,nope"]) == 2
    assert evaluate_main(["--true", str(tmp_path / "true")]) == 2  # --pred missing: argparse usage error
