"""Options that several commands share, defined once so that they read the same everywhere."""

from __future__ import annotations

from typing import Callable

import click

# cnnlab.data.images.DEFAULT_MAX_IMAGE_PIXELS, written out: importing that module would load NumPy,
# and `cnnlab --help` must stay instant (tests/reliability/test_hostile_images.py checks they agree).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485


def max_image_pixels_option(function: Callable) -> Callable:
    """--max-image-pixels: the pixel budget of every image file the command opens."""
    return click.option("--max-image-pixels", type=click.IntRange(min=1), default=DEFAULT_MAX_IMAGE_PIXELS,
                        show_default=True,
                        help="skip (naming them) image files of more pixels than this: decompression bombs, or "
                             "images too large to decode safely")(function)
