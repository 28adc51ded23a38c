"""A stand-in for the original project's ONNX export, for side-by-side speed comparisons offline.

The original `.onnx` files cannot be downloaded here. This builds, from the same weights, a graph with the
original export's documented traits (../shared/RVM_REFERENCE.md, "Known deviations"): the refiner always runs
(also at ratio 1), one shared ``height``/``width`` name for every dynamic axis, [1,1,1,1] zero states broadcast
inside the graph, no graph simplification. Its cost per frame is what matters for the comparison; its numerics
at ratio 1 differ from PyTorch by design. It is a reconstruction from documented facts, not the original file:
every report that uses it says so. Users with the real file pass it to ``rvm-export bench --foreign``.

    python benchmarks/original_style_onnx.py --out original_style.onnx [--checkpoint CKPT]
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from model.decoder import ConvGRU  # noqa: E402
from model.guided_filter import apply_coefficients  # noqa: E402
from rvm_export.core.names import OUTPUT_NAMES  # noqa: E402
from rvm_export.core.spec import IOSpec  # noqa: E402
from targets.traced.contract import example_inputs  # noqa: E402

__all__ = ["build", "LABEL"]

LABEL = "original-style ONNX (reconstruction from documented traits, not the original file)"


class ResizeByScale(torch.autograd.Function):
    """Bilinear resize by a runtime scale tensor, exported as ONNX ``Resize`` with ``scales`` from that tensor
    (the original export resized with the runtime's own sampling grid)."""

    @staticmethod
    def forward(ctx, x: Tensor, ratio: Tensor) -> Tensor:  # type: ignore[override]
        from model import MattingNetwork

        return MattingNetwork.downsample(x, float(ratio.reshape(-1)[0]))

    @staticmethod
    def symbolic(g, x, ratio):  # pragma: no cover - exercised through torch.onnx.export
        ones = g.op("Constant", value_t=torch.tensor([1.0, 1.0], dtype=torch.float32))
        flat = g.op("Reshape", ratio, g.op("Constant", value_t=torch.tensor([1], dtype=torch.int64)))
        scales = g.op("Concat", ones, flat, flat, axis_i=0)
        roi = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
        out = g.op("Resize", x, roi, scales, mode_s="linear", coordinate_transformation_mode_s="half_pixel",
                   nearest_mode_s="floor")
        out.setType(x.type())  # same rank and channels; lets the exporter know the convs' input channels
        return out


@contextlib.contextmanager
def _broadcast_states():
    """Let every ConvGRU take a [1,1,1,1] state and broadcast it to the input's shape (the original's trick)."""
    original = ConvGRU.forward

    def forward(self, x: Tensor, h: Tensor | None, time: int | None):
        if h is not None:
            h = h.expand_as(x)
        return original(self, x, h, time)

    ConvGRU.forward = forward
    try:
        yield
    finally:
        ConvGRU.forward = original


class _AlwaysRefine(nn.Module):
    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def forward(self, src, r1, r2, r3, r4, downsample_ratio):
        m = self.model
        src_sm = ResizeByScale.apply(src, downsample_ratio)
        hid, states = m.encode_decode(src_sm, [r1, r2, r3, r4])
        fgr_residual, pha = m.project_mat(hid).split([3, 1], dim=1)
        a, b, _ = m.refiner.coefficients(src_sm, fgr_residual, pha, hid)
        fgr_residual, pha = apply_coefficients(a, b, src)
        fgr, pha = m.compose(src, fgr_residual, pha)
        return (fgr, pha, *states)


def build(path: Path, model, opset: int = 12) -> Path:
    spec = IOSpec(model.variant, model.refiner_name)
    from rvm_export.core.bucket import Bucket

    src, *_, ratio = example_inputs(spec, Bucket(256, 144, 0.5))
    ones = [torch.zeros(1, 1, 1, 1) for _ in range(4)]
    shared = {"src": {0: "batch", 2: "height", 3: "width"}, "fgr": {0: "batch", 2: "height", 3: "width"},
              "pha": {0: "batch", 2: "height", 3: "width"}}
    for k in range(1, 5):
        shared[f"r{k}i"] = {0: "batch", 1: "channels", 2: "height", 3: "width"}
        shared[f"r{k}o"] = {0: "batch", 2: "height", 3: "width"}
    with _broadcast_states(), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_AlwaysRefine(model).eval(), (src, *ones, ratio), str(path),
                          input_names=["src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio"],
                          output_names=list(OUTPUT_NAMES), dynamic_axes=shared, opset_version=opset,
                          do_constant_folding=True, dynamo=False)
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkpoint", type=Path, default=None)
    args = parser.parse_args()
    from rvm_export.pipeline import load_model

    model, _ = load_model(args.checkpoint, None, None)
    build(args.out, model)
    print(f"wrote {args.out} ({LABEL})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
