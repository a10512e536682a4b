"""`cnnlab enroll`: an index of a gallery's identities (vectors and names, no images)."""

from __future__ import annotations

import click

from cnnlab.cli.embed import embedding_run_options


@click.command("enroll")
@click.argument("run")
@click.argument("gallery", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="the index, a .npz file")
@click.option("--batch-size", type=int, default=256, show_default=True)
@embedding_run_options
def enroll_command(run: str, gallery: str, output: str, batch_size: int, run_options: dict) -> None:
    """Embed every image of GALLERY (a sub-folder of images per identity) with RUN into an index file."""
    from cnnlab.tasks.embedding.search import enroll

    index = enroll(run, gallery, batch_size=batch_size, **run_options)
    path = index.save(output)
    click.echo(f"{len(index.vectors):,} vectors of {len(index.identities)} identities written to {path} "
               "(vectors and names only: no image is stored)")
