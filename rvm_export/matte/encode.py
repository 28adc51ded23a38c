"""Writers: the output's container and codec follow its extension; a path without one is a PNG folder.

| extension | codec | colour / alpha outputs | alpha kept |
|---|---|---|---|
| .mp4, .m4v, .mkv | H.264 (libx264) | yuv420p (yuv444p at an odd size: 4:2:0 cannot hold it) | no |
| .mov | ProRes 4444 (prores_aw; prores_ks at an odd width) | yuv444p10le / yuva444p10le | yes |
| .webm | VP9 (libvpx-vp9) | yuv420p / yuva420p | yes |
| folder | PNG, lossless 8-bit, plus timestamps.txt (timecode format v2, ms) | rgb24 / rgba / gray | yes |

Frames are filled planar (``gbrp``, ``gbrap``, ``gray``) and converted by swscale to BT.709 limited range, which the
stream is tagged with. Timestamps are the input's (its time base is kept), so variable frame rates survive.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from rvm_export.core.errors import UsageError

from .decode import Frame, require_av

__all__ = ["EncodeOptions", "OutputPlan", "plan_output", "open_writer", "PRESETS", "CHANNELS"]

CHANNELS = {"composite": "rgb", "foreground": "rgb", "alpha": "gray", "rgba": "rgba", "compare": "rgb"}
_CONTAINERS = {".mp4": ("mp4", "h264"), ".m4v": ("mp4", "h264"), ".mkv": ("matroska", "h264"),
               ".mov": ("mov", "prores"), ".webm": ("webm", "vp9")}
_FILL = {"rgb": "gbrp", "rgba": "gbrap", "gray": "gray"}  # what the pipeline fills, channel planes in RGB(A) order
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_VP9_SPEED = dict(zip(PRESETS, ("8", "8", "7", "6", "5", "4", "2", "1", "0")))  # libvpx cpu-used per x264 preset
BT709 = 1  # AVCOL_SPC_BT709 = AVCOL_PRI_BT709 = AVCOL_TRC_BT709
MPEG_RANGE = 1  # AVCOL_RANGE_MPEG (limited)


@dataclass(frozen=True)
class EncodeOptions:
    """Quality settings; each applies to the codecs named in its comment."""

    crf: int | None = None  # H.264 (default 18) and VP9 (default 32) constant quality; lower = better
    bitrate: int | None = None  # bits/s for H.264 and VP9 instead of crf
    preset: str = "veryfast"  # x264 speed preset; VP9 maps it to cpu-used (ultrafast 8 ... veryslow 0)
    png_compression: int = 1  # zlib level 0-9 for PNG folders (1: fast, files ~10 % larger than 9)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise UsageError(f"--preset must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        if self.crf is not None and not 0 <= self.crf <= 63:
            raise UsageError(f"--crf must be in 0..51 (H.264) or 0..63 (VP9), got {self.crf}")
        if self.bitrate is not None and self.bitrate <= 0:
            raise UsageError(f"--bitrate must be positive, got {self.bitrate}")
        if not 0 <= self.png_compression <= 9:
            raise UsageError(f"--png-compression must be in 0..9, got {self.png_compression}")


@dataclass(frozen=True)
class OutputPlan:
    """One requested output, validated: what goes in it and how it is encoded."""

    kind: str  # "composite" | "foreground" | "alpha" | "rgba" | "compare"
    path: Path  # the requested name
    container: str | None  # PyAV/FFmpeg format name; None for a PNG folder
    codec: str  # "h264" | "prores" | "vp9" | "png"

    @property
    def channels(self) -> str:
        return CHANNELS[self.kind]

    @property
    def is_video(self) -> bool:
        return self.container is not None

    def describe(self, width: int, height: int) -> str:
        return f"{self.kind} -> {self.path} ({self.codec}, {_pix_fmt(self.codec, self.channels, width, height)})"


def plan_output(kind: str, path: str | Path) -> OutputPlan:
    """Validate an output request. Raises UsageError for an unknown extension or alpha in a format without it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not suffix or path.is_dir():
        return OutputPlan(kind, path, None, "png")
    if suffix not in _CONTAINERS:
        raise UsageError(f"--{kind} {path}: unknown extension {suffix!r}; use .mp4/.mkv (H.264), .mov (ProRes 4444), "
                         f".webm (VP9) or a folder name (PNG)")
    container, codec = _CONTAINERS[suffix]
    if CHANNELS[kind] == "rgba" and codec == "h264":
        raise UsageError(f"--{kind} {path}: H.264 has no alpha channel; use .mov (ProRes 4444), .webm (VP9 with "
                         f"alpha) or a folder name (PNG)")
    return OutputPlan(kind, path, container, codec)


def _pix_fmt(codec: str, channels: str, width: int, height: int) -> str:
    if codec == "png":
        return {"rgb": "rgb24", "rgba": "rgba", "gray": "gray"}[channels]
    if codec == "prores":
        return "yuva444p10le" if channels == "rgba" else "yuv444p10le"
    if codec == "vp9":
        return "yuva420p" if channels == "rgba" else "yuv420p"
    return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"


def _new_frame(channels: str, width: int, height: int):
    """A blank frame to fill and views of its planes in R, G, B(, A) order (or the one grey plane)."""
    av = require_av()
    frame = av.VideoFrame(width, height, _FILL[channels])
    order = {"rgb": (2, 0, 1), "rgba": (2, 0, 1, 3), "gray": (0,)}[channels]  # gbrp(a) stores G, B, R(, A)
    views = [np.frombuffer(frame.planes[i], np.uint8).reshape(height, frame.planes[i].line_size)[:, :width]
             for i in order]
    return frame, views


class _Video:
    def __init__(self, plan: OutputPlan, path: Path, width: int, height: int, time_base: Fraction, rate: Fraction,
                 options: EncodeOptions, audio: Any = None) -> None:
        av = require_av()
        self.plan, self.width, self.height, self.time_base = plan, width, height, time_base
        self.pix_fmt = _pix_fmt(plan.codec, plan.channels, width, height)
        self.container = av.open(str(path), "w", format=plan.container)
        codec_options: dict[str, str] = {}
        if plan.codec == "h264":
            codec = "libx264"
            codec_options = {"preset": options.preset}
            if options.bitrate is None:
                codec_options["crf"] = str(18 if options.crf is None else options.crf)
        elif plan.codec == "vp9":
            codec = "libvpx-vp9"
            good = PRESETS.index(options.preset) >= PRESETS.index("medium")
            codec_options = {"deadline": "good" if good else "realtime", "cpu-used": _VP9_SPEED[options.preset],
                             "row-mt": "1", "auto-alt-ref": "0"}
            if options.bitrate is None:
                codec_options.update(crf=str(32 if options.crf is None else options.crf), b="0")
        else:
            codec = "prores_aw" if width % 2 == 0 else "prores_ks"
            codec_options = {"profile": "4" if codec == "prores_aw" else "4444"}
        self.stream = self.container.add_stream(codec, rate=rate, options=codec_options)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, self.pix_fmt
        self.stream.time_base = time_base
        self.stream.codec_context.time_base = time_base
        if options.bitrate is not None and plan.codec != "prores":
            self.stream.bit_rate = options.bitrate
        ctx = self.stream.codec_context
        ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = BT709, BT709, BT709, MPEG_RANGE
        self.reformatter = av.video.reformatter.VideoReformatter()  # keeps the swscale context between frames
        self.audio = audio.attach(self.container) if audio is not None else None
        self.frame_duration = 1.0 / float(rate)
        self.end = 0.0  # end time of the last written frame, seconds

    def new_frame(self):
        return _new_frame(self.plan.channels, self.width, self.height)

    def write(self, handle, frame: Frame) -> None:
        converted = self.reformatter.reformat(handle, format=self.pix_fmt, dst_colorspace="ITU709",
                                              dst_color_range="MPEG")
        converted.pts = frame.pts
        converted.time_base = self.time_base
        self.container.mux(self.stream.encode(converted))
        self.end = frame.time + self.frame_duration
        if self.audio is not None:
            self.audio.advance(frame.time)

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        if self.audio is not None:
            self.audio.finish(self.end)
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - the partial file is deleted anyway
            pass


class _Png:
    def __init__(self, plan: OutputPlan, path: Path, options: EncodeOptions) -> None:
        self.plan, self.folder, self.level = plan, path, options.png_compression
        path.mkdir(parents=True)
        self.times = (path / "timestamps.txt").open("w", encoding="utf-8")
        self.times.write("# timestamp format v2\n")
        self.encoder = None

    def new_frame(self, width: int, height: int):
        return _new_frame(self.plan.channels, width, height)

    def _encoder(self, width: int, height: int):
        av = require_av()
        if self.encoder is None or (self.encoder.width, self.encoder.height) != (width, height):
            self.encoder = av.CodecContext.create("png", "w")
            self.encoder.width, self.encoder.height = width, height
            self.encoder.pix_fmt = _pix_fmt("png", self.plan.channels, width, height)
            self.encoder.time_base = Fraction(1, 1)
            self.encoder.options = {"compression_level": str(self.level)}
            self.encoder.open()
        return self.encoder

    def write(self, handle, frame: Frame) -> None:
        encoder = self._encoder(handle.width, handle.height)
        packets = encoder.encode(handle.reformat(format=encoder.pix_fmt))
        (self.folder / f"{frame.index:06d}.png").write_bytes(b"".join(bytes(p) for p in packets))
        self.times.write(f"{frame.time * 1000:.3f}\n")

    def close(self) -> None:
        self.times.close()

    def abort(self) -> None:
        self.times.close()


class Writer:
    """One output being written to ``path`` (a temporary sibling of the requested name)."""

    def __init__(self, plan: OutputPlan, path: Path, width: int, height: int, time_base: Fraction, rate: Fraction,
                 options: EncodeOptions, audio: Any = None) -> None:
        self.plan, self.width, self.height = plan, width, height
        self.closed = False
        self._impl: Any = (_Png(plan, path, options) if plan.container is None else
                           _Video(plan, path, width, height, time_base, rate, options, audio))

    def new_frame(self, width: int | None = None, height: int | None = None):
        """(handle, planes): uint8 [H, W] views to fill, R, G, B(, A) or grey; pass ``handle`` to :meth:`write`."""
        if self.plan.container is None:
            return self._impl.new_frame(width or self.width, height or self.height)
        return self._impl.new_frame()

    def write(self, handle, frame: Frame) -> None:
        self._impl.write(handle, frame)

    def close(self) -> None:
        """Flush and finish the file (audio included)."""
        self._impl.close()
        self.closed = True

    def abort(self) -> None:
        """Stop without finishing (the caller deletes the temporary file); nothing once closed."""
        if not self.closed:
            self.closed = True
            self._impl.abort()


def open_writer(plan: OutputPlan, path: Path, width: int, height: int, time_base: Fraction, rate: Fraction,
                options: EncodeOptions, audio: Any = None) -> Writer:
    """Start writing ``plan`` at ``path``; ``audio`` (an :class:`~rvm_export.matte.audio.AudioCopy`) joins video
    containers. Frame sizes may change between frames only in PNG folders."""
    return Writer(plan, path, width, height, time_base, rate, options, audio)
