"""The frames of `explain-conv`'s animation, drawn with Pillow: one per kernel position.

    [ image crop, the window outlined ]  [ kernel / products / sum ]  [ feature map filling in ]

Every cell shows its number, so each frame can be checked by hand; colours follow the shared
rule (blue–white–red centred at 0 for values that can be negative).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cnnlab.teach.kernels import Kernel
from cnnlab.pictures import SIGNED_CMAP, format_number

if TYPE_CHECKING:
    from PIL import Image, ImageDraw

    from cnnlab.teach.conv_steps import ScanCrop

_MARGIN = 24
_TITLE_HEIGHT = 56
_LABEL_HEIGHT = 22
_WINDOW_COLOUR = (220, 20, 60)
_YOUR_POSITION_COLOUR = (255, 165, 0)
_EMPTY_CELL = (238, 238, 238)
_POSITIVE_LIGHT = "YlOrBr"  # light enough at its low end for black numbers


def _font(size: int):
    """DejaVu Sans, which matplotlib ships: Pillow's built-in font has no ×, – or ← glyphs."""
    from pathlib import Path

    import matplotlib
    from PIL import ImageFont

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size) if path.is_file() else ImageFont.load_default(size=size)


class _Colours:
    """value → RGB on a fixed scale, so a number has the same colour in every frame."""

    def __init__(self, cmap: str, low: float, high: float):
        import matplotlib

        self.cmap, self.low, self.span = matplotlib.colormaps[cmap], low, (high - low) or 1.0

    def __call__(self, value: float) -> tuple[int, int, int]:
        red, green, blue, _ = self.cmap(float(np.clip((value - self.low) / self.span, 0, 1)))
        return int(red * 255), int(green * 255), int(blue * 255)


def _signed(values: np.ndarray) -> _Colours:
    top = float(np.abs(values).max()) or 1.0
    return _Colours(SIGNED_CMAP, -top, top)


def _number(value: float) -> str:
    return format_number(round(float(value), 2))


def _ink(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return (0, 0, 0) if luminance > 120 else (255, 255, 255)


def _grid(draw: "ImageDraw.ImageDraw", origin: tuple[int, int], values: np.ndarray, cell: int, colours,
          font, filled: np.ndarray | None = None) -> None:
    """Cells with their numbers; cells not `filled` yet are drawn empty."""
    left, top = origin
    for (row, column), value in np.ndenumerate(values):
        box = (left + column * cell, top + row * cell, left + (column + 1) * cell, top + (row + 1) * cell)
        if filled is not None and not filled[row, column]:
            draw.rectangle(box, fill=_EMPTY_CELL, outline=(200, 200, 200))
            continue
        fill = colours(value)
        draw.rectangle(box, fill=fill, outline=(150, 150, 150))
        draw.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), _number(value), fill=_ink(fill), font=font,
                  anchor="mm")


def _outline(draw: "ImageDraw.ImageDraw", origin: tuple[int, int], cell: int, row: int, column: int,
             size: int, colour: tuple[int, int, int], width: int = 3) -> None:
    left, top = origin[0] + column * cell, origin[1] + row * cell
    draw.rectangle((left, top, left + size * cell, top + size * cell), outline=colour, width=width)


def _colour_bar(draw: "ImageDraw.ImageDraw", origin: tuple[int, int], width: int, colours: _Colours,
                font) -> None:
    left, top = origin
    for step in range(width):
        value = colours.low + colours.span * step / max(width - 1, 1)
        draw.line((left + step, top, left + step, top + 12), fill=colours(value))
    draw.rectangle((left, top, left + width, top + 12), outline=(120, 120, 120))
    high = colours.low + colours.span
    for value, x, anchor in ((colours.low, left, "la"), (high, left + width, "ra")):
        draw.text((x, top + 16), format_number(round(value, 1)), fill=(0, 0, 0), font=font, anchor=anchor)
    if colours.low < 0 < high:
        draw.text((left + width / 2, top + 16), "0", fill=(0, 0, 0), font=font, anchor="ma")


AT_POSITION = "your --at position"
STRONGEST = "the strongest response"


def draw_frames(crop: "ScanCrop", kernel: Kernel, *, highlight: tuple[int, int],
                highlight_label: str = AT_POSITION) -> list["Image.Image"]:
    """One RGB frame per kernel position, in reading order; `highlight` = the position (x, y) in
    feature-map cells of the crop that the animation is about, outlined in orange and called
    `highlight_label` (`AT_POSITION` when the user chose it with --at, `STRONGEST` when cnnlab did)."""
    from PIL import Image, ImageDraw

    size = kernel.size
    rows, columns = crop.feature_map.shape
    side = max(crop.pixels.shape)
    cell = max(24, min(40, 440 // side))
    small = max(24, min(34, 130 // size))
    font, small_font, title_font = _font(11 if cell < 34 else 12), _font(10), _font(15)

    all_products = np.stack([crop.pixels[r:r + size, c:c + size] * kernel.weights
                             for r in range(rows) for c in range(columns)])
    gray = _Colours("gray", 0.0, 255.0)
    if kernel.has_negative_weights:
        kernel_colours, product_colours = _signed(kernel.weights), _signed(all_products)
        # sharpen, emboss: weights adding up to 1 give a picture again, shown as pixels (clipped)
        map_colours = _Colours("gray", 0.0, 255.0) if kernel.makes_an_image else _signed(crop.feature_map)
    else:  # a blur: everything is positive, and the feature map is an image again
        # the top of the scale lies beyond the largest value, so the darkest cells stay light
        kernel_colours = _Colours(_POSITIVE_LIGHT, 0.0, 1.6 * float(kernel.weights.max()) or 1.0)
        product_colours = _Colours(_POSITIVE_LIGHT, 0.0, 1.6 * float(all_products.max()) or 1.0)
        map_colours = _Colours("gray", 0.0, max(255.0, float(crop.feature_map.max())))

    image_origin = (_MARGIN, _TITLE_HEIGHT + _LABEL_HEIGHT)
    middle_left = image_origin[0] + crop.pixels.shape[1] * cell + 2 * _MARGIN
    middle_width = max(size * small, 150)
    map_origin = (middle_left + middle_width + 2 * _MARGIN, image_origin[1])
    width = map_origin[0] + max(columns * cell, 200) + _MARGIN  # room for the feature map's title
    height = image_origin[1] + max(crop.pixels.shape[0] * cell, 2 * size * small + 3 * _LABEL_HEIGHT + 60,
                                   rows * cell + 50) + _MARGIN + _LABEL_HEIGHT

    frames = []
    filled = np.zeros((rows, columns), dtype=bool)
    for row in range(rows):
        for column in range(columns):
            filled[row, column] = True
            frame = Image.new("RGB", (width, height), "white")
            draw = ImageDraw.Draw(frame)
            value = crop.feature_map[row, column]
            here = (row, column) == (highlight[1], highlight[0])
            title = (f"kernel {kernel.name} at image x={crop.left + column + size // 2}, "
                     f"y={crop.top + row + size // 2}: sum of products = {_number(value)}")
            draw.text((_MARGIN, 14), title + (f"   ← {highlight_label}" if here else ""), fill=(0, 0, 0),
                      font=title_font)
            position = f"position {row * columns + column + 1} of {rows * columns}"
            draw.text((width - _MARGIN, 36), position, fill=(90, 90, 90), font=small_font, anchor="ra")

            draw.text((image_origin[0], image_origin[1] - 18), "image pixels (0–255)", fill=(0, 0, 0),
                      font=font)
            draw.text((_MARGIN, height - _MARGIN - 6), "red: the kernel's window now", fill=_WINDOW_COLOUR,
                      font=font)
            draw.text((_MARGIN + 220, height - _MARGIN - 6), f"orange: {highlight_label}",
                      fill=_YOUR_POSITION_COLOUR, font=font)
            _grid(draw, image_origin, crop.pixels, cell, gray, font)
            _outline(draw, image_origin, cell, highlight[1], highlight[0], size, _YOUR_POSITION_COLOUR, 2)
            _outline(draw, image_origin, cell, row, column, size, _WINDOW_COLOUR)

            top = image_origin[1]
            draw.text((middle_left, top - 18), f"kernel {kernel.name}", fill=(0, 0, 0), font=font)
            _grid(draw, (middle_left, top), kernel.weights, small, kernel_colours, small_font)
            top += size * small + _LABEL_HEIGHT + 8
            draw.text((middle_left, top - 18), "pixel × weight", fill=(0, 0, 0), font=font)
            products = crop.pixels[row:row + size, column:column + size] * kernel.weights
            _grid(draw, (middle_left, top), products, small, product_colours, small_font)
            top += size * small + 10
            draw.text((middle_left, top), f"sum = {_number(value)}", fill=_WINDOW_COLOUR, font=title_font)

            draw.text((map_origin[0], map_origin[1] - 18), f"feature map ({rows}×{columns} of this crop)",
                      fill=(0, 0, 0), font=font)
            _grid(draw, map_origin, crop.feature_map, cell, map_colours, font, filled=filled)
            _outline(draw, map_origin, cell, highlight[1], highlight[0], 1, _YOUR_POSITION_COLOUR, 2)
            _outline(draw, map_origin, cell, row, column, 1, _WINDOW_COLOUR)
            _colour_bar(draw, (map_origin[0], map_origin[1] + rows * cell + 10), columns * cell, map_colours,
                        small_font)
            frames.append(frame)
    return frames
