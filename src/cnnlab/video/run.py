"""`predict_video()`: a trained model on every frame of a video file, a camera or a stream.

    >>> result = cnnlab.video.predict_video("runs/det", "road.mp4", draw="road-boxes.mp4",
    ...                                     output="road.csv")          # doctest: +SKIP
    >>> result.summary()                                                # doctest: +SKIP
    'road.mp4: 250 frames predicted in 6.1 s (41.0 frames/s)'

The pipeline: a decoding thread (PyAV) turns each frame into the model's input (the run's own
--fit, size and channels) and puts it in a bounded `FrameQueue`; the model takes frames in batches
(whole batches from a file, whatever has arrived from a live source), the task turns its outputs
into one prediction per frame (`Task.predictions`, boxes in the frame's pixels), optionally steadied
over the last K frames (`Task.smooth`), and each frame goes to the outputs: rows (CSV/JSON), the
annotated video (`Task.draw`), a window (--show), a tracker (`cnnlab track`). Nothing here knows
which task it runs.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import signal
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.io import write_text_atomic
from cnnlab.video.annotate import picture_of
from cnnlab.video.decode import Frame, Sampling, VideoInfo
from cnnlab.video.frames import Feeder, FrameQueue, batches

log = logging.getLogger(__name__)

DEFAULT_BATCH = 16  # frames the model takes at once from a file (a live source: what has arrived, up to this)
# ... from a file when no output needs the frames' pictures: a frame is then only the model's input
# (guide-cnn: 784 bytes), and 64 of them amortise the per-batch cost of a small model. Measured on the
# 3000-frame 160×160 clip, 2 cores, CPU ms a frame (all threads): guide-cnn 0.20-0.21 at 64 against
# 0.24-0.31 at 16 (the model's thread alone 0.085 against 0.12). With pictures (an annotated video, a
# window), 16: 64 full-HD RGB frames would hold 400 MB.
DEFAULT_BATCH_WITHOUT_PICTURES = 64


@dataclass
class VideoResult:
    """What a video run produced: a row per predicted frame ({"frame", "time", **the task's prediction}),
    counts, and the files written."""

    source: str
    info: VideoInfo
    task: Any
    live: bool
    rows: list[dict[str, Any]] = field(default_factory=list)
    decoded: int = 0  # frames the sampling kept (a live source: before any was dropped)
    dropped: int = 0  # of those, dropped because the model was behind (live sources only)
    seconds: float = 0.0
    interrupted: bool = False
    error: CnnlabError | None = None
    queue_high_water: int = 0
    written: dict[str, Path] = field(default_factory=dict)  # what -> file
    notes: list[str] = field(default_factory=list)  # further lines for the summary (tracks, counts)

    @property
    def frames_per_second(self) -> float:
        return len(self.rows) / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        line = (f"{self.source}: {len(self.rows)} frame(s) predicted in {self.seconds:.1f} s "
                f"({self.frames_per_second:.1f} frames/s)")
        if self.live:
            line += f"; dropped {self.dropped} of {self.decoded} frames (the model was slower than the source)"
        if self.interrupted:
            line += "; interrupted (Ctrl-C): the outputs hold the frames up to there"
        return "\n".join([line, *self.notes, *(f"{what} written to {path}" for what, path in self.written.items())])

    def table(self, top_k: int = 1) -> str:
        return "\n".join(f"frame {row['frame']:>6}  {row['time']:8.3f} s  {self.task.table_line(row, top_k)}"
                         for row in self.rows)

    def write(self, path: str | Path) -> Path:
        """Rows as .json (a list of {"frame", "time", ...}) or .csv ("frame", "time", the task's columns)."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            write_text_atomic(path, json.dumps(self.rows, indent=1) + "\n")
        elif path.suffix.lower() == ".csv":
            write_text_atomic(path, frame_rows_csv(self.rows, self.task))
        else:
            raise CnnlabError(f"--output {path}: use a .csv or .json file name")
        return path


def frame_rows_csv(rows: Sequence[dict[str, Any]], task: Any) -> str:
    columns = task.csv_columns(rows) if rows else []
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["frame", "time", *columns])
    for row in rows:
        for line in task.csv_lines(row, columns):
            writer.writerow([row["frame"], f"{row['time']:.4f}", *line])
    return buffer.getvalue()


@dataclass
class VideoOptions:
    """How frames are sampled and batched (the options of `cnnlab predict` and `cnnlab track` for video)."""

    stride: int = 1
    fps: float | None = None
    start: float = 0.0
    end: float | None = None
    batch_size: int | None = None  # default: DEFAULT_BATCH, or DEFAULT_BATCH_WITHOUT_PICTURES (see `batch_for`)
    queue_size: int | None = None  # default: two batches (a file), one batch (a live source)
    smooth: int = 1
    top_k: int = 1
    progress: bool = True

    def sampling(self) -> Sampling:
        return Sampling(self.stride, self.fps, self.start, self.end)

    def batch_for(self, live: bool, pictures: bool) -> int:
        """The batch size: the one asked for, else larger for a file whose frames carry no picture."""
        if self.batch_size is not None:
            return self.batch_size
        return DEFAULT_BATCH if live or pictures else DEFAULT_BATCH_WITHOUT_PICTURES

    def check(self) -> None:
        if self.batch_size is not None and self.batch_size < 1:
            raise CnnlabError(f"--batch-size must be at least 1 (got {self.batch_size})")
        if self.smooth < 1:
            raise CnnlabError(f"--smooth must be at least 1 frame (got {self.smooth})")
        if self.queue_size is not None and self.queue_size < 1:
            raise CnnlabError(f"--queue-size must be at least 1 (got {self.queue_size})")


FrameSink = Callable[[Frame, dict[str, Any]], None]  # called for every predicted frame, in order


def run_frames(trained: Any, reader: Any, options: VideoOptions, sinks: Sequence[FrameSink] = (), *,
               pictures: bool = True) -> VideoResult:
    """The loop: `reader` (a VideoReader, or any object with `frames(sampling)`, `info`, `live`, `name`,
    `stopping`) → model → rows and `sinks`. `pictures`: whether the sinks need each frame's RGB picture
    (`frame.image`: to draw on); without, a VideoReader makes only the model's input. Ctrl-C and a
    source that fails (a damaged file, a lost stream) end it with the frames so far kept:
    `interrupted`, `error`."""
    options.check()
    if options.smooth > 1:
        trained.task.check_smoothing(options.smooth)
    result = VideoResult(reader.name, reader.info, trained.task, reader.live)
    batch_size = options.batch_for(reader.live, pictures)
    queue = FrameQueue(options.queue_size or (batch_size if reader.live else 2 * batch_size),
                       drop_oldest=reader.live)
    feeder = Feeder(_frames_of(reader, options.sampling(), trained, pictures), queue,
                    prepare=model_input_maker(trained), on_stop=reader.stopping.set)
    recent: deque = deque(maxlen=options.smooth)
    bar = _progress_bar(options.sampling().expected(reader.info) if not reader.live else None, options.progress)
    started = time.perf_counter()
    with _core_for_decoding(trained), _CtrlC.installed() as ctrl_c:
        try:
            feeder.start()
            for batch in batches(queue, batch_size, whole=not reader.live):
                predictions = _predict(trained, batch, recent, options.top_k)
                rows = [{"frame": frame.index, "time": round(frame.time, 4), **prediction}
                        for frame, prediction in zip(batch, predictions)]
                if sinks:
                    for frame, row in zip(batch, rows):
                        with ctrl_c.held():  # a frame is drawn, encoded and given its row, or none of these
                            for sink in sinks:
                                sink(frame, row)
                            result.rows.append(row)
                else:
                    result.rows += rows  # one step: Ctrl-C comes before or after the whole batch
                bar.update(len(batch))
                if reader.live:
                    bar.set_postfix(dropped=queue.dropped, refresh=False)
        except KeyboardInterrupt:
            result.interrupted = True
        except CnnlabError as error:
            result.error = error
        finally:
            feeder.stop()
            bar.close()
            result.seconds = time.perf_counter() - started
            result.decoded, result.dropped = feeder.produced, queue.dropped
            result.queue_high_water = queue.high_water
    return result


def _frames_of(reader: Any, sampling: Any, trained: Any, pictures: bool) -> Iterator[Frame]:
    """The reader's frames; a VideoReader makes each one's model input as it decodes it (libswscale,
    cnnlab.video.convert), and its RGB picture only when `pictures`. Other readers (a simulated
    camera) give pictures, fitted by `model_input_maker` on the decoding thread."""
    if not getattr(reader, "converts_frames", False):
        return reader.frames(sampling)
    from cnnlab.video.convert import FrameConverter, Fitting

    return reader.frames(sampling, converter=FrameConverter(Fitting.of(trained.input), pictures=pictures))


class _CtrlC:
    """Ctrl-C between frames, never inside one: a SIGINT that arrives while a frame is being drawn,
    encoded and recorded is held until that frame is complete, so the video and the rows end alike.
    Anywhere else (waiting for frames, running the model) it interrupts at once, as usual."""

    def __init__(self) -> None:
        self.holding = False
        self.pending = False

    def _on_signal(self, signum: int, frame: Any) -> None:
        if self.holding:
            self.pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def held(self) -> Iterator[None]:
        self.holding = True
        try:
            yield
        finally:
            self.holding = False
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    @classmethod
    @contextmanager
    def installed(cls) -> Iterator["_CtrlC"]:
        """Python's own Ctrl-C handler replaced while frames run (only in the main thread, and only
        where the handler is Python's: a handler of the caller's own is left alone)."""
        guard = cls()
        ours = (threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        previous = signal.signal(signal.SIGINT, guard._on_signal) if ours else None
        try:
            yield guard
        finally:
            if ours:
                signal.signal(signal.SIGINT, previous)


def _core_for_decoding(trained: Any) -> Any:
    """On a CPU, the model computes with one thread fewer while frames are decoded, leaving the decoding
    thread a core. Measured on a shared 2-core machine, 160×160 frames, CPU time a frame: guide-cnn
    0.14 ms with one thread against 3.8 ms with two (the second thread's waits, spinning against the
    decoder, cost more than it computes), cnnlab-det (96 px) 1.6 ms against ~10."""
    import contextlib

    import torch

    from cnnlab.device import intra_op_threads

    threads = torch.get_num_threads()
    if trained.device.type != "cpu" or threads < 2:
        return contextlib.nullcontext()
    return intra_op_threads(threads - 1)


def _predict(trained: Any, batch: list[Frame], recent: deque, top_k: int) -> list[dict[str, Any]]:
    """The task's prediction for each frame of `batch`, from the mean (as the task smooths) of its
    outputs over the last `recent.maxlen` frames."""
    import torch

    images = torch.from_numpy(np.stack([frame.model_input for frame in batch]))
    outputs = trained.outputs(images)
    if recent.maxlen > 1:
        steadied = []
        for output in outputs.split(1):
            recent.append(output)
            steadied.append(trained.task.smooth(list(recent)))
        outputs = torch.cat(steadied)
    return trained.task.predictions(outputs, top_k=top_k, origins=[frame.size for frame in batch])


def model_input_maker(trained: Any) -> Callable[[Frame], Frame]:
    """Fits each frame that comes without its model input (from a reader that does not convert) to
    the model's input as training fitted its images (channels, size, --fit), on the decoding thread."""
    from cnnlab.video.convert import Fitting

    fitting = Fitting.of(trained.input)

    def prepare(frame: Frame) -> Frame:
        if frame.model_input is None:
            frame.model_input = fitting.from_picture(frame.image)
        return frame

    return prepare


def _progress_bar(total: int | None, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="frame", desc="frames", file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=None if enabled else True)  # None: off when stderr is not a terminal


# --- the outputs ----------------------------------------------------------------------------------


class Annotated:
    """The annotated video: each frame drawn (`draw(frame, row)` → a PIL image) and encoded at its
    source time, at the source's frame rate over the sampling (frames a live source dropped leave
    the frame before on screen); the file is finished by `close`, also after Ctrl-C."""

    def __init__(self, path: Path, fps: float, codec: str | None, draw: Callable[[Frame, dict], Any]):
        from cnnlab.video.encode import VideoWriter

        self.writer = VideoWriter(path, fps=fps, codec=codec)
        self.draw = draw

    def __call__(self, frame: Frame, row: dict[str, Any]) -> None:
        self.writer.write(self.draw(frame, row), time=frame.time)  # frames dropped leave their time

    def close(self) -> None:
        self.writer.close()


def output_fps(info: VideoInfo, options: VideoOptions) -> float:
    """The annotated video's rate: the source's over the sampling, so it lasts as long as the source."""
    if options.fps is not None:
        return min(options.fps, info.fps)
    return info.fps / options.stride


def video_path_for(draw: str | Path, source_stem: str, source_suffix: str, tag: str = "predicted") -> Path:
    """--draw as a video file: the path itself, or SOURCE-TAG.EXT inside a folder (.mp4 for a live source)."""
    from cnnlab.video.encode import OUTPUT_SUFFIXES, check_output_path

    path = Path(draw)
    if path.is_dir() or not path.suffix:
        suffix = source_suffix.lower() if source_suffix.lower() in OUTPUT_SUFFIXES else ".mp4"
        return path / f"{source_stem}-{tag}{suffix}"
    return check_output_path(path)


def open_source(source: str | Path | Any, **timeouts: Any) -> Any:
    """A VideoReader for SOURCE (a file, a camera index, a stream URL), or `source` itself when it is
    already a reader (anything with `frames`, `info`, `live`, `name`, `stopping`: a simulated camera)."""
    from cnnlab.video.decode import VideoReader
    from cnnlab.video.sources import describe_source

    if hasattr(source, "frames"):
        return source
    spec = describe_source(str(source))
    if spec is None:
        raise CnnlabError(f"{source}: not a video file (.mp4, .avi, .mkv, .webm, ...), camera index or stream URL")
    return VideoReader(spec, **timeouts)


def predict_video(run: Any, source: Any, *, output: str | Path | None = None, draw: str | Path | None = None,
                  show: bool = False, options: VideoOptions | None = None, device: str = "auto",
                  runs_dir: str | Path = "runs", tta: str | None = None, precision: str = "auto",
                  threshold: str | None = None, conf: float | None = None, iou: float | None = None,
                  open_timeout: float = 10.0, read_timeout: float = 10.0, reconnects: int = 3) -> VideoResult:
    """RUN's model on every sampled frame of SOURCE; writes `output` (rows: .csv/.json), `draw` (the
    annotated video: a file, or a folder), shows a window with `show`. A damaged file or a lost
    stream: the outputs are written for the frames before, then the error is raised."""
    options = options or VideoOptions()
    trained = _trained(run, device, runs_dir, tta, precision, threshold, conf, iou, options)
    reader = open_source(source, open_timeout=open_timeout, read_timeout=read_timeout, reconnects=reconnects)
    window = _window(show, reader.name)
    sinks: list[Any] = []
    annotated = None
    try:
        if draw is not None:
            spec_suffix = Path(str(reader.name)).suffix
            path = video_path_for(draw, Path(str(reader.name)).stem if not reader.live else "live", spec_suffix)
            annotated = Annotated(path, output_fps(reader.info, options), reader.info.codec,
                                  lambda frame, row: picture_of(trained.task, frame, row))
            sinks.append(annotated)
        if window is not None:
            sinks.append(lambda frame, row: window.show(picture_of(trained.task, frame, row)))
        pictures = annotated is not None or window is not None  # only drawing needs the RGB frames
        result = run_frames(trained, reader, options, sinks, pictures=pictures)
    finally:
        if annotated is not None:
            annotated.close()
        if window is not None:
            window.close()
    if annotated is not None and annotated.writer.frames:
        result.written["annotated video"] = annotated.writer.path
    return finish(result, output)


def finish(result: VideoResult, output: str | Path | None) -> VideoResult:
    """Write the rows (also after a failure, for the frames before it), then raise the failure."""
    if output is not None:
        result.written["rows"] = result.write(output)
    if result.error is not None:
        error = result.error
        kept = f"{len(result.rows)} frame(s) before it were predicted"
        if result.dropped:  # a live stream always ends here: its drops are said here or nowhere
            kept += f" ({result.dropped} of {result.decoded} dropped: the model was slower than the source)"
        if result.written:
            kept += " and written (" + ", ".join(str(path) for path in result.written.values()) + ")"
        # The summary's further lines (tracks, line crossings) too: the CLI prints this message only.
        error.args = ("\n".join([f"{error.args[0]}; {kept}", *result.notes]),)
        error.result = result  # type: ignore[attr-defined]
        raise error
    return result


def _trained(run: Any, device: str, runs_dir: Any, tta: Any, precision: str, threshold: Any, conf: Any, iou: Any,
             options: VideoOptions) -> Any:
    from cnnlab.trained import TrainedModel, load

    if isinstance(run, TrainedModel):
        run.task.configure(threshold=threshold, conf=conf, iou=iou)
        trained = run
    else:
        trained = load(run, device=device, runs_dir=runs_dir, tta=tta, precision=precision, conf=conf, iou=iou)
        trained.set_threshold(threshold)
    trained.task.check_top_k(options.top_k)
    if options.smooth > 1:
        trained.task.check_smoothing(options.smooth)
    return trained


def _window(show: bool, name: str) -> Any:
    if not show:
        return None
    from cnnlab.video.window import Window

    return Window(f"cnnlab: {name}")
