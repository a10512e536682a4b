"""`cnnlab filter`: slide one kernel over an image, write the feature map, and pool it.

The convolution is PyTorch's own (`torch.nn.functional.conv2d`, the operation inside every
`nn.Conv2d`), in float64 on the 0–255 pixel values; a colour image is filtered channel by channel
(`groups` = channels), as a depthwise convolution would. Output size, as in the guide:

    out = (in + 2·padding − kernel) // stride + 1

    >>> import numpy as np
    >>> from cnnlab.teach.kernels import get_kernel
    >>> image = np.zeros((1, 6, 6), dtype=np.uint8); image[:, :, 3:] = 100   # a vertical step edge
    >>> result = apply_kernel(image, get_kernel("sobel-x"))
    >>> result.feature_map[0, 0]                  # left to right: flat, edge, edge, flat
    array([  0., 400., 400.,   0.])
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from cnnlab.errors import ConfigError
from cnnlab.teach.kernels import Kernel
from cnnlab.pictures import ColourScale, save, show_image, show_matrix
from cnnlab.plotting import new_figure

POOLS = ("max", "avg")


@dataclass(frozen=True)
class FilterResult:
    kernel: Kernel
    stride: int
    padding: int
    feature_map: np.ndarray  # float64 (C, H', W')
    pool: str | None = None
    pool_size: int = 2
    pooled: np.ndarray | None = None  # float64 (C, H'//size, W'//size)


def read_image(path: str | Path, *, gray: bool = False) -> np.ndarray:
    """uint8 (C, H, W) pixels of an image file at its own size: 1 channel if grayscale (or `gray`), else 3."""
    from cnnlab.data.images import image_to_array, normalize_mode, open_image

    image = normalize_mode(open_image(path))
    channels = 1 if gray or image.mode == "L" else 3
    return image_to_array(image, channels=channels, size=(image.height, image.width))


def resolve_padding(padding: str | int, kernel_size: int) -> int:
    """'valid' → 0, 'same' → kernel // 2 (the same size at stride 1), or a whole number of pixels."""
    text = str(padding).strip().lower()
    if text == "valid":
        return 0
    if text == "same":
        return kernel_size // 2
    if text.isdigit():
        return int(text)
    raise ConfigError(f"--padding {padding!r}: give valid, same or a whole number of pixels ≥ 0")


def apply_kernel(pixels: np.ndarray, kernel: Kernel, *, stride: int = 1, padding: str | int = 0,
                 pool: str | None = None, pool_size: int = 2) -> FilterResult:
    """Convolve uint8 (C, H, W) pixels with `kernel` channel by channel; optionally pool the result."""
    if stride < 1:
        raise ConfigError(f"--stride {stride}: the stride must be 1 or more pixels")
    pad = resolve_padding(padding, kernel.size)
    channels, height, width = pixels.shape
    if min(height, width) + 2 * pad < kernel.size:
        raise ConfigError(f"--kernel: a {kernel.size}×{kernel.size} kernel does not fit a {height}×{width} "
                          f"image with --padding {pad}; use a smaller kernel or more padding")
    images = torch.from_numpy(np.ascontiguousarray(pixels)).double()[None]  # (1, C, H, W)
    weights = torch.from_numpy(kernel.weights).expand(channels, 1, -1, -1)  # one copy per channel
    feature_map = F.conv2d(images, weights, stride=stride, padding=pad, groups=channels)[0]
    pooled = None
    if pool is not None:
        pooled = pool_maps(feature_map, pool, pool_size)
    return FilterResult(kernel, stride, pad, feature_map.numpy(), pool, pool_size,
                        None if pooled is None else pooled.numpy())


def pool_maps(maps: torch.Tensor, pool: str, size: int) -> torch.Tensor:
    """Max- or average-pool (C, H, W) maps over size×size windows, stepping by `size` (as the guide's)."""
    if pool not in POOLS:
        raise ConfigError(f"--pool {pool!r}: choose max or avg")
    if size < 1 or size > min(maps.shape[-2:]):
        raise ConfigError(f"--pool-size {size}: must be between 1 and the feature map's side "
                          f"({min(maps.shape[-2:])})")
    operation = F.max_pool2d if pool == "max" else F.avg_pool2d
    return operation(maps[None], size)[0]


_CHANNEL_NAMES = ("red", "green", "blue")


def plot_filter_result(pixels: np.ndarray, result: FilterResult, path: Path, *, image_name: str) -> Path:
    """Input, kernel, feature map(s) and pooled map(s) side by side, each map column with a colour bar.

    Maps of kernels whose weights add up to 1 (blurs, sharpen, emboss) are images again and are shown
    in grey, 0–255, clipped as an image editor clips; those of edge detectors (weights adding up to 0)
    are blue–white–red around 0; any other kernel's by the sign of its weights."""
    channels = pixels.shape[0]
    columns = 3 if result.pooled is not None else 2
    rows = max(channels, 2)
    figure = new_figure(3.0 + 4.6 * (columns - 1), 3.3 * rows if channels > 1 else 5.6)
    grid = figure.add_gridspec(rows, columns, width_ratios=[0.75] + [1.0] * (columns - 1))
    show_image(figure.add_subplot(grid[0, 0]), pixels,
               f"input: {image_name}\n{channels}×{pixels.shape[1]}×{pixels.shape[2]}")
    kernel = result.kernel
    show_matrix(figure.add_subplot(grid[1, 0]), kernel.weights,
                f"kernel {kernel.name} ({kernel.size}×{kernel.size})")
    kind = "image" if kernel.makes_an_image else "signed" if kernel.has_negative_weights else "positive"
    what = f"stride {result.stride}, padding {result.padding}"
    _map_column(figure, grid, 1, result.feature_map, f"feature map ({what})", kind)
    if result.pooled is not None:
        size = result.pool_size
        _map_column(figure, grid, 2, result.pooled, f"{result.pool}-pool {size}×{size}", kind)
    return save(figure, path)


def _map_scale(maps: np.ndarray, kind: str) -> ColourScale:
    """An image (pixels 0–255 in grey, clipped), a signed map (blue–white–red around 0), or a map
    of positive values in grey from 0 up."""
    if kind == "image":
        clipped = bool(maps.size) and (float(maps.min()) < 0 or float(maps.max()) > 255)
        return ColourScale("gray", 0.0, 255.0, "pixel value" + (" (clipped to 0–255)" if clipped else ""), clipped)
    signed = kind == "signed"
    label = "sum of kernel × pixels" + (" (arrows: beyond the 99.5th percentile)" if signed else "")
    return ColourScale.for_values(maps, label, signed=signed, robust=signed, cmap=None if signed else "gray")


def _map_column(figure, grid, column: int, maps: np.ndarray, title: str, kind: str) -> None:
    channels = len(maps)
    scale = _map_scale(maps, kind)
    axes_list = []
    for channel in range(channels):
        axes = figure.add_subplot(grid[:, column] if channels == 1 else grid[channel, column])
        image = axes.imshow(maps[channel], interpolation="nearest", **scale.kwargs())
        height, width = maps.shape[1:]
        which = f"{_CHANNEL_NAMES[channel]} channel, " if channels == 3 else ""
        axes.set_title(f"{title}\n{which}{height}×{width}", fontsize=9)
        axes.tick_params(labelsize=7)
        axes_list.append(axes)
    figure.colorbar(image, ax=axes_list, shrink=0.8 if channels == 1 else 0.9, **scale.colorbar_kwargs())
