"""Picture helpers shared by filter, explain and report: colour scales, image grids, uint8 pictures.

One rule for colour everywhere: values that can be negative (kernels, learned weights, edge
responses, gradients) use a blue–white–red scale centred at 0, so white means 0; values that cannot
(pixels, maps after ReLU or pooling of them, heatmaps) use a sequential scale from 0 up. Every
coloured picture carries a colour bar with its numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from cnnlab.plotting import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIGNED_CMAP = "RdBu_r"
POSITIVE_CMAP = "viridis"


@dataclass(frozen=True)
class ColourScale:
    cmap: str
    vmin: float
    vmax: float
    label: str
    clipped: bool = False  # rare extreme values lie beyond the scale (the colour bar gets arrows)

    @classmethod
    def for_values(cls, values: np.ndarray, label: str, *, signed: bool | None = None, robust: bool = False,
                   cmap: str | None = None) -> "ColourScale":
        """Centred at 0 when the values (or `signed`) say they can be negative, else 0 up to the max.

        `robust` ends the scale at the 99.5th percentile of the magnitudes, so that a handful of
        extreme values (the strongest edge in a photo) do not wash everything else out."""
        values = np.asarray(values, dtype=np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        if signed is None:
            signed = low < 0
        top = max(abs(low), abs(high))
        if robust and values.size:
            top = min(top, float(np.percentile(np.abs(values), 99.5))) or top
        clipped = top < max(abs(low), abs(high))
        if signed:
            return cls(cmap or SIGNED_CMAP, -(top or 1.0), top or 1.0, label, clipped)
        bottom = min(low, 0.0)
        return cls(cmap or POSITIVE_CMAP, bottom, top if top > bottom else bottom + 1.0, label, clipped)

    def kwargs(self) -> dict:
        return {"cmap": self.cmap, "vmin": self.vmin, "vmax": self.vmax}

    def colorbar_kwargs(self) -> dict:
        both = self.cmap == SIGNED_CMAP
        return {"label": self.label, "extend": ("both" if both else "max") if self.clipped else "neither"}


def display_pixels(pixels: np.ndarray) -> tuple[np.ndarray, dict]:
    """uint8 (C, H, W) → what imshow needs: (H, W) with a grey scale, or (H, W, 3)."""
    if pixels.shape[0] == 1:
        return pixels[0], {"cmap": "gray", "vmin": 0, "vmax": 255}
    return np.ascontiguousarray(pixels.transpose(1, 2, 0)), {}


def show_image(axes: "Axes", pixels: np.ndarray, title: str) -> None:
    image, style = display_pixels(pixels)
    axes.imshow(image, interpolation="nearest", **style)
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])


def format_number(value: float) -> str:
    """Short and exact where it can be: 5 → '5', 0.1111 → '0.111', -312.5 → '-312.5'."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.4g}"


def show_matrix(axes: "Axes", matrix: np.ndarray, title: str, *, scale: ColourScale | None = None) -> None:
    """A small matrix as coloured cells with its numbers written in them (kernels, windows)."""
    scale = scale or ColourScale.for_values(matrix, "", signed=True)
    axes.imshow(matrix, interpolation="nearest", **scale.kwargs())
    size = max(matrix.shape)
    fontsize = 11 if size <= 3 else 9 if size <= 5 else 6
    middle = (scale.vmin + scale.vmax) / 2
    span = (scale.vmax - scale.vmin) or 1.0
    for (row, column), value in np.ndenumerate(matrix):
        strong = abs(value - middle) > 0.3 * span if scale.cmap == SIGNED_CMAP else value < middle
        axes.text(column, row, format_number(value), ha="center", va="center", fontsize=fontsize,
                  color="white" if strong else "black")
    axes.set_title(title, fontsize=9)
    axes.set_xticks([])
    axes.set_yticks([])


def grid_shape(count: int, max_columns: int = 8) -> tuple[int, int]:
    columns = min(count, max_columns, max(1, math.ceil(math.sqrt(count))))
    if count > 16:
        columns = max_columns
    return math.ceil(count / columns), columns


def mosaic(tiles: np.ndarray, columns: int, gap: int, fill: float = np.nan) -> np.ndarray:
    """Tiles (N, h, w[, 3]) → one picture, `columns` per row, `gap` pixels of `fill` between them."""
    count, height, width = tiles.shape[:3]
    rows = math.ceil(count / columns)
    shape = (rows * (height + gap) - gap, columns * (width + gap) - gap, *tiles.shape[3:])
    picture = np.full(shape, fill, dtype=np.float64)
    for index, tile in enumerate(tiles):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        picture[top:top + height, left:left + width] = tile
    return picture


def map_grid(maps: np.ndarray, title: str, scale: ColourScale, *, labels: Sequence[str] | None = None,
             rgb: np.ndarray | None = None, cell: float = 1.25, max_columns: int = 8) -> "Figure":
    """Maps (N, h, w) as a grid of small pictures on one shared colour scale, with a colour bar.

    `rgb` (N, h, w, 3, values 0–1) is drawn instead where colour says more (3-channel filters);
    then there is no colour bar and the title says how colour was made. The grid is one picture
    (a mosaic with white gaps), which draws in a fraction of the time of one axes per map.
    """
    import matplotlib

    count, height, width = maps.shape
    rows, columns = grid_shape(count, max_columns)
    gap = max(1, round(0.1 * max(height, width)))
    figure = new_figure(max(cell * columns + 1.4, 4.6), cell * rows * height / width + 0.9)
    figure.suptitle(title, fontsize=10)
    axes = figure.add_subplot()
    axes.set_axis_off()
    if rgb is not None:
        axes.imshow(mosaic(rgb, columns, gap, fill=1.0), interpolation="nearest")
    else:
        cmap = matplotlib.colormaps[scale.cmap].with_extremes(bad="white")
        image = axes.imshow(mosaic(maps, columns, gap), interpolation="nearest", cmap=cmap, vmin=scale.vmin,
                            vmax=scale.vmax)
        figure.colorbar(image, ax=axes, shrink=min(0.9, 0.45 + 0.12 * rows), **scale.colorbar_kwargs())
    for index in range(count):
        top, left = (index // columns) * (height + gap), (index % columns) * (width + gap)
        axes.text(left - 0.5, top - 0.5, labels[index] if labels else str(index), fontsize=6, va="top",
                  ha="left", bbox={"facecolor": "white", "alpha": 0.7, "pad": 0.6, "linewidth": 0})
    return figure


def save(figure: "Figure", path: Path) -> Path:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return save_figure(figure, path)


def as_uint8_picture(values: np.ndarray, *, pixels: bool = False) -> tuple[np.ndarray, str]:
    """Real-valued maps (C, H, W) → uint8 (H, W) or (H, W, 3) to save as a PNG, and how they were scaled.

    Values already within 0–255 are kept as they are (identity, blurs), and so are `pixels` (the
    output of a kernel whose weights add up to 1, such as sharpen: an image again), clipped to
    0–255 as any image editor does; other maps with negative values put 0 at mid-grey (128) and
    ±max at 255/1; the rest are stretched from 0 up to their max.
    """
    values = np.asarray(values, dtype=np.float64)
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 255:
        scaled, how = values, "pixel values kept (0–255)"
    elif pixels:
        scaled, how = values, "pixel values, clipped to 0–255"
    elif low < 0:
        top = max(-low, high) or 1.0
        scaled, how = 127.5 + 127.5 * values / top, f"mid-grey = 0, white = +{top:.4g}, black = -{top:.4g}"
    else:
        scaled, how = 255.0 * values / high, f"black = 0, white = {high:.4g}"
    picture = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    picture = picture[0] if picture.shape[0] == 1 else picture.transpose(1, 2, 0)
    return np.ascontiguousarray(picture), how


def save_uint8_picture(values: np.ndarray, path: Path, *, pixels: bool = False) -> str:
    """Save maps (C, H, W) with `as_uint8_picture`; returns how the values were scaled."""
    from PIL import Image

    from cnnlab.io import atomic_path

    picture, how = as_uint8_picture(values, pixels=pixels)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as temp:
        Image.fromarray(picture).save(temp, format="PNG")
    return how


def image_rows(rows: Sequence[tuple[str, Sequence[np.ndarray]]], title: str, *, cell: float = 0.9,
               captions: Sequence[Sequence[str]] | None = None) -> "Figure":
    """Rows of uint8 (C, H, W) images, each row labelled on the left (sample images per class);
    `captions` (one list per row) are written into the images' corners."""
    if captions is not None:
        captions = [caption for caption, (_, images) in zip(captions, rows) if len(images)]
    rows = [(label, images) for label, images in rows if len(images)]
    columns = max(len(images) for _, images in rows)
    channels, height, width = rows[0][1][0].shape
    gap = max(1, round(0.08 * max(height, width)))
    tiles = []
    for _, images in rows:
        padded = [image.astype(np.float64) for image in images] + \
                 [np.full((channels, height, width), np.nan)] * (columns - len(images))
        tiles.extend(tile[0] if channels == 1 else tile.transpose(1, 2, 0) / 255.0 for tile in padded)
    picture = mosaic(np.stack(tiles), columns, gap)
    if channels == 3:
        picture = np.where(np.isnan(picture), 1.0, picture)
    figure = new_figure(1.8 + cell * columns, 0.7 + cell * len(rows) * height / width)
    figure.suptitle(title, fontsize=10)
    axes = figure.add_subplot()
    if channels == 1:
        import matplotlib

        cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
        axes.imshow(picture, cmap=cmap, vmin=0, vmax=255, interpolation="nearest")
    else:
        axes.imshow(picture, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([row * (height + gap) + height / 2 - 0.5 for row in range(len(rows))],
                    labels=[label for label, _ in rows], fontsize=8)
    for spine in axes.spines.values():
        spine.set_visible(False)
    axes.tick_params(length=0)
    for row, texts in enumerate(captions or []):
        for column, text in enumerate(texts):
            axes.text(column * (width + gap) - 0.5, row * (height + gap) - 0.5, text, fontsize=6, va="top",
                      ha="left", bbox={"facecolor": "white", "alpha": 0.75, "pad": 0.6, "linewidth": 0})
    return figure
