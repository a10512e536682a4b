"""`cnnlab predict`."""

from __future__ import annotations

import sys

import click

from cnnlab.cli.options import inference_options


@click.command("predict")
@click.argument("run")
@click.argument("paths", nargs=-1, required=True)
@click.option("--top-k", type=int, default=1, show_default=True, help="show the K most likely classes")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="also save rows to a .csv or .json file")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--workers", type=int, help="decoding processes [default: up to 4 when the files exceed 32 MB]")
@click.option("--draw", "draw_dir", type=click.Path(file_okay=False),
              help="also write each image into this folder with its prediction drawn on it (a detector's boxes, "
                   "a classifier's label as a caption), as NAME.png")
@inference_options
def predict_command(run: str, paths: tuple[str, ...], top_k: int, output: str | None, batch_size: int,
                    workers: int | None, draw_dir: str | None, inference: dict) -> None:
    """Predict PATHS (files, folders, globs) with RUN's best model; unreadable files get an error row."""
    from cnnlab.evaluate.predict import predict

    rows = predict(run, list(paths), top_k=top_k, batch_size=batch_size, workers=workers, **inference)
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
