"""What a CoreML export can be asked for (:class:`CoreMLOptions`), and what each deployment target can express
(:func:`resolve_options` turns the options and the precision into a :class:`CoreMLPlan`).

Keys (all optional; the CLI passes them as ``--option coreml.KEY=VALUE``):

- ``deployment_target``: ``iOS15``..``iOS18``, ``iOS26``, ``macOS12``..``macOS15``, ``macOS26`` (also tvOS/watchOS/
  names). Default ``iOS16``; ``iOS18`` for what needs it: every package with ``multifunction``, and the stateful
  packages of ``stateful`` (the stateless packages written beside them keep ``iOS16``: a stateful export does not
  raise the deployment target of the others). A named target applies to every package; naming one older than a
  requested feature needs is refused, never silently raised.
- ``image_input``: ``src`` as an RGB image (pixel buffer) scaled by 1/255 inside the model, instead of a float tensor.
- ``image_output``: ``fgr`` as an RGB image and ``pha`` as a grayscale image (pixel buffers an app can draw), scaled
  by 255 inside the model; Core ML rounds them to 8 bits (at most 0.5/255 = 2.0e-3 off the float result). iOS 16+.
- ``multifunction``: one package holding one function per bucket, sharing weights (iOS 18). Without it, one package
  per bucket (any mlprogram target).
- ``stateful``: also write a stateful package per bucket (iOS 18 state types: the recurrent states live in the
  model; inputs ``src`` only, outputs ``fgr``/``pha``) next to the stateless one(s).
- ``state_storage``: how a stateful *fp32* program keeps its states. Core ML states are float16 only, so ``"split"``
  (default for fp32) stores each state as two float16 halves, hi = fp16(r) and lo = fp16(r - hi), which keeps ~22
  significant bits; ``"fp16"`` stores one float16 tensor (what fp16 programs always do).
- ``io_dtype``: ``"float32"`` (default) or ``"float16"`` for every tensor input/output (iOS 16+). With float16 the
  states you feed back are float16, and the manifest says so.
- ``compute_units``: what the macOS parity check runs on when the runtime device is the default ``cpu``:
  ``cpu_only`` (default), ``all``, ``cpu_and_gpu``, ``cpu_and_ne``. Core ML picks units at load time; nothing
  is stored in the package. Ignored on Linux (the MIL program check has no compute units).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal

from rvm_export.core.bucket import Bucket
from rvm_export.core.errors import UsageError
from rvm_export.core.options import TargetOptions, option

__all__ = ["CoreMLOptions", "CoreMLPlan", "resolve_options", "check_buckets", "DEPLOYMENT_TARGETS", "COMPUTE_UNITS",
           "IOS16_SPEC", "IOS18_SPEC"]

IOS15_SPEC, IOS16_SPEC, IOS17_SPEC, IOS18_SPEC, IOS26_SPEC = 6, 7, 8, 9, 10
# name -> Core ML specification version (what coremltools' ct.target aliases resolve to).
DEPLOYMENT_TARGETS: dict[str, int] = {
    **{f"iOS{v}": s for v, s in ((15, IOS15_SPEC), (16, IOS16_SPEC), (17, IOS17_SPEC), (18, IOS18_SPEC),
                                  (26, IOS26_SPEC))},
    **{f"macOS{v}": s for v, s in ((12, IOS15_SPEC), (13, IOS16_SPEC), (14, IOS17_SPEC), (15, IOS18_SPEC),
                                    (26, IOS26_SPEC))},
    **{f"tvOS{v}": s for v, s in ((15, IOS15_SPEC), (16, IOS16_SPEC), (17, IOS17_SPEC), (18, IOS18_SPEC))},
    **{f"watchOS{v}": s for v, s in ((8, IOS15_SPEC), (9, IOS16_SPEC), (10, IOS17_SPEC), (11, IOS18_SPEC))},
}
_TOO_OLD = {"iOS13", "iOS14", "macOS10_15", "macOS10_16", "macOS11", "tvOS13", "tvOS14", "watchOS6", "watchOS7"}
COMPUTE_UNITS = ("cpu_only", "all", "cpu_and_gpu", "cpu_and_ne")


@dataclass(frozen=True)
class CoreMLOptions(TargetOptions):
    """``--option coreml.KEY=VALUE`` as given (see the module docstring); :func:`resolve_options` checks them
    together with the precision."""

    deployment_target: str | None = option(None, "iOS15..iOS18, iOS26, macOS12..macOS15, macOS26 (tvOS/watchOS "
                                                 "names too); default iOS16, iOS18 with multifunction or stateful")
    image_input: bool = option(False, "src as an RGB image (pixel buffer) scaled by 1/255 inside the model")
    image_output: bool = option(False, "fgr as an RGB image and pha as a grayscale image (pixel buffers, x255 inside "
                                       "the model, 8-bit in Core ML; iOS 16+)")
    multifunction: bool = option(False, "one package with one function per bucket, weights shared (iOS 18)")
    stateful: bool = option(False, "also write stateful packages (states inside the model, iOS 18)")
    state_storage: Literal["split", "fp16"] | None = option(
        None, "stateful fp32 programs: 'split' (two float16 halves per state, default) or 'fp16'")
    io_dtype: Literal["float32", "float16"] = option("float32", "dtype of every tensor input/output")
    compute_units: Literal["cpu_only", "all", "cpu_and_gpu", "cpu_and_ne"] = option(
        "cpu_only", "what the macOS parity check runs on when the runtime device is the default cpu")


@dataclass(frozen=True)
class CoreMLPlan:
    """The options resolved against the precision: every default chosen, every combination checked."""

    deployment_target: str  # ct.target name; sets the spec version, hence which ops and types exist
    deployment_target_reason: str  # "asked for" or why the default was chosen (goes to the manifest)
    image_input: bool  # src is an RGB image scaled by 1/255 inside, for apps that feed pixel buffers
    multifunction: bool  # one package, one function per bucket, shared weights (iOS 18)
    stateful: bool  # also write stateful packages (states inside the model, iOS 18)
    state_storage: str  # "split" (fp16 hi + lo pair, fp32 programs) or "fp16" (one fp16 tensor per state)
    io_dtype: str  # "float32" or "float16" at the model boundary (src, fgr, pha, rKi/rKo)
    compute_units: str  # macOS parity check's compute units when the runtime device is "cpu"
    image_output: bool = False  # fgr (RGB) and pha (grayscale) are images, x255 inside, for apps that draw them
    stateful_target: str = "iOS18"  # the stateful packages' deployment target (states need iOS 18)
    stateful_target_reason: str = "default for stateful (needs iOS 18)"

    def for_package(self, stateful: bool) -> "CoreMLPlan":
        """The plan of one package: stateful packages take ``stateful_target``; stateless ones keep their own."""
        if not stateful:
            return self
        return replace(self, deployment_target=self.stateful_target,
                       deployment_target_reason=self.stateful_target_reason)

    @property
    def spec_version(self) -> int:
        return DEPLOYMENT_TARGETS[self.deployment_target]

    def to_dict(self) -> dict[str, Any]:
        return {"deployment_target": self.deployment_target, "deployment_target_reason": self.deployment_target_reason,
                "image_input": self.image_input, "image_output": self.image_output,
                "multifunction": self.multifunction, "stateful": self.stateful,
                "state_storage": self.state_storage, "io_dtype": self.io_dtype, "compute_units": self.compute_units}


def resolve_options(options: CoreMLOptions, precision: str) -> CoreMLPlan:
    """Check the options together with the precision and choose every default; every refusal (UsageError) names the
    option, the reason and what to use instead."""
    image_input, multifunction, stateful = options.image_input, options.multifunction, options.stateful
    needs18 = [name for name, on in (("multifunction", multifunction), ("stateful", stateful)) if on]

    asked = options.deployment_target
    if asked is None:
        target = "iOS18" if multifunction else "iOS16"
        reason = "default for multifunction (needs iOS 18)" if multifunction else "default"
        stateful_target = "iOS18"
        stateful_reason = f"default for {' and '.join(needs18)} (needs iOS 18)"
    else:
        target = str(asked)
        reason = "asked for"
        if target in _TOO_OLD:
            raise UsageError(f"deployment_target {target} can only hold the old neural-network model type; the "
                             f"mlprogram this target writes needs iOS15 / macOS12 or later (e.g. iOS16, the default)")
        if target not in DEPLOYMENT_TARGETS:
            raise UsageError(f"unknown deployment_target {target!r}; choose one of {', '.join(DEPLOYMENT_TARGETS)}")
        if needs18 and DEPLOYMENT_TARGETS[target] < IOS18_SPEC:
            raise UsageError(
                f"{' and '.join(needs18)} need(s) iOS18 / macOS15 (Core ML "
                f"{'multifunction models' if multifunction else 'state types'}), which deployment_target {target} "
                f"cannot express; use deployment_target=iOS18 (or macOS15), or drop {' and '.join(needs18)} to get "
                f"one stateless package per bucket for {target}")
        stateful_target, stateful_reason = target, reason

    lowest = min(DEPLOYMENT_TARGETS[target], DEPLOYMENT_TARGETS[stateful_target] if stateful else IOS26_SPEC)
    if options.image_output and lowest < IOS16_SPEC:
        raise UsageError(f"image_output needs iOS16 / macOS13 (Core ML image outputs of an mlprogram); "
                         f"deployment_target {target} cannot express them. Use deployment_target=iOS16 (the "
                         f"default) or drop image_output to get float tensors")

    io_dtype = options.io_dtype
    if io_dtype == "float16" and DEPLOYMENT_TARGETS[target] < IOS16_SPEC:
        raise UsageError(f"float16 model inputs/outputs need iOS16 / macOS13; deployment_target {target} only has "
                         f"float32 multi-arrays. Use io_dtype=float32 (the default) or deployment_target=iOS16")

    storage = options.state_storage
    if storage is None:
        storage = "split" if precision == "fp32" else "fp16"
    if storage == "split" and precision != "fp32":
        raise UsageError("state_storage=split only makes sense for fp32 programs: an fp16 program already computes "
                         "its states in float16. Drop state_storage or use precision fp32")
    if options.state_storage is not None and not stateful:
        raise UsageError("coreml state_storage applies to stateful packages only; add stateful=true or drop it")

    return CoreMLPlan(target, reason, image_input, multifunction, stateful, storage, io_dtype, options.compute_units,
                      options.image_output, stateful_target, stateful_reason)


def check_buckets(buckets: tuple[Bucket, ...]) -> None:
    """Refuse what a fixed-shape mlprogram cannot reproduce, with the valid alternatives."""
    if not buckets:
        raise UsageError("coreml needs at least one --resolution WxH@RATIO (each becomes a fixed-shape model or "
                         "a function of a multifunction package)")
    seen: set[Bucket] = set()
    for bucket in buckets:
        if bucket in seen:
            raise UsageError(f"bucket {bucket.label} is listed twice")
        seen.add(bucket)
        if not bucket.exact:
            low_h, low_w = bucket.lowres
            raise UsageError(
                f"ratio {bucket.ratio:g} at {bucket.width}x{bucket.height} gives a low-res size of "
                f"{bucket.width * bucket.ratio:g}x{bucket.height * bucket.ratio:g}, which is not an integer. Core ML's "
                f"upsample_bilinear recomputes its sampling scale from the rounded size ({low_w}x{low_h}), so the "
                f"network would see a differently sampled frame than PyTorch does. Use a ratio for which W*r and H*r "
                f"are integers, e.g. {', '.join(f'{r:g}' for r in bucket.nearest_exact_ratios())}, or a size such as "
                f"{', '.join(bucket.nearest_exact_sizes())} at ratio {bucket.ratio:g}")
