"""Video matting metrics as the RVM paper reports them (section 4.1), per frame on float arrays in [0, 1].

| metric   | per frame                                                        | reported as |
|----------|------------------------------------------------------------------|-------------|
| pha_mad  | mean |p - t|                                                     | x 1e3       |
| pha_mse  | mean (p - t)^2                                                   | x 1e3       |
| pha_grad | sum (|grad G_1.4 t| - |grad G_1.4 p|)^2                          | / 1e3       |
| pha_conn | connectivity error, thresholds 0.1..1.0, 4-connected             | / 1e3       |
| pha_dtssd| sqrt(sum ((p_t - p_t-1) - (t_t - t_t-1))^2 / N), frames t >= 1    | x 1e2       |
| fgr_mse  | mean (p - t)^2 over the pixels (and channels) where true alpha > 0 | x 1e3       |

Alpha arrays are ``[H, W]``; foregrounds ``[H, W, 3]`` or ``[3, H, W]`` (any layout works, the mask broadcasts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable

import numpy as np
from scipy import ndimage

__all__ = ["pha_mad", "pha_mse", "pha_grad", "pha_conn", "pha_dtssd", "fgr_mse", "gaussian_gradient_filters",
           "MetricAccumulator", "ALPHA_METRICS", "ALL_METRICS"]

ALPHA_METRICS = ("pha_mad", "pha_mse", "pha_grad", "pha_conn", "pha_dtssd")
ALL_METRICS = ALPHA_METRICS + ("fgr_mse",)


def pha_mad(pred: np.ndarray, true: np.ndarray) -> float:
    return float(np.abs(pred - true).mean() * 1e3)


def pha_mse(pred: np.ndarray, true: np.ndarray) -> float:
    return float(((pred - true) ** 2).mean() * 1e3)


@lru_cache(maxsize=4)
def gaussian_gradient_filters(sigma: float = 1.4, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """First-derivative-of-Gaussian filters (x, y) of the matting benchmark (Rhemann et al. 2009).

    Half size ``ceil(sigma * sqrt(-2 ln(sqrt(2 pi) sigma epsilon)))`` (4 for sigma 1.4, a 9x9 filter);
    ``f_x[i, j] = g(i) * g'(j)`` with ``g`` the Gaussian and ``g'`` its derivative, scaled to unit L2 norm.
    """
    half = math.ceil(sigma * math.sqrt(-2.0 * math.log(math.sqrt(2.0 * math.pi) * sigma * epsilon)))
    x = np.arange(-half, half + 1, dtype=np.float64)
    gauss = np.exp(-(x ** 2) / (2.0 * sigma ** 2)) / (sigma * math.sqrt(2.0 * math.pi))
    dgauss = -x * gauss / sigma ** 2
    filter_x = np.outer(gauss, dgauss)  # rows vary the Gaussian, columns the derivative: d/dx
    filter_x /= np.sqrt((filter_x ** 2).sum())
    return filter_x, filter_x.T.copy()


def _gradient_magnitude(image: np.ndarray, sigma: float) -> np.ndarray:
    filter_x, filter_y = gaussian_gradient_filters(sigma)
    image = image.astype(np.float64)
    gx = ndimage.convolve(image, filter_x, mode="nearest")
    gy = ndimage.convolve(image, filter_y, mode="nearest")
    return np.sqrt(gx ** 2 + gy ** 2)


def pha_grad(pred: np.ndarray, true: np.ndarray, sigma: float = 1.4) -> float:
    """Gradient error; borders replicate the edge pixels."""
    diff = _gradient_magnitude(true, sigma) - _gradient_magnitude(pred, sigma)
    return float((diff ** 2).sum() / 1e3)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, count = ndimage.label(mask)  # default structure: 4-connectivity in 2-D
    if count == 0:
        return np.zeros_like(mask, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def pha_conn(pred: np.ndarray, true: np.ndarray, step: float = 0.1) -> float:
    """Connectivity error: for each pixel, the last threshold at which it still belonged to the largest 4-connected
    component of ``(pred >= th) & (true >= th)`` gives ``l``; ``phi = 1 - d * (d >= 0.15)`` with ``d = alpha - l``;
    the error is ``sum |phi_pred - phi_true|``."""
    steps = np.linspace(0.0, 1.0, int(round(1.0 / step)) + 1)
    level = np.full(pred.shape, -1.0)
    for i in range(1, len(steps)):
        omega = _largest_component((pred >= steps[i]) & (true >= steps[i]))
        newly_dropped = (level == -1.0) & ~omega
        level[newly_dropped] = steps[i - 1]
    level[level == -1.0] = 1.0
    pred_d = pred - level
    true_d = true - level
    pred_phi = 1.0 - pred_d * (pred_d >= 0.15)
    true_phi = 1.0 - true_d * (true_d >= 0.15)
    return float(np.abs(pred_phi - true_phi).sum() / 1e3)


def pha_dtssd(pred: np.ndarray, pred_prev: np.ndarray, true: np.ndarray, true_prev: np.ndarray) -> float:
    diff = (pred - pred_prev) - (true - true_prev)
    return float(np.sqrt((diff ** 2).sum() / diff.size) * 1e2)


def fgr_mse(pred_fgr: np.ndarray, true_fgr: np.ndarray, true_pha: np.ndarray) -> float:
    """Mean squared error over the pixels where ``true_pha > 0`` (all channels); 0 when there are none."""
    pred_fgr, true_fgr = np.asarray(pred_fgr, np.float64), np.asarray(true_fgr, np.float64)
    mask = np.broadcast_to(_channel_mask(true_pha > 0, pred_fgr.shape), pred_fgr.shape)
    if not mask.any():
        return 0.0
    return float(((pred_fgr - true_fgr) ** 2)[mask].mean() * 1e3)


def _channel_mask(mask: np.ndarray, fgr_shape: tuple[int, ...]) -> np.ndarray:
    """Make an ``[H,W]`` mask broadcast against ``[H,W,3]`` or ``[3,H,W]``."""
    if fgr_shape[:2] == mask.shape:
        return mask[:, :, None]
    return mask[None]


@dataclass
class MetricAccumulator:
    """Averages per-frame metrics over frames (dtSSD over the frames that have a predecessor in their clip)."""
    metrics: tuple[str, ...] = ALL_METRICS
    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add_clip(self, pred_pha: Iterable[np.ndarray], true_pha: Iterable[np.ndarray],
                 pred_fgr: Iterable[np.ndarray] | None = None, true_fgr: Iterable[np.ndarray] | None = None,
                 ) -> dict[str, float]:
        """Add one clip's frames (in order); return the clip's own averages."""
        clip = MetricAccumulator(self.metrics)
        pred_pha, true_pha = list(pred_pha), list(true_pha)
        fgrs = list(zip(pred_fgr, true_fgr)) if pred_fgr is not None and true_fgr is not None else None
        for i, (p, t) in enumerate(zip(pred_pha, true_pha)):
            values = {}
            for name, fn in (("pha_mad", pha_mad), ("pha_mse", pha_mse), ("pha_grad", pha_grad),
                             ("pha_conn", pha_conn)):
                if name in self.metrics:
                    values[name] = fn(p, t)
            if "pha_dtssd" in self.metrics and i > 0:
                values["pha_dtssd"] = pha_dtssd(p, pred_pha[i - 1], t, true_pha[i - 1])
            if "fgr_mse" in self.metrics and fgrs is not None:
                values["fgr_mse"] = fgr_mse(fgrs[i][0], fgrs[i][1], t)
            clip._add(values)
            self._add(values)
        return clip.result()

    def _add(self, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def result(self) -> dict[str, float]:
        return {name: self.sums[name] / self.counts[name] for name in self.metrics if self.counts.get(name)}
