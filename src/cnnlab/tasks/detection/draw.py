"""Boxes drawn on an image: predictions solid with "class score" captions, true boxes dashed.

Small images (a 96-px canvas) are enlarged first, by a whole factor with nearest-neighbour so
pixels stay square, to at least `MIN_SIDE` on their short side: lines and captions are then drawn
at the enlarged size and stay sharp and readable.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

MIN_SIDE = 256
# Tableau 10: distinct, and readable with a white caption on each
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
TRUE_BOX_COLOURS = ((255, 255, 255), (0, 0, 0))  # dashes alternate: visible on dark and light images


def _as_array(values) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _to_picture(pixels) -> "Image.Image":
    from PIL import Image

    array = _as_array(pixels)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(1, 2, 0)
    array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def _dashed_rectangle(draw: "ImageDraw.ImageDraw", box: Sequence[float], width: int, dash: int) -> None:
    x1, y1, x2, y2 = box
    for start, end in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
        length = math.dist(start, end)
        pieces = max(1, int(length // dash))
        for piece in range(pieces):
            a, b = piece / pieces, (piece + 1) / pieces
            segment = [(start[0] + (end[0] - start[0]) * t, start[1] + (end[1] - start[1]) * t) for t in (a, b)]
            draw.line(segment, fill=TRUE_BOX_COLOURS[piece % 2], width=width)


def _caption(draw: "ImageDraw.ImageDraw", box: Sequence[float], text: str, colour, font, size: tuple[int, int]
             ) -> None:
    """`text` on a band of the box's colour, above the box, or inside it at the image's top edge."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    text_width, text_height = right - left, bottom - top
    pad = max(1, text_height // 5)
    x = min(max(box[0], 0), max(size[0] - text_width - 2 * pad, 0))
    y = box[1] - text_height - 2 * pad
    if y < 0:
        y = box[1]
    draw.rectangle((x, y, x + text_width + 2 * pad, y + text_height + 2 * pad), fill=colour)
    draw.text((x + pad - left, y + pad - top), text, fill=(255, 255, 255), font=font)


def draw_boxes(pixels, boxes, labels, class_names: Sequence[str], *, scores=None,
               colours: Sequence[tuple[int, int, int]] | None = None, true_boxes=None) -> "Image.Image":
    """The image (C, H, W) uint8 with predicted `boxes` (k, 4) in its pixels (x1, y1, x2, y2)
    outlined in their class's colour and captioned "class score" (or "class" without `scores`),
    and `true_boxes` (t, 4), if given, dashed in white and black. Tensors or arrays.

    >>> picture = draw_boxes(np.zeros((1, 32, 32), np.uint8), [[4, 4, 20, 20]], [1], ["cat", "dog"],
    ...                      scores=[0.87], true_boxes=[[5, 5, 21, 21]])
    >>> picture.size  # enlarged ×8 to reach 256 px
    (256, 256)
    """
    from PIL import Image, ImageDraw, ImageFont

    picture = _to_picture(pixels)
    width, height = picture.size
    factor = max(1, math.ceil(MIN_SIDE / min(width, height)))
    if factor > 1:
        picture = picture.resize((width * factor, height * factor), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(picture)
    short_side = min(picture.size)
    line = max(2, round(short_side / 160))
    font = ImageFont.load_default(size=max(11, round(short_side / 22)))
    palette = list(colours or PALETTE)

    if true_boxes is not None:
        for box in _as_array(true_boxes).reshape(-1, 4):
            _dashed_rectangle(draw, [value * factor for value in box], max(1, line - 1), dash=3 * line)
    boxes = _as_array(boxes).reshape(-1, 4)
    labels = _as_array(labels).reshape(-1).astype(int)
    scores = None if scores is None else _as_array(scores).reshape(-1)
    for index, (box, label) in enumerate(zip(boxes, labels)):
        colour = tuple(palette[label % len(palette)])
        scaled = [value * factor for value in box]
        draw.rectangle(scaled, outline=colour, width=line)
        name = class_names[label] if 0 <= label < len(class_names) else str(label)
        text = name if scores is None else f"{name} {scores[index]:.2f}"
        _caption(draw, scaled, text, colour, font, picture.size)
    return picture
