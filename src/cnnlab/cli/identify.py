"""`cnnlab identify`: which enrolled identity is this, or "unknown"."""

from __future__ import annotations

import click

from cnnlab.cli.embed import embedding_run_options


@click.command("identify")
@click.argument("run")
@click.argument("index", type=click.Path(exists=True, dir_okay=False))
@click.argument("probes", nargs=-1, required=True)
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="show the K most similar identities")
@click.option("--threshold", type=click.FloatRange(-1, 1),
              help="below this similarity the answer is unknown [default: the model's threshold]")
@embedding_run_options
def identify_command(run: str, index: str, probes: tuple[str, ...], top_k: int, threshold: float | None,
                     run_options: dict) -> None:
    """For each of PROBES (image files), the TOP-K identities of INDEX (from `cnnlab enroll`) most like it."""
    from cnnlab.tasks.embedding.search import Index, identify, load_embedding_run

    loaded, trained = Index.load(index), load_embedding_run(run, **run_options)
    for probe in probes:
        found = identify(trained, loaded, probe, top_k=top_k, threshold=threshold)
        ranked = "  ".join(f"{entry['identity']} {entry['score']:.4f}" for entry in found["top_k"])
        click.echo(f"{probe}: {found['answer']}  ({ranked})")
