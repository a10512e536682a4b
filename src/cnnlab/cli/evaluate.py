"""`cnnlab evaluate`."""

from __future__ import annotations

import json

import click

from cnnlab.cli.options import inference_options


@click.command("evaluate")
@click.argument("run")
@click.option("--data", help="dataset to evaluate on [default: the run's own data]")
@click.option("--split", default="test", show_default=True,
              help="which split of --data; val = the validation images the run held out (what the run's "
                   "own data is scored on when it has no test split); train = the images it trained on, when "
                   "its data has no train split of its own")
@click.option("--json", "as_json", is_flag=True, help="print the metrics as one JSON object on stdout")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--limit", type=int, help="evaluate on a seeded subset of N images")
@click.option("--data-dir", help="where named datasets are looked for (also $CNNLAB_DATA)")
@click.option("--output-dir", help="where to write the results [default: RUN/eval-<data>-<split>]")
@click.option("--workers", type=int, help="data-loading processes")
@inference_options
def evaluate_command(run: str, data: str | None, split: str, as_json: bool, batch_size: int,
                     limit: int | None, data_dir: str | None, output_dir: str | None, workers: int | None,
                     inference: dict) -> None:
    """Score RUN's best model: accuracy, top-5, per-class precision/recall/F1 and ROC AUC, the
    confusion matrix, ROC and precision-recall curves, and a predictions CSV (or MAE/RMSE/R² and a
    scatter plot for regression). The last line printed is the summary."""
    from cnnlab.evaluate.evaluate import evaluate

    result = evaluate(run, data, split=split, batch_size=batch_size, limit=limit, data_dir=data_dir,
                      output_dir=output_dir, workers=workers, quiet=as_json, **inference)
    if as_json:
        click.echo(json.dumps(result.metrics))
    else:
        for line in result.details:
            click.echo(line)
        click.echo(result.summary)
