"""The first convolution's learned filters: the kernels training found, drawn like `cnnlab kernels`.

Grayscale models have one k×k kernel per filter, drawn blue–white–red around 0 on one shared
scale (compare them with sobel-x or laplacian). Colour models have three per filter (red, green,
blue weights); they are drawn as one colour picture per filter, each rescaled so that grey is 0
and the filter's largest weight is fully saturated — the way AlexNet's filters are usually shown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from cnnlab.pictures import ColourScale, map_grid, save
from cnnlab.models.parts import first_conv_path, get_module


def first_conv_weights(model: nn.Module, model_name: str | None = None) -> tuple[str, np.ndarray]:
    """(dotted path, weights (F, C, k, k)) of the convolution that sees the input images."""
    from cnnlab.models.registry import MODELS

    entry = model_name if model_name in MODELS else None
    path = first_conv_path(model, entry)
    weights = get_module(model, path).weight.detach().float().cpu().numpy()
    return path, weights


def plot_filters(weights: np.ndarray, path: Path, *, layer: str, max_filters: int = 64) -> Path:
    """A grid of the first `max_filters` filters of `weights` (F, C, k, k), C = 1 or 3."""
    count, channels, height, width = weights.shape
    shown = weights[:max_filters]
    title = f"first convolution {layer}: {count} filters of {channels}×{height}×{width}"
    if count > len(shown):
        title += f" (first {len(shown)} shown)"
    labels = [f"filter {index}" for index in range(len(shown))]
    if channels == 1:
        scale = ColourScale.for_values(shown[:, 0], "weight", signed=True)
        figure = map_grid(shown[:, 0], title, scale, labels=labels, cell=1.1)
    else:
        top = np.abs(shown).reshape(len(shown), -1).max(axis=1).clip(min=1e-12)[:, None, None, None]
        rgb = (0.5 + 0.5 * shown[:, :3] / top).transpose(0, 2, 3, 1)  # grey = 0
        title += "\ncolour = red, green, blue weights; grey = 0, each filter scaled to its largest weight"
        scale = ColourScale.for_values(shown, "weight", signed=True)
        figure = map_grid(shown[:, 0], title, scale, labels=labels, rgb=rgb, cell=1.1)
    return save(figure, path)
