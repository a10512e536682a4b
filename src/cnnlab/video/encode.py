"""Writing frames as a video, through PyAV.

`VideoWriter` keeps the input's codec where it can encode it into the chosen container (an H.264 file
gives an H.264 file), else the container's usual codec; the frame rate is the one it is given (the
source's, divided by the sampling). Frames written with their source time are placed at that time on
the rate's grid, so a video whose frames were dropped (a live source faster than the model) lasts as
long as its source did, each frame shown until the next, instead of playing its frames back to
back. Closing it (also on Ctrl-C: it is a context manager, and
`close` may be called twice) flushes the encoder and writes the container's index, so the file
plays to its last frame.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.video.engine import ffmpeg_errors, pyav

log = logging.getLogger(__name__)

# The encoder FFmpeg offers for a decoder's codec (where the names differ).
ENCODERS = {"h264": "libx264", "hevc": "libx265", "vp8": "libvpx", "vp9": "libvpx-vp9", "av1": "libaom-av1"}
# A container's usual codec, when the input's cannot go in it (or there is no input codec).
CONTAINER_CODECS = {".mp4": "libx264", ".m4v": "libx264", ".mov": "libx264", ".mkv": "libx264",
                    ".avi": "mpeg4", ".webm": "libvpx-vp9"}
OUTPUT_SUFFIXES = tuple(CONTAINER_CODECS)


def check_output_path(path: str | Path, flag: str = "--draw") -> Path:
    path = Path(path)
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise CnnlabError(f"{flag} {path}: name a video file ending in {', '.join(OUTPUT_SUFFIXES)} (or a folder)")
    if path.is_dir():
        raise CnnlabError(f"{flag} {path}: a folder is in the way of the video file")
    return path


class VideoWriter:
    """Frames (H, W, 3) uint8 RGB, or PIL images, → a video file at `fps`. The size is the first frame's;
    odd sides are padded by a black pixel (4:2:0 colour needs even sides). `codec`: the input's codec
    name to keep (FFmpeg's decoder name is fine), else the container's usual one. `quality="high"`
    encodes nearly losslessly (the generated test videos)."""

    def __init__(self, path: str | Path, *, fps: float, codec: str | None = None, quality: str = "normal"):
        self.path = Path(path)
        self.fps, self.requested_codec, self.quality = fps, codec, quality
        self.frames = 0
        self.codec: str | None = None
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self._first_time: float | None = None
        self._last_slot = -1  # the last frame's presentation time, in frames of `fps` from the first

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def write(self, picture: Any, time: float | None = None) -> None:
        """Add a frame; `time` (seconds in the source) places it on the video's timeline, else it
        follows the last frame."""
        pixels = np.asarray(picture.convert("RGB")) if hasattr(picture, "convert") else np.asarray(picture)
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[..., None], 3, axis=2)
        if self._container is None:
            self._start(pixels.shape[1], pixels.shape[0])
        pixels = _fit(pixels, self._size)
        av = pyav()
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
        frame.pts = self._slot(time)
        self._mux(self._stream.encode(frame))
        self.frames += 1

    def _slot(self, time: float | None) -> int:
        """The frame's presentation time in the stream's time base (1/fps): its source time's, from
        the first frame's, rounded to the grid; always after the last frame's."""
        slot = self._last_slot + 1
        if time is not None:
            if self._first_time is None:
                self._first_time = time
            slot = max(slot, round((time - self._first_time) * self.fps))
        self._last_slot = slot
        return slot

    def close(self) -> None:
        """Flush the encoder and finish the file (idempotent)."""
        if self._container is None:
            return
        container, self._container = self._container, None
        try:
            self._mux(self._stream.encode(None), container)
        finally:
            container.close()

    def _mux(self, packets: Any, container: Any = None) -> None:
        (container or self._container).mux(packets)

    def _start(self, width: int, height: int) -> None:
        av = pyav()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._size = (width + width % 2, height + height % 2)
        try:
            self._container = av.open(str(self.path), "w")
        except ffmpeg_errors() as error:
            raise CnnlabError(f"{self.path}: cannot write a video here ({error})") from None
        for codec in self._candidates():
            try:
                self._stream = self._container.add_stream(codec, rate=_rate(self.fps))
                self.codec = codec
                break
            except ffmpeg_errors() + (ValueError,):
                continue
        if self._stream is None:
            raise CnnlabError(f"{self.path}: FFmpeg here cannot encode a video into this container")
        if self.requested_codec and self.codec != ENCODERS.get(self.requested_codec, self.requested_codec):
            log.warning(f"note: {self.path.name}: written as {self.codec}; the input's {self.requested_codec} "
                        f"cannot be encoded here or does not go in {self.path.suffix}")
        stream = self._stream
        stream.width, stream.height = self._size
        stream.pix_fmt = "yuv420p"
        stream.options = _quality_options(self.codec, self.quality)

    def _candidates(self) -> list[str]:
        usual = CONTAINER_CODECS.get(self.path.suffix.lower(), "libx264")
        wanted = ENCODERS.get(self.requested_codec, self.requested_codec) if self.requested_codec else None
        return [codec for codec in (wanted, usual, "mpeg4") if codec]


def _rate(fps: float) -> Any:
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)


def _quality_options(codec: str, quality: str) -> dict[str, str]:
    high = quality == "high"
    if codec in ("libx264", "libx265"):
        # "veryfast": encoding must keep up with the model on a small CPU. No B-frames: with them the
        # decoding order lags the presentation order, and an .mp4 whose frames leave gaps (a live
        # source's drops) got its duration from the decoding times: 0.52 s for frames up to 1.0 s.
        return {"crf": "8" if high else "20", "preset": "veryfast", "bf": "0"}
    if codec.startswith("libvpx"):
        return {"crf": "4" if high else "32", "b": "0", "deadline": "realtime", "cpu-used": "8"}
    if codec == "mpeg4":
        return {"qscale": "1" if high else "4"}
    return {}


def _fit(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`pixels` at the video's (width, height): padded with black (an odd side, or a smaller frame) or
    cut (a larger one); frames of one run normally all have the first one's size."""
    width, height = size
    if pixels.shape[1] == width and pixels.shape[0] == height:
        return pixels
    fitted = np.zeros((height, width, 3), np.uint8)
    h, w = min(height, pixels.shape[0]), min(width, pixels.shape[1])
    fitted[:h, :w] = pixels[:h, :w]
    return fitted
