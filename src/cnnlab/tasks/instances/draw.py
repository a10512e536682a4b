"""Pictures of instance masks: each object painted in its own colour over the image."""

from __future__ import annotations

from typing import Any

import numpy as np

OPACITY = 0.5


def instance_colours(count: int) -> np.ndarray:
    """(count + 1, 3) uint8: black for the background, then a colour per object, spread around the hue
    circle by the golden angle so neighbouring ids differ."""
    import colorsys

    colours = [(0, 0, 0)] + [tuple(round(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.85, 1.0))
                             for i in range(count)]
    return np.array(colours, np.uint8)


def paint_instances(pixels: Any, index_mask: np.ndarray | None) -> np.ndarray:
    """(H, W, 3) uint8: the image (C, H, W) with each object of `index_mask` (0 background, i = object i)
    painted over it; a mask of another size is resized to the image's by nearest neighbour."""
    from PIL import Image

    from cnnlab.tasks.segmentation.draw import as_rgb

    image = as_rgb(np.asarray(pixels)).astype(np.float32)
    if index_mask is None or not index_mask.any():
        return image.astype(np.uint8)
    mask = np.asarray(index_mask, np.uint8)
    if mask.shape != image.shape[:2]:
        mask = np.asarray(Image.fromarray(mask, mode="L").resize((image.shape[1], image.shape[0]),
                                                                  Image.Resampling.NEAREST))
    painted = instance_colours(int(mask.max()))[mask].astype(np.float32)
    over = (mask > 0)[..., None]
    return np.where(over, (1 - OPACITY) * image + OPACITY * painted, image).round().astype(np.uint8)
