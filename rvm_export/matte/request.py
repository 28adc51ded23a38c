"""What a matting run was asked for: one frozen, validated record that the CLI and the Python API both fill."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rvm_export.core.args import output_path_problem
from rvm_export.core.errors import InputError, UsageError

from .cuts import DEFAULT_THRESHOLD
from .encode import EncodeOptions, OutputPlan, plan_output
from .fit import FIT_MODES

__all__ = ["MatteRequest", "OUTPUT_KINDS"]

OUTPUT_KINDS = ("composite", "alpha", "foreground", "rgba")


@dataclass(frozen=True)
class MatteRequest:
    """One ``rvm-export matte`` run: the input, the model, the outputs asked for and how to run."""
    input: Path  # video file, image folder or one image
    model: Path  # export folder, artifact file or checkpoint
    composite: Path | None = None  # RGB over --background
    alpha: Path | None = None  # the matte, grey
    foreground: Path | None = None  # the predicted foreground colour, RGB (no alpha)
    rgba: Path | None = None  # foreground + alpha (straight), in a format that keeps alpha
    background: str = "green"  # colour, blur[:RADIUS], image or video (background.py)
    artifact: str | None = None  # artifact name inside an export folder; None = picked for the frame size
    target: str | None = None  # narrow the pick to this target
    precision: str | None = None  # narrow the pick to this precision
    fit: str = "letterbox"  # how frames reach a static model's size: letterbox | resize | exact
    downsample_ratio: float | None = None  # None = auto (recommended per size, or the static bucket's own)
    scene_cuts: bool = True  # reset the recurrent states at detected cuts
    scene_cut_threshold: float = DEFAULT_THRESHOLD  # mean abs difference of sampled pixels, 0..1 (cuts.py)
    encode: EncodeOptions = EncodeOptions()  # crf, bitrate, preset, PNG compression
    audio: bool = True  # copy the input's audio into video outputs
    fps: float = 25.0  # frame rate given to image inputs
    max_frames: int | None = None  # matte only the first N frames
    compare: Path | None = None  # a second model run on the same frames
    compare_artifact: str | None = None  # artifact of the second model's folder
    compare_video: Path | None = None  # side-by-side composite: model | compare model
    compare_plot: Path | None = None  # PNG: per-frame alpha difference
    overwrite: bool = False  # replace existing outputs (only once the run has succeeded)
    threads: int | None = None  # runtime intra-op threads; None = the runtime's default
    device: str = "cpu"  # cpu, or cuda (checkpoints and CUDA/ONNX artifacts)
    queue_depth: int = 3  # frames waiting between two stages (memory: about 3 frames per stage)
    pipeline_nice: int = 10  # nice increment of the decode/encode threads (Linux; 0 = the model's priority)
    progress: bool = True  # tqdm bar on stderr

    def __post_init__(self) -> None:
        for name in ("input", "model", *OUTPUT_KINDS, "compare", "compare_video", "compare_plot"):
            value = getattr(self, name)
            if isinstance(value, str) and not value.strip():  # Path("") would be the current folder
                raise UsageError(f"{name} is an empty path: name a file or folder")
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        if not any(getattr(self, kind) for kind in OUTPUT_KINDS) and not (self.compare_video or self.compare_plot):
            raise UsageError("no output requested: give at least one of --composite, --alpha, --foreground, --rgba "
                             "(or --compare with --compare-video / --compare-plot)")
        if self.fit not in FIT_MODES:
            raise UsageError(f"--fit must be one of {', '.join(FIT_MODES)}, got {self.fit!r}")
        if self.downsample_ratio is not None and not 0.0 < self.downsample_ratio <= 1.0:
            raise UsageError(f"--downsample-ratio must be in (0, 1] or auto, got {self.downsample_ratio}")
        if not 0.0 < self.scene_cut_threshold <= 1.0:
            raise UsageError(f"--scene-cut-threshold must be in (0, 1], got {self.scene_cut_threshold}")
        if self.fps <= 0:
            raise UsageError(f"--fps must be positive, got {self.fps}")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"--frames must be at least 1, got {self.max_frames}")
        if self.queue_depth < 1:
            raise UsageError(f"--queue must be at least 1, got {self.queue_depth}")
        if not 0 <= self.pipeline_nice <= 19:
            raise UsageError(f"--pipeline-nice must be 0..19, got {self.pipeline_nice}")
        if self.compare is None and (self.compare_video or self.compare_plot or self.compare_artifact):
            raise UsageError("--compare-video, --compare-plot and --compare-artifact need --compare M2")
        if self.compare is not None and not (self.compare_video or self.compare_plot):
            raise UsageError("--compare needs --compare-video PATH and/or --compare-plot PATH")
        if self.compare_plot is not None and self.compare_plot.suffix.lower() != ".png":
            raise UsageError(f"--compare-plot {self.compare_plot}: the plot is a .png file")
        plans = self.plans()
        codecs = {plan.codec for plan in plans}
        for flag, value, users in (("--crf", self.encode.crf, {"h264", "vp9"}),
                                   ("--bitrate", self.encode.bitrate, {"h264", "vp9"})):
            if value is not None and not codecs & users:
                raise UsageError(f"{flag} applies to H.264 and VP9 outputs (.mp4/.mkv/.webm); none is requested")
        if self.encode.crf is not None and self.encode.bitrate is not None:
            raise UsageError("--crf and --bitrate exclude each other: constant quality or a target bitrate")

    def plans(self) -> list[OutputPlan]:
        """Every video/PNG output with its codec (the compare plot is not among them)."""
        plans = [plan_output(kind, getattr(self, kind)) for kind in OUTPUT_KINDS if getattr(self, kind)]
        if self.compare_video is not None:
            plans.append(plan_output("compare", self.compare_video))
        return plans

    def output_paths(self) -> list[Path]:
        return [plan.path for plan in self.plans()] + ([self.compare_plot] if self.compare_plot else [])

    def check_paths(self) -> None:
        """Outputs distinct, none the input or the model, none existing unless ``overwrite``, each one writable (no file
        on the way, its folder writable). Raises UsageError / InputError (exit 2), before anything is read."""
        paths = self.output_paths()
        folders = {plan.path for plan in self.plans() if plan.container is None}
        resolved = [p.resolve() for p in paths]
        if len(set(resolved)) != len(resolved):
            raise UsageError(f"two outputs share a name: {', '.join(str(p) for p in paths)}")
        for path, real in zip(paths, resolved):
            if real in (self.input.resolve(), self.model.resolve()):
                raise UsageError(f"output {path} is the input or the model")
            if path.exists() and not self.overwrite:
                raise UsageError(f"output {path} exists: pass --overwrite to replace it")
            if path.is_file() and path in folders:
                raise UsageError(f"output {path} exists as a file: a PNG folder cannot replace it")
            problem = output_path_problem(path)  # a file on the way, a folder that is not writable
            if problem:
                raise InputError(f"cannot write output {path}: {problem}")
