"""Frames out of a video file, a camera or a stream, through PyAV.

`VideoReader.frames()` yields `Frame`s (index in the source, time in seconds, RGB pixels and/or the
model's input, as a `convert.FrameConverter` makes them), sampled by `Sampling` (--stride, --fps,
--start, --end). It never hangs and never fails silently:

* opening and reading a stream have timeouts (FFmpeg's own, given to `av.open`);
* a live source that stalls or ends is reopened with growing waits (`reconnects` times, 0.5 s, 1 s,
  2 s, ...), then ends with a `StreamLostError` naming it;
* a file that is damaged or cut short ends with a `DamagedVideoError` naming it and where the damage
  starts, after every frame before it was yielded (so a run keeps them).
"""

from __future__ import annotations

import logging
import math
import platform
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from cnnlab.errors import ConfigError, DataError
from cnnlab.video.engine import ffmpeg_errors, pyav
from cnnlab.video.sources import SourceSpec

log = logging.getLogger(__name__)

DEFAULT_LIVE_FPS = 25.0  # what a camera or stream that does not say its rate is taken to run at
# FFmpeg's frame threads (one per core, each decoding a frame) for a file's frames of at least this
# many pixels; smaller ones are decoded on the reading thread. Handing a frame to a thread and
# waiting for it costs about the same at any size, while decoding grows with the pixels: a 160×160
# frame takes 0.037 ms of CPU on one thread, 0.053 with frame threads, and guide-cnn ran 7,994 ->
# 9,200 frames/s with one (0.206 -> 0.173 ms a frame; load 1.2-1.6). From 768×576 up (0.3-5 ms a
# frame) the two cost about the same CPU, and the threads put decoding, then the longer part, on
# the core the model leaves free: guide-cnn at 1280×720 319 frames/s against 177 with one thread
# (docs/video.md, "Speed").
FRAME_THREADS_FROM_PIXELS = 640 * 480


class DamagedVideoError(DataError):
    """A video file that stops decoding before its end (cut short, or damaged in the middle)."""


class StreamLostError(DataError):
    """A live source that stopped and did not come back."""


@dataclass
class Frame:
    index: int  # in the source: 0 is the video's (or the stream's) first frame
    time: float  # seconds from the source's start (a live source: from when cnnlab started reading)
    image: np.ndarray | None  # (H, W, 3) uint8 RGB; None where no output asked for pictures
    model_input: Any = None  # (C, H, W) uint8 at the model's input, made on the decoding thread
    size: tuple[int, int] = (0, 0)  # (width, height) of the frame as decoded (set from `image` if given)

    def __post_init__(self) -> None:
        if self.image is not None and self.size == (0, 0):
            self.size = (self.image.shape[1], self.image.shape[0])


@dataclass
class VideoInfo:
    width: int
    height: int
    fps: float  # frames a second (the average for a variable-rate file)
    codec: str  # FFmpeg's name for the decoder: "h264", "mpeg4", "vp9"
    frames: int  # how many the source holds (an estimate from the duration where not written); 0: unknown/live
    duration: float | None  # seconds; None for live sources


@dataclass
class Sampling:
    """Which decoded frames go to the model: every `stride`-th, or `fps` a second, from `start` to `end` s."""

    stride: int = 1
    fps: float | None = None
    start: float = 0.0
    end: float | None = None
    _next_time: float | None = field(default=None, repr=False)
    _count: int = field(default=0, repr=False)

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise ConfigError(f"--stride must be at least 1 (got {self.stride})")
        if self.fps is not None and self.fps <= 0:
            raise ConfigError(f"--fps must be above 0 (got {self.fps})")
        if self.fps is not None and self.stride != 1:
            raise ConfigError("--stride and --fps both sample frames: give one of them")
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise ConfigError(f"--start {self.start:g} --end {self.end}: need 0 ≤ start < end (seconds)")

    def keeps(self, frame_time: float) -> bool:
        """Whether the next decoded frame (at `frame_time` s, within start..end) is sampled."""
        if self.fps is None:
            self._count += 1
            return (self._count - 1) % self.stride == 0
        if self._next_time is None:
            self._next_time = frame_time
        if frame_time + 1e-6 < self._next_time:
            return False
        # The next sample a whole period on; a source slower than --fps has every frame kept.
        self._next_time = max(self._next_time + 1 / self.fps, frame_time)
        return True

    def expected(self, info: VideoInfo) -> int | None:
        """How many frames this sampling keeps of a file (for the progress bar), or None when unknown."""
        if not info.frames or not info.fps:
            return None
        end = info.duration if self.end is None or info.duration is None else min(self.end, info.duration)
        span = max(0.0, (end if end is not None else info.frames / info.fps) - self.start)
        frames = min(info.frames, math.ceil(span * info.fps - 1e-6))
        if self.fps is not None:
            return min(frames, math.ceil(span * self.fps - 1e-6))
        return math.ceil(frames / self.stride)


class VideoReader:
    """A video source opened with PyAV. `open_timeout`/`read_timeout` (seconds) bound how long a stream
    may take to answer; a live source is reopened `reconnects` times before a `StreamLostError`."""

    def __init__(self, spec: SourceSpec, *, open_timeout: float = 10.0, read_timeout: float = 10.0,
                 reconnects: int = 3, first_wait: float = 0.5):
        self.spec = spec
        self.open_timeout, self.read_timeout = open_timeout, read_timeout
        self.reconnects, self.first_wait = reconnects, first_wait
        self.stopping = threading.Event()  # set from another thread: the reading ends at the next frame
        self._container = self._open()
        self.info = self._describe(self._container)

    @property
    def live(self) -> bool:
        return self.spec.live

    @property
    def name(self) -> str:
        """What messages call the source: its path or URL, or "camera 0" (a bare "0: ..." says nothing)."""
        return f"camera {self.spec.text}" if self.spec.kind == "camera" else self.spec.text

    # --- opening ------------------------------------------------------------------------------

    def _open(self) -> Any:
        av = pyav()
        spec = self.spec
        try:
            if spec.kind == "file":
                if not Path(spec.text).is_file():
                    raise DataError(f"{spec.text}: no such video file")
                return av.open(spec.text)
            if spec.kind == "camera":
                return self._open_camera(av)
            return av.open(spec.text, options=_stream_options(spec.text),
                           timeout=(self.open_timeout, self.read_timeout))
        except ffmpeg_errors() as error:
            raise DataError(f"{spec.text}: {_what_failed(spec)} ({_reason(error)})") from None

    def _open_camera(self, av: Any) -> Any:
        device, form = _camera_device(self.spec.camera_index)
        try:
            return av.open(device, format=form, timeout=(self.open_timeout, self.read_timeout))
        except ffmpeg_errors() as error:  # a device that exists but is not a camera, or is busy
            raise DataError(f"{self.name}: cannot open {device} as a camera ({_reason(error)})") from None

    def _describe(self, container: Any) -> VideoInfo:
        if not container.streams.video:
            raise DataError(f"{self.name}: holds no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else DEFAULT_LIVE_FPS
        duration = None
        if not self.live:
            # The longest the headers say: a file cut short may have its stream's duration counted
            # from what is left (an AVI without its index) while its header still counts every frame.
            durations = [float(stream.duration * stream.time_base) if stream.duration and stream.time_base else 0,
                         container.duration / 1_000_000 if container.duration else 0,  # FFmpeg's AV_TIME_BASE
                         stream.frames / fps if stream.frames else 0]
            duration = max(durations) or None
        frames = stream.frames or (round(duration * fps) if duration else 0)
        return VideoInfo(stream.codec_context.width, stream.codec_context.height, fps,
                         stream.codec_context.name, int(frames), duration)

    # --- reading ------------------------------------------------------------------------------

    converts_frames = True  # `frames` takes a `converter` (run.py asks for the model's input at decoding)

    def frames(self, sampling: Sampling | None = None, converter: Any = None) -> Iterator[Frame]:
        """The sampled frames, in order; see the module docstring for how it ends. `converter`
        (a `cnnlab.video.convert.FrameConverter`, used on this thread) makes each frame's pixels:
        by default the RGB picture only."""
        from cnnlab.video.convert import FrameConverter

        sampling = sampling or Sampling()
        converter = converter or FrameConverter()
        try:
            if self.live:
                yield from self._live_frames(sampling, converter)
            else:
                yield from self._file_frames(sampling, converter)
        finally:
            self.close()  # on the thread that decodes: never while another thread is inside FFmpeg

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _file_frames(self, sampling: Sampling, converter: Any) -> Iterator[Frame]:
        container = self._container
        stream = container.streams.video[0]
        _choose_decoding_threads(stream, self.info)
        if sampling.start > 0:
            self._seek(container, stream, sampling.start)
        index, last_time = -1, None
        try:
            for frame in container.decode(stream):
                index += 1
                frame_time = float(frame.time) if frame.time is not None else index / self.info.fps
                if sampling.start > 0 and frame_time + 0.5 / self.info.fps < sampling.start:
                    continue
                if sampling.end is not None and frame_time >= sampling.end:
                    return
                last_time = frame_time
                if sampling.keeps(frame_time):
                    number = _index_at(frame_time, self.info.fps) if sampling.start > 0 else index
                    yield converter(frame, number, frame_time)
                if self.stopping.is_set():
                    return
        except ffmpeg_errors() as error:
            raise DamagedVideoError(f"{self.name}: damaged: decoding failed after {_seconds(last_time)} "
                                    f"({_reason(error)}); the frames before were kept") from None
        self._check_complete(last_time, sampling)

    def _seek(self, container: Any, stream: Any, start: float) -> None:
        """Jump to the keyframe before `start` s; the frames up to `start` are then decoded and skipped."""
        try:
            container.seek(int(start / stream.time_base), stream=stream, backward=True)
        except ffmpeg_errors() as error:
            raise DataError(f"{self.name}: cannot seek to --start {start:g} s ({_reason(error)})") from None

    def _check_complete(self, last_time: float | None, sampling: Sampling) -> None:
        """A file whose last decoded frame is well before its recorded end was cut short."""
        duration = self.info.duration
        if duration is None or sampling.end is not None and sampling.end < duration:
            return
        reached = (last_time or 0.0) + 1 / self.info.fps
        if last_time is None or reached < duration - max(2 / self.info.fps, 0.02 * duration):
            raise DamagedVideoError(
                f"{self.name}: damaged or cut short: decoding stopped at {_seconds(reached)} of its "
                f"{duration:.2f} s; the frames before were kept")

    def _live_frames(self, sampling: Sampling, converter: Any) -> Iterator[Frame]:
        started = time.monotonic()
        index = -1
        failures = 0
        while not self.stopping.is_set():
            try:
                stream = self._container.streams.video[0]
                for frame in self._container.decode(stream):
                    index += 1
                    failures = 0
                    frame_time = time.monotonic() - started
                    if sampling.end is not None and frame_time >= sampling.end:
                        return
                    if frame_time >= sampling.start and sampling.keeps(frame_time):
                        yield converter(frame, index, frame_time)
                    if self.stopping.is_set():
                        return
                reason = "it ended"
            except ffmpeg_errors() as error:
                reason = _reason(error)
            failures += 1
            self._reconnect(failures, index + 1, reason)

    def _reconnect(self, attempt: int, frames: int, reason: str) -> None:
        """Wait (0.5 s, 1 s, 2 s, ...) and reopen; after `reconnects` tries, a StreamLostError."""
        self.close()
        while attempt <= self.reconnects and not self.stopping.is_set():
            wait = self.first_wait * 2 ** (attempt - 1)
            log.warning(f"{self.name}: lost after {frames} frame(s) ({reason}); reconnecting in {wait:g} s "
                        f"({attempt} of {self.reconnects})")
            if self.stopping.wait(wait):
                break
            try:
                self._container = self._open()
                return
            except DataError as error:
                reason = str(error).removeprefix(f"{self.name}: ")
                attempt += 1
        raise StreamLostError(f"{self.name}: the stream stopped after {frames} frame(s) and did not come back "
                              f"after {self.reconnects} reconnection(s) ({reason}); the rows so far are kept")


def _choose_decoding_threads(stream: Any, info: VideoInfo) -> None:
    """FFmpeg's frame threads for large frames, one decoding thread for small ones (see
    FRAME_THREADS_FROM_PIXELS); the decoded pixels are the same either way."""
    if info.width * info.height >= FRAME_THREADS_FROM_PIXELS:
        stream.thread_type = "AUTO"
    else:
        stream.codec_context.thread_count = 1


def _camera_device(index: int) -> tuple[str, str]:
    """FFmpeg's name and input format for camera `index` on this system."""
    system = platform.system()
    if system == "Linux":
        device = Path(f"/dev/video{index}")
        if not device.exists():
            raise DataError(f"camera {index}: {device} does not exist (no camera with that index here)")
        return str(device), "v4l2"
    if system == "Darwin":
        return str(index), "avfoundation"
    raise DataError(f"camera {index}: cameras are read on Linux (v4l2) and macOS (avfoundation); "
                    f"on {system}, give the camera's stream URL instead")


def _stream_options(url: str) -> dict[str, str]:
    """FFmpeg's options for opening the stream `url`."""
    scheme = url.lower().split("://", 1)[0]
    if scheme.startswith("rtsp"):
        return {"rtsp_transport": "tcp"}  # RTP over the RTSP connection: no UDP ports to open, no losses
    if scheme.startswith("rtmp"):
        # FLV declares no streams up front, so FFmpeg reads for its whole analysis time (5 s by default)
        # looking for more before the first frame is given: 5 s late at every (re)connection, and those
        # 5 s of frames then arrive at once, mostly to be dropped. The codec's parameters come first
        # (the AVC sequence header), so 1 s is plenty (measured on loopback: open in 1.2 s, was 5.2 s).
        return {"analyzeduration": "1000000"}  # microseconds
    return {}


def _what_failed(spec: SourceSpec) -> str:
    if spec.kind == "file":
        return "not a video cnnlab can read, or damaged"
    return "cannot open the stream (timed out or refused)"


def _reason(error: BaseException) -> str:
    text = str(getattr(error, "strerror", None) or error).strip() or type(error).__name__
    # FFmpeg's words when the timeout given to av.open interrupts a read
    return "no data within the timeout" if text == "Immediate exit requested" else text


def _seconds(value: float | None) -> str:
    return "its first frame" if value is None else f"{value:.2f} s"


def _index_at(frame_time: float, fps: float) -> int:
    return int(round(frame_time * fps))
