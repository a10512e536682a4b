"""`cnnlab embed`: the embedding of every image, written to .npy (+ a .csv of names) or .parquet."""

from __future__ import annotations

import functools
from typing import Any, Callable

import click

from cnnlab.config import PRECISIONS


def embedding_run_options(function: Callable) -> Callable:
    """Where an embedding run's model runs (--device, --precision) and where run names are looked up."""
    options = [
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps"),
        click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
                     help="arithmetic: auto = bfloat16 where the CPU/GPU has it natively, else fp32"),
        click.option("--runs-dir", default="runs", show_default=True, help="where run names are looked up"),
    ]

    @functools.wraps(function)
    def command(**values: Any) -> Any:
        run_options = {name: values.pop(name) for name in ("device", "precision", "runs_dir")}
        return function(run_options=run_options, **values)

    for option in reversed(options):
        command = option(command)
    return command


@click.command("embed")
@click.argument("run")
@click.argument("paths", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="x.npy (file names row for row in x.csv) or x.parquet (needs pyarrow)")
@click.option("--batch-size", type=int, default=256, show_default=True)
@embedding_run_options
def embed_command(run: str, paths: tuple[str, ...], output: str, batch_size: int, run_options: dict) -> None:
    """Embed PATHS (files, folders, globs) with RUN, an embedding run: one unit vector per image."""
    from cnnlab.tasks.embedding.search import embed_files, write_embeddings

    embedded = embed_files(run, list(paths), batch_size=batch_size, **run_options)
    written = write_embeddings(embedded, output)
    click.echo(f"{len(embedded.names):,} embeddings of {embedded.vectors.shape[1]} values written to "
               f"{', '.join(map(str, written))}")
    for name, error in embedded.errors.items():
        click.echo(f"skipped {name}: {error}", err=True)
