"""Contract names: the tensors every exported model takes and returns, and how artifacts are named on disk.

Every artifact takes ``src`` (RGB in [0, 1]), the recurrent states ``r1i..r4i`` and, in the dynamic flavour,
``downsample_ratio``; it returns ``fgr``, ``pha`` and ``r1o..r4o``; ``rKo`` is fed back as ``rKi`` on the next frame.
This module holds the names only; shapes and dtypes are :mod:`rvm_export.core.spec`'s.
"""
from __future__ import annotations

__all__ = ["SRC", "RATIO", "FGR", "PHA", "FRAME_OUTPUTS", "STATE_INPUTS", "STATE_OUTPUTS", "STATE_PAIRS",
           "STATE_VARIABLES", "INPUT_NAMES", "OUTPUT_NAMES", "DEFAULT_OPSET", "artifact_name", "shape_label"]

SRC = "src"  # the input frame
RATIO = "downsample_ratio"  # the runtime ratio input of dynamic models
FGR, PHA = "fgr", "pha"  # foreground and alpha outputs
FRAME_OUTPUTS = (FGR, PHA)
STATE_INPUTS = ("r1i", "r2i", "r3i", "r4i")
STATE_OUTPUTS = ("r1o", "r2o", "r3o", "r4o")
STATE_PAIRS = tuple(zip(STATE_OUTPUTS, STATE_INPUTS))  # (output, the input it feeds on the next frame)
STATE_VARIABLES = ("r1", "r2", "r3", "r4")  # names of states kept inside a model (stateful IRs and packages)
INPUT_NAMES = (SRC, *STATE_INPUTS, RATIO)
OUTPUT_NAMES = (*FRAME_OUTPUTS, *STATE_OUTPUTS)

# ONNX opset of every graph we emit unless asked otherwise: Resize-with-scales and every op we use exist since 13;
# 17 is what TensorRT 8.6+ and ONNX Runtime take. Targets that convert through ONNX accept 13..21.
DEFAULT_OPSET = 17


def shape_label(bucket) -> str:
    """``dynamic`` or ``WxH_r<ratio>`` (``1920x1080_r0.25``): the shape part of an artifact's file name.

    ``bucket``: a :class:`~rvm_export.core.bucket.Bucket` or None (dynamic)."""
    return "dynamic" if bucket is None else f"{bucket.width}x{bucket.height}_r{bucket.ratio:g}"


def artifact_name(variant: str, refiner: str, shape: str, *tags: str, suffix: str = "") -> str:
    """``rvm_<variant>[_fgf]_<shape>_<tag>..<suffix>``: one naming rule for every target's files.

    ``tags`` are joined in the order given (each target orders its own: precision, layout, flavour);
    empty tags are skipped. Example: ``artifact_name("mobilenetv3", "deep_guided_filter", "dynamic", "fp32",
    suffix=".onnx")`` -> ``rvm_mobilenetv3_dynamic_fp32.onnx``."""
    ref = "" if refiner == "deep_guided_filter" else "_fgf"
    return "_".join(["rvm", f"{variant}{ref}", shape, *(t for t in tags if t)]) + suffix
