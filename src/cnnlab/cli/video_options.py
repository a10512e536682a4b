"""The options `cnnlab predict` and `cnnlab track` share for video sources (sampling, live sources)."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

VIDEO_OPTIONS = ("stride", "fps", "start", "end", "show", "queue_size", "timeout", "reconnects")


def video_options(function: Callable) -> Callable:
    """Adds the video options; the command receives them as one dict, `video`."""
    options = [
        click.option("--stride", type=int, default=1, show_default=True, help="video: predict every N-th frame"),
        click.option("--fps", type=float, help="video: predict about F frames a second (instead of --stride)"),
        click.option("--start", type=float, default=0.0, show_default=True, help="video: from this second"),
        click.option("--end", type=float, help="video: up to this second [default: the end]"),
        click.option("--show", is_flag=True, help="video: show the annotated frames in a window (needs a display)"),
        click.option("--queue-size", type=int,
                     help="video: frames waiting for the model at most; a live source drops the oldest beyond it "
                          "[default: one batch live, two from a file]"),
        click.option("--timeout", type=float, default=10.0, show_default=True,
                     help="streams and cameras: seconds to wait for the source to open or send a frame"),
        click.option("--reconnects", type=int, default=3, show_default=True,
                     help="streams and cameras: times a lost source is reopened (waiting 0.5 s, 1 s, 2 s, ...)"),
    ]

    @functools.wraps(function)
    def command(**values: Any) -> Any:
        video = {name: values.pop(name) for name in VIDEO_OPTIONS}
        return function(video=video, **values)

    for option in reversed(options):
        command = option(command)
    return command


def options_and_timeouts(video: dict, *, batch_size: int | None, smooth: int = 1, top_k: int = 1) -> tuple[Any, dict]:
    """(VideoOptions, the reader's timeouts) from the flags."""
    from cnnlab.video.run import VideoOptions

    options = VideoOptions(stride=video["stride"], fps=video["fps"], start=video["start"], end=video["end"],
                           batch_size=batch_size, queue_size=video["queue_size"], smooth=smooth,
                           top_k=top_k)
    timeouts = {"open_timeout": video["timeout"], "read_timeout": video["timeout"], "reconnects": video["reconnects"]}
    return options, timeouts


def report(result: Any) -> int:
    """Print a video run's summary (stderr); the exit status: 130 after Ctrl-C, else 0."""
    click.echo(result.summary(), err=True)
    return 130 if result.interrupted else 0
