"""`cnnlab predict`."""

from __future__ import annotations

import sys

import click

from cnnlab.cli.options import inference_options
from cnnlab.cli.video_options import video_options


@click.command("predict")
@click.argument("run")
@click.argument("paths", nargs=-1, required=True)
@click.option("--top-k", type=int, default=1, show_default=True, help="show the K most likely classes")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="also save rows to a .csv or .json file (a video: a row per frame, with its index and time)")
@click.option("--batch-size", type=int, help="images (or video frames) the model takes at once "
              "[default: 256; frames: 64, 16 with --draw/--show or from a live source]")
@click.option("--workers", type=int, help="decoding processes [default: up to 4 when the files exceed 32 MB]")
@click.option("--draw", "draw_dir", type=click.Path(),
              help="also write each image into this folder with its prediction drawn on it (a detector's boxes, "
                   "a classifier's label as a caption), as NAME.png; a video: the annotated video (out.mp4, or a "
                   "folder for SOURCE-predicted.EXT)")
@click.option("--smooth", type=int, default=1, show_default=True,
              help="video: average the answers of the last K frames (a classifier: its probabilities), so a "
                   "label does not flicker")
@video_options
@inference_options
def predict_command(run: str, paths: tuple[str, ...], top_k: int, output: str | None, batch_size: int | None,
                    workers: int | None, draw_dir: str | None, smooth: int, video: dict, inference: dict) -> None:
    """Predict PATHS (files, folders, globs of images; or one video file, camera index or stream URL) with
    RUN's best model; unreadable files get an error row."""
    from cnnlab.video.sources import is_video_source

    if any(is_video_source(path) for path in paths):
        sys.exit(_predict_video(run, paths, top_k, output, batch_size, draw_dir, smooth, video, inference))
    from cnnlab.evaluate.predict import predict

    rows = predict(run, list(paths), top_k=top_k, batch_size=batch_size or 256, workers=workers, **inference)
    click.echo(rows.table(top_k))
    if output:
        click.echo(f"predictions written to {rows.write(output)}", err=True)
    if draw_dir:
        drawn = rows.draw(draw_dir, max_image_pixels=inference["max_image_pixels"])
        click.echo(f"{len(drawn)} drawing(s) written to {draw_dir}", err=True)
    failed = sum("error" in row for row in rows)
    if failed:
        click.echo(f"{failed} of {len(rows)} file(s) could not be predicted", err=True)
    if failed == len(rows):
        sys.exit(1)


def _predict_video(run: str, paths: tuple[str, ...], top_k: int, output: str | None, batch_size: int | None,
                   draw: str | None, smooth: int, video: dict, inference: dict) -> int:
    from cnnlab.cli.video_options import options_and_timeouts, report
    from cnnlab.errors import CnnlabError
    from cnnlab.video.run import predict_video

    if len(paths) != 1:
        raise CnnlabError(f"a video source ({', '.join(paths)}) is predicted on its own: give one SOURCE")
    if video["show"]:
        from cnnlab.video.window import check_display

        check_display()
    options, timeouts = options_and_timeouts(video, batch_size=batch_size, smooth=smooth, top_k=top_k)
    inference.pop("max_image_pixels")
    result = predict_video(run, paths[0], output=output, draw=draw, show=video["show"], options=options,
                           **inference, **timeouts)
    if output is None:
        click.echo(result.table(top_k))
    return report(result)
