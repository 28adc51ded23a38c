"""The input's audio, carried into video outputs.

Packets are stream-copied (bit for bit) when the output container takes the codec (AAC into .mp4/.mov/.mkv); a
container that does not (AAC into .webm) gets it re-encoded with the container's default audio codec (Opus for
.webm), which the summary says. Packets join the output as the video reaches their time, so the muxer interleaves
them and nothing accumulates. When only part of the input is matted, audio stops where the last written frame ends.
"""
from __future__ import annotations

from pathlib import Path

from .decode import require_av

__all__ = ["AudioCopy"]


class AudioCopy:
    """Audio of ``source`` for one output; ``attach`` it to the output container before the first frame."""

    def __init__(self, source: Path, partial: bool = False) -> None:
        self.source, self.partial = Path(source), partial  # partial: the video stops before the input's end
        self.mode = ""  # "copy" or "re-encoded to <codec>" once attached

    def attach(self, container) -> "AudioCopy":
        av = require_av()
        self.input = av.open(str(self.source))
        self.in_stream = self.input.streams.audio[0]
        self.output = container
        name = self.in_stream.codec_context.name
        if name in container.supported_codecs:
            self.out_stream = container.add_stream_from_template(self.in_stream)
            self.mode = "copy"
        else:
            codec = container.default_audio_codec
            self.out_stream = container.add_stream(codec, rate=self.in_stream.rate)
            self.out_stream.layout = self.in_stream.layout  # keep every channel (5.1 stays 5.1)
            self.mode = f"re-encoded to {codec}"
        self.packets = self.input.demux(self.in_stream)
        self.pending = None
        self.done = False
        return self

    def _mux(self, packet) -> None:
        if self.mode == "copy":
            packet.stream = self.out_stream
            self.output.mux(packet)
            return
        for frame in packet.decode():
            frame.pts = None  # let the encoder count samples from zero
            self.output.mux(self.out_stream.encode(frame))

    def advance(self, until: float) -> None:
        """Mux every packet that starts before ``until`` seconds."""
        while not self.done:
            packet = self.pending or next(self.packets, None)
            self.pending = None
            if packet is None:
                self.done = True
                return
            if packet.dts is None and packet.size == 0:  # the demuxer's flush packet
                continue
            start = float(packet.pts * packet.time_base) if packet.pts is not None else 0.0
            if start >= until:
                self.pending = packet
                return
            self._mux(packet)

    def finish(self, video_end: float) -> None:
        """Mux what is left (up to ``video_end`` seconds when ``partial``), flush an encoder, close the input."""
        self.advance(video_end if self.partial else float("inf"))
        if self.mode != "copy":
            self.output.mux(self.out_stream.encode(None))
        self.input.close()
