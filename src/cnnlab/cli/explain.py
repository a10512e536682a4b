"""`cnnlab explain` and `cnnlab report`: what a trained model sees, and one HTML page per run."""

from __future__ import annotations

import click

from cnnlab.cli.options import inference_options, max_image_pixels_option


@click.command("explain")
@click.argument("run")
@click.argument("images", nargs=-1, required=True)
@click.option("--class", "target", help="explain this class (name or index) [default: the predicted one]; for a "
                                        "detector, a box by its number (1 = the highest-scoring) or a class")
@click.option("--layer", help="Grad-CAM's layer, a module name such as layer3 or features.conv2 "
                              "[default: the last convolution stage with maps of at least 7×7]")
@click.option("--max-maps", type=int, default=32, show_default=True, help="feature maps shown per stage")
@click.option("-o", "--output-dir", help="where to write [default: RUN/explain/<image-stem>/]")
@inference_options
def explain_command(run: str, images: tuple[str, ...], target: str | None, layer: str | None, max_maps: int,
                    output_dir: str | None, inference: dict) -> None:
    """For each of IMAGES, write RUN's first-layer filters, the feature maps of every stage and a
    Grad-CAM heatmap for the predicted class (or --class)."""
    from cnnlab.explain.explain import explain

    for explanation in explain(run, list(images), target=target, layer=layer, max_maps=max_maps,
                               output_dir=output_dir, **inference):
        click.echo(f"{explanation.name}: predicted {explanation.prediction}; "
                   f"{explanation.cam.describe(explanation.target_label)}")
        click.echo(f"  {explanation.folder}/: filters.png, gradcam.png, feature-maps/ "
                   f"({len(explanation.feature_map_files)} stages)")


@click.command("report")
@click.argument("run")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="the HTML file [default: RUN/report.html]")
@click.option("--data", help="evaluate on this data when the run folder has no evaluation yet "
                             "[default: the run's own test split]")
@click.option("--split", help="which split of --data (also picks among existing evaluations); val = the "
              "validation images the run held out [default: test, or val when the run's data has none]")
@click.option("--limit", type=int, help="evaluate on a seeded subset of N images (when evaluating)")
@click.option("--mistakes", type=int, default=8, show_default=True, help="how many worst mistakes to show")
@click.option("--samples", type=int, default=6, show_default=True, help="sample images per class")
@click.option("--max-maps", type=int, default=32, show_default=True, help="feature maps shown per stage")
@click.option("--layer", help="Grad-CAM's layer [default: the last convolution stage with maps of at "
                              "least 7×7]")
@click.option("--data-dir", help="where named datasets are looked for (also $CNNLAB_DATA)")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps")
@click.option("--runs-dir", default="runs", show_default=True, help="where run names are looked up")
@max_image_pixels_option
def report_command(run: str, output: str | None, data: str | None, split: str | None, limit: int | None,
                   mistakes: int, samples: int, max_maps: int, layer: str | None, data_dir: str | None,
                   device: str, runs_dir: str, max_image_pixels: int) -> None:
    """Write one self-contained HTML page about RUN: config, data, training curves, evaluation,
    worst mistakes with Grad-CAM, first-layer filters and one image's feature maps."""
    from cnnlab.report.report import report

    path = report(run, output=output, data=data, split=split, limit=limit, mistakes=mistakes, samples=samples,
                  max_maps=max_maps, layer=layer, device=device, runs_dir=runs_dir, data_dir=data_dir,
                  max_image_pixels=max_image_pixels)
    click.echo(str(path))
