"""`cnnlab verify`: do two images show one identity? Or: score a pairs file."""

from __future__ import annotations

import json

import click

from cnnlab.cli.embed import embedding_run_options


@click.command("verify")
@click.argument("run")
@click.argument("images", nargs=-1)
@click.option("--threshold", type=click.FloatRange(-1, 1),
              help="cosine similarity at or above which two images are one identity [default: the model's, "
                   "chosen at --verify-far on its validation pairs]")
@click.option("--pairs", type=click.Path(exists=True, dir_okay=False),
              help="instead of two images: score every pair of a pairs file (LFW's pairs.txt, or a CSV a,b,same)")
@click.option("--images-root", type=click.Path(file_okay=False),
              help="where the pairs file's images are [default: its own folder]")
@click.option("--detect", is_flag=True, help="find the face in each image first (OpenCV's Haar cascade, or "
                                             "--detector), crop it and embed the crop")
@click.option("--detector", help="a cnnlab detection run to find the object with, instead of the face cascade")
@embedding_run_options
def verify_command(run: str, images: tuple[str, ...], threshold: float | None, pairs: str | None,
                   images_root: str | None, detect: bool, detector: str | None, run_options: dict) -> None:
    """Print the similarity of two IMAGES and whether RUN says they show one identity."""
    if pairs is not None:
        from cnnlab.tasks.embedding.search import verify_pairs

        if images:
            raise click.UsageError("pass two IMAGES or --pairs FILE, not both")
        metrics = verify_pairs(run, pairs, root=images_root, threshold=threshold, **run_options)
        click.echo(json.dumps(metrics, indent=2))
        return
    if len(images) != 2:
        raise click.UsageError(f"verify compares two images (got {len(images)}); or pass --pairs FILE")
    if detect or detector:
        from cnnlab.tasks.embedding.faces import verify_faces

        verdict = verify_faces(run, *images, threshold=threshold, detector=detector, **run_options)
    else:
        from cnnlab.tasks.embedding.search import verify

        verdict = verify(run, *images, threshold=threshold, **run_options)
    click.echo(verdict.describe())
