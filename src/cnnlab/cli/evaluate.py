"""`cnnlab evaluate`."""

from __future__ import annotations

import json

import click

from cnnlab.cli.options import max_image_pixels_option


@click.command("evaluate")
@click.argument("run")
@click.option("--data", help="dataset to evaluate on [default: the run's own data]")
@click.option("--split", default="test", show_default=True,
              help="which split of --data; val = the validation images the run held out (what the run's "
                   "own data is scored on when it has no test split); train = the images it trained on, when "
                   "its data has no train split of its own")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as one JSON object on stdout")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps")
@click.option("--limit", type=int, help="evaluate on a seeded subset of N images")
@click.option("--data-dir", help="where named datasets are looked for (also $CNNLAB_DATA)")
@click.option("--output-dir", help="where to write the results [default: RUN/eval-<data>-<split>]")
@click.option("--workers", type=int, help="data-loading processes")
@click.option("--runs-dir", default="runs", show_default=True, help="where run names are looked up")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
              show_default=True, help="arithmetic: auto = bfloat16 where the CPU/GPU has it natively, else fp32")
@click.option("--tta", type=click.Choice(["none", "flip"]),
              help="test-time augmentation [default: what the model was trained with, e.g. --recipe fast: flip]")
@click.option("--threshold", metavar="CLASS=P",
              help="answer CLASS whenever its probability is at least P (0-1), else the most probable other class: "
                   "a lower P finds more of CLASS for more false alarms (see roc_curves.png from evaluate)")
@max_image_pixels_option
def evaluate_command(run: str, data: str | None, split: str, as_json: bool, batch_size: int, device: str,
                     limit: int | None, data_dir: str | None, output_dir: str | None, workers: int | None,
                     runs_dir: str, precision: str, tta: str | None, threshold: str | None,
                     max_image_pixels: int) -> None:
    """Score RUN's best model: accuracy, top-5, per-class precision/recall/F1 and ROC AUC, the
    confusion matrix, ROC and precision-recall curves, and a predictions CSV (or MAE/RMSE/R² and a
    scatter plot for regression). The last line printed is the summary."""
    from cnnlab.evaluate.evaluate import evaluate

    result = evaluate(run, data, split=split, batch_size=batch_size, device=device, limit=limit,
                      data_dir=data_dir, output_dir=output_dir, workers=workers, runs_dir=runs_dir, tta=tta,
                      precision=precision, threshold=threshold, quiet=as_json, max_image_pixels=max_image_pixels)
    if as_json:
        click.echo(json.dumps(result.metrics))
    else:
        for line in result.details:
            click.echo(line)
        click.echo(result.summary)
