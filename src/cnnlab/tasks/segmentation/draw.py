"""Pictures of masks: a mask as a palette PNG (class indices, as `predict` writes them), a colour overlay
on its image, and the report's strip of image | true mask | predicted mask | error map."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from cnnlab.tasks.segmentation.masks import VOID

VOID_COLOUR = (255, 255, 255)
MIN_SIDE = 256  # pictures are enlarged by a whole factor to at least this, pixels kept square


def default_colours(count: int) -> list[tuple[int, int, int]]:
    """Pascal VOC's colour map: class 0 black, then well-separated colours (the bits of the index
    spread over the three channels)."""
    colours = []
    for index in range(count):
        red = green = blue = 0
        value = index
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours.append((red, green, blue))
    return colours


def mask_picture(mask: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> Any:
    """A palette PNG image (mode P) whose pixel values are the class indices, 255 void (white)."""
    from PIL import Image

    picture = Image.fromarray(np.asarray(mask, np.uint8), mode="L").convert("P")
    palette = [0] * 768
    for index, colour in enumerate(list(colours)[:255]):
        palette[3 * index:3 * index + 3] = colour
    palette[3 * VOID:3 * VOID + 3] = VOID_COLOUR
    picture.putpalette(palette)
    return picture


def coloured(mask: np.ndarray, colours: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """(H, W, 3) uint8: each class in its colour, void white."""
    table = np.zeros((256, 3), np.uint8)
    table[:len(colours)] = np.asarray(colours, np.uint8)[:256]
    table[VOID] = VOID_COLOUR
    return table[np.asarray(mask, np.uint8)]


def as_rgb(pixels: np.ndarray) -> np.ndarray:
    """uint8 (C, H, W) -> (H, W, 3)."""
    pixels = np.asarray(pixels)
    return np.repeat(pixels[0][..., None], 3, -1) if pixels.shape[0] == 1 else pixels[:3].transpose(1, 2, 0)


def overlay(pixels: np.ndarray, mask: np.ndarray, colours: Sequence[tuple[int, int, int]],
            opacity: float = 0.45) -> np.ndarray:
    """(H, W, 3): the image with each non-background class painted over it in its colour."""
    image = as_rgb(pixels).astype(np.float32)
    painted = coloured(mask, colours).astype(np.float32)
    over = ((mask != 0) & (mask != VOID))[..., None]
    return np.where(over, (1 - opacity) * image + opacity * painted, image).round().astype(np.uint8)


def error_map(predicted: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3): right pixels grey, wrong ones red, void white."""
    picture = np.full((*mask.shape, 3), 200, np.uint8)
    picture[(predicted != mask) & (mask != VOID)] = (220, 20, 60)
    picture[mask == VOID] = VOID_COLOUR
    return picture


def enlarged(picture: np.ndarray, min_side: int = MIN_SIDE) -> Any:
    from PIL import Image

    image = Image.fromarray(picture)
    factor = max(1, math.ceil(min_side / max(1, min(image.size))))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def strip(pixels: np.ndarray, truth: np.ndarray, predicted: np.ndarray,
          colours: Sequence[tuple[int, int, int]], *, panel_side: int = 160) -> Any:
    """image | true mask | predicted mask | error map, side by side with a white gap."""
    from PIL import Image

    panels = [as_rgb(pixels), coloured(truth, colours), coloured(predicted, colours), error_map(predicted, truth)]
    pictures = [enlarged(panel, panel_side) for panel in panels]
    gap = 6
    width = sum(p.width for p in pictures) + gap * (len(pictures) - 1)
    canvas = Image.new("RGB", (width, pictures[0].height), (255, 255, 255))
    left = 0
    for picture in pictures:
        canvas.paste(picture, (left, 0))
        left += picture.width + gap
    return canvas


def legend(class_names: Sequence[str], colours: Sequence[tuple[int, int, int]]) -> str:
    """HTML: a swatch and a name per class."""
    from html import escape

    items = [f'<span style="display:inline-block;margin-right:12px"><span style="display:inline-block;width:12px;'
             f'height:12px;border:1px solid #888;background:rgb{tuple(colour)}"></span> {escape(name)}</span>'
             for name, colour in zip(class_names, colours)]
    return "<p>" + "".join(items) + "</p>"
