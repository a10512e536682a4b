"""`cnnlab augment`: see what an augmentation preset does to your images before training with it."""

from __future__ import annotations

from pathlib import Path

import click

from cnnlab.cli.options import max_image_pixels_option


@click.command("augment")
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--augment", "preset", required=True,
              help="the preset to show: flip, light or standard (as `cnnlab train --augment`)")
@click.option("--versions", type=int, default=7, show_default=True, help="versions drawn per image")
@click.option("--image-size", help="N or H,W [default: the images' own size if they share one, else 224]")
@click.option("--fit", type=click.Choice(["squash", "crop", "pad"]), default="squash", show_default=True,
              help="how images of another shape are fitted to --image-size (as `cnnlab train --fit`)")
@click.option("--channels", type=click.Choice(["1", "3"]), help="1 = grayscale, 3 = colour [default: as the images]")
@click.option("--seed", type=int, default=0, show_default=True, help="which random versions")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="PNG to write [default: augment-<preset>.png here]")
@max_image_pixels_option
def augment_command(images: tuple[str, ...], preset: str, versions: int, image_size: str | None,
                    fit: str, channels: str | None, seed: int, output: str | None, max_image_pixels: int) -> None:
    """Show IMAGES each followed by versions the --augment preset draws, as training draws a new
    one of every image every epoch.

    \b
    Examples:
      cnnlab augment photos/cats/1.jpg photos/dogs/7.jpg --augment standard
      cnnlab augment scan.png --augment light --versions 11 -o light.png
    """
    from cnnlab.config import parse_image_size
    from cnnlab.teach.augmentation import preview_augmentation

    path = preview_augmentation(images, preset, Path(output or f"augment-{preset}.png"), versions=versions,
                                image_size=parse_image_size(image_size), seed=seed, fit=fit,
                                channels=int(channels) if channels else None, max_image_pixels=max_image_pixels)
    click.echo(f"{len(images)} image(s), {versions} version(s) each: {path}")
