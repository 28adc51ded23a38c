"""The declarative I/O contract: names, shapes, dtypes, layouts, where the states live, and the state rule.

Every exported artifact takes ``src`` (RGB in [0, 1]), the four recurrent states ``r1i..r4i`` and, in the dynamic
flavour, ``downsample_ratio``; it returns ``fgr``, ``pha`` and ``r1o..r4o``. ``rKo`` is fed back as ``rKi`` on the
next frame. The first frame's states are zeros of their exact shapes (:meth:`IOSpec.zero_states`). A model may keep
its states inside (``states="internal"``: a stateful OpenVINO IR or Core ML package), take ``src`` as an image and
return images, or hold one function per bucket: :class:`IOSpec` says so in typed fields, so every manifest entry and
every embedded contract tells an app the truth about the file. Export, dummy inputs, validation, the manifest and
docs/io_contract.md all read this module.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal, Mapping

import numpy as np

from model.matting import VARIANTS, state_shapes

from .bucket import Bucket
from .errors import UsageError
from .names import FRAME_OUTPUTS, RATIO, SRC, STATE_INPUTS, STATE_PAIRS

__all__ = ["Precision", "Layout", "TensorSpec", "StateVariable", "IOSpec", "STATE_RULE", "state_shapes"]


class Precision(str, Enum):
    """Weights / compute precision of an artifact. ``str(Precision.FP32) == "fp32"``."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: "Precision | str") -> "Precision":
        """The one normalisation of a precision given as an enum or a string; raises UsageError naming the choices."""
        try:
            return cls(value)
        except ValueError:
            raise UsageError(f"unknown precision {value!r}; expected one of {[p.value for p in cls]}") from None


class Layout(str, Enum):
    """Tensor layout at the model boundary (states keep it in and out)."""

    NCHW = "NCHW"
    NHWC = "NHWC"  # channels last, for the Android GPU delegate

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, value: "Layout | str") -> "Layout":
        try:
            return cls(str(value).upper())
        except ValueError:
            raise UsageError(f"unknown layout {value!r}; expected NCHW or NHWC") from None


STATE_RULE = (
    "Feed rKo back as rKi on the next frame. On the first frame (and after a cut) pass zeros of shape "
    "[B, C_k, ceil(h/2^k), ceil(w/2^k)] where h = floor(H*r), w = floor(W*r) as PyTorch computes them (a float64 "
    "product: of the ratio a static model was built for, of the float32 value a dynamic model is fed) and "
    "C = (16, 20, 40, 64) for mobilenetv3, (16, 32, 64, 128) for resnet50; layout as the manifest says. "
    "States depend on H, W and r: reset them when any of these changes."
)

_DESCRIPTIONS = {
    SRC: "input frame, RGB in [0, 1]",
    RATIO: "float32 [1]: the network runs at floor(H*r) x floor(W*r) (exact products of this float32 r); r in (0, 1]",
    "fgr": "foreground RGB in [0, 1], full resolution",
    "pha": "alpha matte in [0, 1], full resolution",
}
_IMAGE_COLOURS = {SRC: "RGB", "fgr": "RGB", "pha": "GRAYSCALE"}


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of the contract."""

    name: str  # contract name, identical in every runtime
    kind: str  # "frame" | "state" | "ratio" | "image"
    shape: tuple[int | str, ...]  # ints are fixed, strings are named dynamic axes (unique per tensor)
    dtype: str  # numpy dtype name at the model boundary ("uint8" for images)
    description: str  # one line for metadata and docs
    pair: str | None = None  # the state this one feeds (rKo -> rKi) or is fed by
    colour: str | None = None  # images only: "RGB" or "GRAYSCALE" (8-bit pixels, 0..255 <-> 0..1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "shape": list(self.shape), "dtype": self.dtype,
                "description": self.description, **({"pair": self.pair} if self.pair else {}),
                **({"colour": self.colour} if self.colour else {})}


@dataclass(frozen=True)
class StateVariable:
    """A state kept inside a model (``IOSpec.states == "internal"``): what a runtime shows as a variable."""

    name: str  # the runtime's id: OpenVINO variable "r1", Core ML state "r1_hi"
    holds: str  # which contract state it carries ("r1i/r1o"; "r1i/r1o, high float16 half")
    shape: tuple[int | str, ...]  # fixed, or named axes for a dynamic model
    dtype: str  # storage dtype ("float32", "float16")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "holds": self.holds, "shape": list(self.shape), "dtype": self.dtype}


@dataclass(frozen=True)
class IOSpec:
    """The I/O contract of one model (or, with ``functions``, of every function of a multi-function package)."""

    variant: str  # "mobilenetv3" | "resnet50": sets the state channels
    refiner: str  # "deep_guided_filter" | "fast_guided_filter"
    bucket: Bucket | None = None  # fixed resolution and ratio; None = dynamic H, W, batch and runtime ratio
    layout: Layout = Layout.NCHW  # layout of src, fgr, pha and the states (the states keep it in and out)
    io_dtype: str = "float32"  # dtype of tensor inputs/outputs (fp16 models may keep float32 I/O)
    batch: int = 1  # batch size of static models
    states: Literal["io", "internal"] = "io"  # "internal": r1..r4 live in the model, not among its inputs/outputs
    state_variables: tuple[StateVariable, ...] = ()  # internal states as the runtime names them
    state_reset: str = ""  # internal states: how an app starts a new clip (e.g. "InferRequest.reset_state()")
    image_inputs: tuple[str, ...] = ()  # inputs typed as 8-bit images (e.g. ("src",)), scaled by 1/255 inside
    image_outputs: tuple[str, ...] = ()  # outputs typed as 8-bit images (e.g. ("fgr", "pha"))
    functions: tuple[tuple[str, Bucket], ...] = ()  # multi-function package: (function name, its bucket)
    notes: Mapping[str, Any] = field(default_factory=dict, compare=False)  # target notes carried to the manifest

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise UsageError(f"unknown variant {self.variant!r}; expected one of {sorted(VARIANTS)}")
        if self.states not in ("io", "internal"):
            raise ValueError(f"states must be 'io' or 'internal', got {self.states!r}")
        if self.states == "io" and self.state_variables:
            raise ValueError("state_variables describe internal states only")
        unknown = set(self.image_inputs) - {SRC} | set(self.image_outputs) - set(FRAME_OUTPUTS)
        if unknown:
            raise ValueError(f"only src (in) and fgr/pha (out) can be images, got {sorted(unknown)}")

    @property
    def dynamic(self) -> bool:
        return self.bucket is None

    @property
    def internal_states(self) -> bool:
        return self.states == "internal"

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.outputs)

    # -- shapes ------------------------------------------------------------------------------------------------
    def _frame_shape(self, name: str, channels: int) -> tuple[int | str, ...]:
        if self.bucket is None:
            nchw: tuple[int | str, ...] = (f"{name}_batch", channels, f"{name}_height", f"{name}_width")
        else:
            nchw = (self.batch, channels, self.bucket.height, self.bucket.width)
        return self._apply_layout(nchw)

    def _apply_layout(self, nchw: tuple[int | str, ...]) -> tuple[int | str, ...]:
        return nchw if self.layout == Layout.NCHW else (nchw[0], nchw[2], nchw[3], nchw[1])

    def _state_shape(self, name: str, index: int) -> tuple[int | str, ...]:
        channels = VARIANTS[self.variant].state_ch[index]
        if self.bucket is None:
            return self._apply_layout((f"{name}_batch", channels, f"{name}_height", f"{name}_width"))
        b = self.bucket
        return self._apply_layout(state_shapes(self.variant, b.height, b.width, b.ratio, self.batch)[index])

    def _frame(self, name: str, channels: int, images: tuple[str, ...]) -> TensorSpec:
        if name in images:
            text = f"{_DESCRIPTIONS[name]}, as an 8-bit {_IMAGE_COLOURS[name]} image (0..255 <-> 0..1)"
            return TensorSpec(name, "image", self._frame_shape(name, channels), "uint8", text,
                              colour=_IMAGE_COLOURS[name])
        return TensorSpec(name, "frame", self._frame_shape(name, channels), self.io_dtype, _DESCRIPTIONS[name])

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        specs = [self._frame(SRC, 3, self.image_inputs)]
        if not self.internal_states:
            for k, (out_name, in_name) in enumerate(STATE_PAIRS):
                specs.append(TensorSpec(in_name, "state", self._state_shape(in_name, k), self.io_dtype,
                                        f"recurrent state {k + 1}: zeros on the first frame, then the previous "
                                        f"frame's {out_name}", pair=out_name))
        if self.dynamic:
            specs.append(TensorSpec(RATIO, "ratio", (1,), "float32", _DESCRIPTIONS[RATIO]))
        return tuple(specs)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        specs = [self._frame("fgr", 3, self.image_outputs), self._frame("pha", 1, self.image_outputs)]
        if not self.internal_states:
            for k, (out_name, in_name) in enumerate(STATE_PAIRS):
                specs.append(TensorSpec(out_name, "state", self._state_shape(out_name, k), self.io_dtype,
                                        f"recurrent state {k + 1} after this frame: feed it back as {in_name}",
                                        pair=in_name))
        return tuple(specs)

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Per-tensor named dynamic axes (each tensor has its own names), in the torch.onnx format."""
        axes: dict[str, dict[int, str]] = {}
        for t in (*self.inputs, *self.outputs):
            named = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
            if named:
                axes[t.name] = named
        return axes

    @property
    def state_rule(self) -> str:
        """How an app drives the states of this model, in one paragraph."""
        if not self.internal_states:
            return STATE_RULE
        return (f"States live inside the model ({', '.join(v.name for v in self.state_variables)}): they start as "
                f"zeros and each call updates them. Start a new clip (a cut, or another H, W or ratio) with "
                f"{self.state_reset or 'a new state'}.")

    # -- concrete tensors --------------------------------------------------------------------------------------
    def concrete_state_shapes(self, bucket: Bucket, batch: int = 1) -> dict[str, tuple[int, ...]]:
        """``{r1i: shape, ...}`` at ``bucket`` in this spec's layout (also for internal states: their size)."""
        shapes = state_shapes(self.variant, bucket.height, bucket.width, bucket.ratio, batch)
        return {name: tuple(self._apply_layout(s)) for name, s in zip(STATE_INPUTS, shapes)}  # type: ignore[misc]

    def zero_states(self, bucket: Bucket, dtype: str | None = None, batch: int = 1) -> dict[str, np.ndarray]:
        """The first frame's states: zeros of their exact shapes, ``{r1i: array, ...}``, dtype ``io_dtype``."""
        dtype = dtype or self.io_dtype
        return {n: np.zeros(s, dtype=dtype) for n, s in self.concrete_state_shapes(bucket, batch).items()}

    def to_layout(self, nchw: np.ndarray) -> np.ndarray:
        """Convert an NCHW array to this spec's layout."""
        return nchw if self.layout == Layout.NCHW else np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))

    def from_layout(self, array: np.ndarray) -> np.ndarray:
        """Convert an array in this spec's layout back to NCHW."""
        return array if self.layout == Layout.NCHW else np.ascontiguousarray(array.transpose(0, 3, 1, 2))

    def feeds(self, src_nchw: np.ndarray, states: Mapping[str, np.ndarray], bucket: Bucket) -> dict[str, np.ndarray]:
        """Inputs for one frame: ``src`` (NCHW float array, converted to this layout/dtype) and states as given."""
        dtype = "float32" if SRC in self.image_inputs else self.io_dtype  # pixels are scaled inside, in float32
        feeds = {SRC: self.to_layout(src_nchw).astype(dtype, copy=False), **states}
        if self.dynamic:
            feeds[RATIO] = np.array([bucket.ratio], dtype=np.float32)
        return feeds

    def check_bucket(self, bucket: Bucket) -> None:
        """Raise UsageError when a static model (or no function of a package) serves ``bucket``, or when a dynamic
        model cannot compute what PyTorch computes at ``bucket``'s ratio (``Bucket.float32_ratio_problem``)."""
        served = [b for _, b in self.functions] or ([self.bucket] if self.bucket is not None else [])
        if served and bucket not in served:
            labels = ", ".join(b.label for b in served)
            raise UsageError(f"this model is fixed at {labels}; cannot run it at {bucket.label}")
        problem = bucket.float32_ratio_problem() if self.dynamic and not served else None
        if problem:
            raise UsageError(problem)

    # -- serialisation -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "variant": self.variant, "refiner": self.refiner, "layout": self.layout.value,
            "resolution": None if self.bucket is None else [self.bucket.width, self.bucket.height],
            "downsample_ratio": "dynamic" if self.bucket is None else self.bucket.ratio,
            "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs],
            "states": self.states, "state_rule": self.state_rule,
        }
        if self.internal_states:
            out["state_variables"] = [v.to_dict() for v in self.state_variables]
            out["state_reset"] = self.state_reset
        if self.functions:  # shapes above are the first function's; each function has its own bucket
            out["resolution"] = out["downsample_ratio"] = "per function"
            out["functions"] = {name: {"bucket": b.label, "resolution": [b.width, b.height],
                                       "downsample_ratio": b.ratio} for name, b in self.functions}
        return {**out, **self.notes}

    @classmethod
    def from_dict(cls, contract: Mapping[str, Any], variant: str | None = None,
                  refiner: str | None = None) -> "IOSpec":
        """Rebuild a spec from :meth:`to_dict`'s output (an embedded contract or a manifest entry).

        ``variant``/``refiner`` fill in what a manifest entry leaves to the model section. Raises InputError when a
        field is missing or malformed."""
        from .errors import InputError

        try:
            functions = tuple((name, Bucket(*f["resolution"], float(f["downsample_ratio"])))
                              for name, f in (contract.get("functions") or {}).items())
            bucket = functions[0][1] if functions else None
            if contract.get("resolution") is not None and not functions:
                width, height = contract["resolution"]
                bucket = Bucket(int(width), int(height), float(contract["downsample_ratio"]))
            tensors = [*contract.get("inputs", []), *contract.get("outputs", [])]
            io_dtype = next((t["dtype"] for t in tensors if t.get("kind") != "image"), "float32")
            variables = tuple(StateVariable(v["name"], v["holds"], tuple(v["shape"]), v["dtype"])
                              for v in contract.get("state_variables", []))
            return cls(variant or contract["variant"], refiner or contract["refiner"], bucket,
                       Layout.parse(contract["layout"]), io_dtype,
                       states=contract.get("states", "io"), state_variables=variables,
                       state_reset=contract.get("state_reset", ""),
                       image_inputs=tuple(t["name"] for t in contract.get("inputs", []) if t.get("kind") == "image"),
                       image_outputs=tuple(t["name"] for t in contract.get("outputs", []) if t.get("kind") == "image"),
                       functions=functions)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed I/O contract ({type(exc).__name__}: {exc})") from None
