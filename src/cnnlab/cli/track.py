"""`cnnlab track`."""

from __future__ import annotations

import sys

import click

from cnnlab.cli.options import inference_options
from cnnlab.cli.video_options import video_options


@click.command("track")
@click.argument("run")
@click.argument("source")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="a row per tracked box per frame (.csv), or per frame with its tracks (.json)")
@click.option("--tracks", type=click.Path(dir_okay=False), help="a line per track: id, class, first/last frame, "
              "frames seen, crossings (.csv)")
@click.option("--draw", type=click.Path(), help="the video with boxes and track ids (out.mp4, or a folder)")
@click.option("--count-line", metavar="X1,Y1,X2,Y2", help="count the tracks whose centre crosses this line "
              "(the frame's pixels), once per direction each")
@click.option("--kalman/--no-kalman", default=True, show_default=True,
              help="carry unseen boxes along with a constant-velocity Kalman filter (else: where last seen)")
@click.option("--high", type=click.FloatRange(0, 1), default=0.5, show_default=True,
              help="boxes scoring at least this are matched first and may start tracks")
@click.option("--low", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="weaker boxes down to this only continue tracks (ByteTrack's second matching)")
@click.option("--max-lost", type=int, default=30, show_default=True,
              help="frames a track may go unseen before it ends")
@click.option("--batch-size", type=int, help="frames the model takes at once "
              "[default: 64, 16 with --draw/--show or from a live source]")
@video_options
@inference_options
def track_command(run: str, source: str, output: str | None, tracks: str | None, draw: str | None,
                  count_line: str | None, kalman: bool, high: float, low: float, max_lost: int,
                  batch_size: int | None, video: dict, inference: dict) -> None:
    """Follow every object RUN's detector finds in SOURCE (a video file, camera index or stream URL) under
    an id that persists from frame to frame."""
    from cnnlab.cli.video_options import options_and_timeouts, report
    from cnnlab.errors import ConfigError
    from cnnlab.video.track import track_video

    if inference.pop("threshold") is not None:
        raise ConfigError("--threshold is a classifier's option; cnnlab track runs detectors")
    inference.pop("max_image_pixels")
    if video["show"]:
        from cnnlab.video.window import check_display

        check_display()
    options, timeouts = options_and_timeouts(video, batch_size=batch_size)
    result = track_video(run, source, output=output, tracks=tracks, draw=draw, show=video["show"], options=options,
                         count_line=count_line, kalman=kalman, high=high, low=low, max_lost=max_lost,
                         **inference, **timeouts)
    sys.exit(report(result))
