"""`cnnlab predict`."""

from __future__ import annotations

import sys

import click

from cnnlab.cli.options import max_image_pixels_option


@click.command("predict")
@click.argument("run")
@click.argument("paths", nargs=-1, required=True)
@click.option("--top-k", type=int, default=1, show_default=True, help="show the K most likely classes")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="also save rows to a .csv or .json file")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--workers", type=int, help="decoding processes [default: up to 4 when the files exceed 32 MB]")
@click.option("--runs-dir", default="runs", show_default=True, help="where run names are looked up")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="arithmetic: auto = bfloat16 where the CPU/GPU has it natively, else fp32")
@click.option("--tta", type=click.Choice(["none", "flip"]),
              help="test-time augmentation [default: what the model was trained with]")
@click.option("--threshold", metavar="CLASS=P",
              help="answer CLASS whenever its probability is at least P (0-1), else the most probable other class: "
                   "a lower P finds more of CLASS for more false alarms (see roc_curves.png from evaluate)")
@max_image_pixels_option
def predict_command(run: str, paths: tuple[str, ...], top_k: int, output: str | None, device: str,
                    batch_size: int, workers: int | None, runs_dir: str, precision: str, tta: str | None,
                    threshold: str | None, max_image_pixels: int) -> None:
    """Predict PATHS (files, folders, globs) with RUN's best model; unreadable files get an error row."""
    from cnnlab.evaluate.predict import predict

    rows = predict(run, list(paths), top_k=top_k, device=device, batch_size=batch_size, workers=workers,
                   runs_dir=runs_dir, tta=tta, precision=precision, threshold=threshold,
                   max_image_pixels=max_image_pixels)
    click.echo(rows.table(top_k))
    if output:
        click.echo(f"predictions written to {rows.write(output)}", err=True)
    failed = sum("error" in row for row in rows)
    if failed:
        click.echo(f"{failed} of {len(rows)} file(s) could not be predicted", err=True)
    if failed == len(rows):
        sys.exit(1)
