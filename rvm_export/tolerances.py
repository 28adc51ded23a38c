"""Parity tolerances: one table keyed by (target, precision[, refiner]). ``"*"`` is the default for any target.

Float exports are judged by the largest absolute error of any output on any frame of the rollout (states
included). Quantised exports (int8) cannot match to 1e-4 by design; they are judged by alpha quality against the
PyTorch fp32 rollout: mean absolute error of ``pha`` and of ``fgr`` where the reference alpha > 0.
A ``None`` bound is reported but not judged.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Tolerance", "TOLERANCES", "INT8_RECIPE", "tolerance_for"]


@dataclass(frozen=True)
class Tolerance:
    """Bounds of one (target, precision[, refiner]) row; absolute errors in the outputs' units ([0, 1] for
    fgr/pha), None = reported, not judged."""
    frame_max: float | None  # max |fgr - ref| and |pha - ref| over all pixels and frames
    state_max: float | None  # max |rKo - ref| over all frames (states are compared where the model exposes them)
    pha_mad: float | None = None  # mean |pha - ref| over the rollout
    fgr_mad: float | None = None  # mean |fgr - ref| over pixels where the reference alpha > 0
    why: str = ""  # where the number comes from

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


FP32 = Tolerance(1e-4, 1e-4, why="float32 kernels reorder sums; the issue's bound for every fp32 export")
TOLERANCES: dict[tuple[str, ...], Tolerance] = {
    ("*", "fp32"): FP32,
    ("*", "fp32", "fast_guided_filter"): Tolerance(
        frame_max=5e-4, state_max=1e-4,
        why="the fast guided filter divides by var + 1e-5 on 3x3 windows: PyTorch fp32 itself is 1.4e-4 from float64 "
            "on the golden weights and thread count alone moves it by 5e-5 (golden README); states are unaffected"),
    ("*", "fp16"): Tolerance(
        frame_max=5e-2, state_max=5e-2, pha_mad=2e-3, fgr_mad=2e-3,
        why="half-precision weights and activations with states fed back; MAD bounds keep the bulk honest"),
    ("*", "bf16"): Tolerance(
        frame_max=2.5e-1, state_max=2.5e-1, pha_mad=1e-2, fgr_mad=1e-2,
        why="bfloat16 keeps 8 mantissa bits (~4e-3 relative); judged mainly by mean alpha error"),
    ("*", "int8"): Tolerance(
        frame_max=None, state_max=None, pha_mad=2e-2, fgr_mad=3e-2,
        why="8-bit activations: judged by alpha quality (pha MAD x1e3 <= 20, the order of the paper's MAD)"),
    ("cuda", "fp32"): Tolerance(
        frame_max=1e-4, state_max=1e-4,
        why="GPU fp32 with TF32 OFF vs CPU fp32: cuDNN sums in another order, BatchNorm folded (~1e-6 on the CPU)"),
    ("cuda", "fp16"): Tolerance(
        frame_max=5e-2, state_max=5e-2, pha_mad=2e-3, fgr_mad=2e-3,
        why="fp16 weights, activations and fed-back states on the GPU vs CPU fp32; CPU fp16 of the same program "
            "gave 2e-3 max, 4e-4 pha MAD (6 frames, 256x144): the bound leaves room for 30 frames at 1080p"),
    ("coreml", "fp16"): Tolerance(
        frame_max=5e-2, state_max=5e-2, pha_mad=2e-3, fgr_mad=2e-3,
        why="float16 mlprogram, every op's output rounded to float16 (MIL program check): 100 frames at 720p@0.375 "
            "and 1080p@0.25 gave 3.1e-3 max, 4.3e-4..5.9e-4 pha MAD, 6.7e-4 fgr MAD, no drift; the bound leaves "
            "room for the Neural Engine's own float16 accumulation, which the MIL check does not model"),
}


# The bound an int8 recipe must hold to be called one that "holds" (issue 17): alpha MAD against PyTorch fp32 over
# 1000 frames of the generated scene and over real clips, with no upward trend (benchmarks/int8_rollout.py). Per-export
# parity keeps the ("*", "int8") row above; this one judges recipes, not single exports.
INT8_RECIPE = Tolerance(
    frame_max=None, state_max=None, pha_mad=1e-2,
    why="issue 17: an int8 recipe holds when alpha MAD <= 1e-2 over 1000 generated frames and over the real clips "
        "(bigbuckbunny, bikes, carphone) at 256x144, with no upward trend over the rollout")


def tolerance_for(target: str, precision: str, refiner: str | None = None) -> Tolerance:
    """Most specific row first: (target, precision, refiner), (*, precision, refiner), (target, precision),
    (*, precision)."""
    precision = str(precision)
    keys = [(target, precision), ("*", precision)]
    if refiner:
        keys = [(target, precision, refiner), ("*", precision, refiner), *keys]
    for key in keys:
        if key in TOLERANCES:
            return TOLERANCES[key]
    raise KeyError(f"no tolerance for {target} {precision}")
