"""`cnnlab filter`, `cnnlab explain-conv` and `cnnlab kernels`: classic kernels on your own images."""

from __future__ import annotations

from pathlib import Path

import click

_KERNEL_HELP = ('a kernel name (see `cnnlab kernels`: sobel-x, gaussian-blur, ...) or a matrix typed row by '
                'row, e.g. "-1,0,1;-2,0,2;-1,0,1" (any odd size; fractions like 1/9 allowed)')


@click.command("kernels")
def kernels_command() -> None:
    """List the classic kernels `filter` and `explain-conv` know, one line each."""
    from cnnlab.teach.kernels import list_kernels

    kernels = list_kernels()
    width = max(len(name) for name, _ in kernels)
    for name, description in kernels:
        click.echo(f"{name.ljust(width)}  {description}")
    click.echo('or a matrix: --kernel "a,b,c;d,e,f;g,h,i"')


def _default_output(image: str, kernel: str, suffix: str) -> Path:
    from cnnlab.teach.kernels import KERNELS

    label = kernel if kernel in KERNELS else "custom"
    return Path(f"{Path(image).stem}-{label}{suffix}")


@click.command("filter")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--kernel", required=True, help=_KERNEL_HELP)
@click.option("--stride", type=int, default=1, show_default=True, help="pixels the kernel moves per step")
@click.option("--padding", default="0", show_default=True,
              help="zeros around the image: N pixels, valid (0) or same")
@click.option("--pool", type=click.Choice(["max", "avg"]), help="also pool the feature map (max or average)")
@click.option("--pool-size", type=int, default=2, show_default=True, help="pooling window (and step)")
@click.option("--gray", is_flag=True, help="convert a colour image to grayscale first (else: per channel)")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="feature map PNG [default: <image>-<kernel>.png here]; a -figure.png goes beside it")
def filter_command(image: str, kernel: str, stride: int, padding: str, pool: str | None, pool_size: int,
                   gray: bool, output: str | None) -> None:
    """Apply a classic kernel to IMAGE and save the feature map, plus a figure of input, kernel,
    feature map and pooled map with their colour scales."""
    from cnnlab.teach.filtering import apply_kernel, plot_filter_result, read_image
    from cnnlab.teach.kernels import get_kernel
    from cnnlab.pictures import save_uint8_picture

    chosen = get_kernel(kernel)
    pixels = read_image(image, gray=gray)
    result = apply_kernel(pixels, chosen, stride=stride, padding=padding, pool=pool, pool_size=pool_size)
    path = Path(output) if output else _default_output(image, kernel, ".png")
    scaling = save_uint8_picture(result.feature_map, path, pixels=chosen.makes_an_image)
    shape = "×".join(map(str, result.feature_map.shape))
    click.echo(f"feature map {shape} ({scaling}): {path}")
    if result.pooled is not None:
        pooled_path = path.with_name(f"{path.stem}-{pool}pool{pool_size}.png")
        scaling = save_uint8_picture(result.pooled, pooled_path, pixels=chosen.makes_an_image)
        click.echo(f"{pool}-pooled map {'×'.join(map(str, result.pooled.shape))} ({scaling}): {pooled_path}")
    figure = plot_filter_result(pixels, result, path.with_name(f"{path.stem}-figure.png"),
                                image_name=Path(image).name)
    click.echo(f"figure: {figure}")


@click.command("explain-conv")
@click.argument("image", type=click.Path(dir_okay=False))
@click.option("--kernel", required=True, help=_KERNEL_HELP)
@click.option("--at", "at", metavar="X,Y",
              help="the pixel under the kernel's centre: column X, row Y (0,0 = top-left) "
                   "[default: where the kernel responds most strongly]")
@click.option("--positions", type=int, default=8, show_default=True,
              help="the animation scans POSITIONS×POSITIONS kernel positions around X,Y")
@click.option("--frame-ms", type=int, default=400, show_default=True, help="milliseconds per animation frame")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="the animated GIF [default: <image>-<kernel>-scan.gif here]")
def explain_conv_command(image: str, kernel: str, at: str | None, positions: int, frame_ms: int,
                         output: str | None) -> None:
    """Print one convolution step on IMAGE — the window of pixels under the kernel, the kernel, the
    products and their sum — and write an animated GIF of the kernel scanning a crop around X,Y.
    A colour image is explained on its grayscale version."""
    from cnnlab.errors import ConfigError
    from cnnlab.teach.conv_steps import (conv_step, format_step, parse_position, strongest_response,
                                           write_scan_animation)
    from cnnlab.teach.filtering import read_image
    from cnnlab.teach.kernels import get_kernel

    if positions < 1:
        raise ConfigError(f"--positions {positions}: must be 1 or more")
    chosen = get_kernel(kernel)
    gray = read_image(image, gray=True)[0]
    if at is None:
        x, y = strongest_response(gray, chosen)
        click.echo(f"--at {x},{y}: where {kernel} responds most strongly (pass --at X,Y to choose)")
    else:
        x, y = parse_position(at)
    step = conv_step(gray, chosen, x, y)
    click.echo(format_step(step, Path(image).name, gray.shape))
    path = Path(output) if output else _default_output(image, kernel, "-scan.gif")
    frames = write_scan_animation(gray, chosen, x, y, path, positions=positions, frame_ms=frame_ms,
                                  chosen_by_user=at is not None)
    click.echo(f"\nanimation ({frames} frames): {path}")
