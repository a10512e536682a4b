"""A segmentation Source's targets: each image's mask, until it is fitted to the model with its image.

Batches carry masks as one int64 tensor (N, H, W) at the model's input: class indices, 255 = void.
A mask is fitted exactly as its image is (`--fit squash|crop|pad`, the same crop box and the same
placement) but by nearest neighour, so it keeps class indices and never gains values between them;
padding is void. Augmentation moves the masks with the pixels through the same matrix (`move_masks`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cnnlab.tasks.segmentation.masks import VOID, MaskReading, check_mask_size, to_indices

if TYPE_CHECKING:
    import torch
    from torch import Tensor

    from cnnlab.data.prepare import Geometry


class MaskTargets:
    """One mask per image: a mask file read through `reading`, or an array (a target container, see
    cnnlab.data.targets)."""

    def __init__(self, masks: Sequence[Path | np.ndarray], reading: MaskReading,
                 image_paths: Sequence[Path] | None = None):
        self.masks = list(masks)
        self.reading = reading
        self.image_paths = list(image_paths) if image_paths is not None else None

    def __len__(self) -> int:
        return len(self.masks)

    def __getitem__(self, index: Any) -> "MaskTargets":
        chosen = [int(i) for i in np.asarray(index).reshape(-1)]
        images = [self.image_paths[i] for i in chosen] if self.image_paths is not None else None
        return MaskTargets([self.masks[i] for i in chosen], self.reading, images)

    def indices(self, position: int) -> np.ndarray:
        """Mask `position` as uint8 class indices in its image's own pixels."""
        mask = self.masks[position]
        return mask if isinstance(mask, np.ndarray) else to_indices(Path(mask), self.reading)

    def dense(self, origins: Sequence[tuple[int, int]], geometry: "Geometry") -> "torch.Tensor":
        import torch

        fitted = np.empty((len(self.masks), *geometry.size), np.uint8)
        for position, origin in enumerate(origins):
            mask = self.indices(position)
            image = self.image_paths[position] if self.image_paths is not None else "its image"
            check_mask_size(image, self._name(position), tuple(origin), (mask.shape[1], mask.shape[0]))
            fitted[position] = fit_mask(mask, geometry.size, geometry.fit)
        return torch.from_numpy(fitted).long()

    def _name(self, position: int) -> str:
        mask = self.masks[position]
        return str(mask) if not isinstance(mask, np.ndarray) else f"mask {position} (rasterised)"

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Pixels per class, void left out."""
        counts = np.zeros(num_classes, np.int64)
        for position in range(len(self.masks)):
            counts += np.bincount(self.indices(position).reshape(-1), minlength=256)[:num_classes]
        return counts


def fit_mask(mask: np.ndarray, size: tuple[int, int], fit: str) -> np.ndarray:
    """A (h, w) class-index mask fitted to `size` (H, W) the way `cnnlab.data.images.fit_image` fits its
    image, by nearest neighbour: the same crop box (crop), the same placement, void around it (pad)."""
    from PIL import Image, ImageOps

    height, width = size
    if mask.shape == (height, width):
        return mask
    image = Image.fromarray(mask, mode="L")
    nearest = Image.Resampling.NEAREST
    if fit == "crop":
        return np.asarray(ImageOps.fit(image, (width, height), method=nearest))
    if fit == "squash":
        return np.asarray(image.resize((width, height), nearest))
    scale = min(width / image.width, height / image.height)
    inner = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    canvas = Image.new("L", (width, height), VOID)
    canvas.paste(image.resize(inner, nearest), ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return np.asarray(canvas)


def move_masks(masks: "Tensor", theta: "Tensor", size: tuple[int, int]) -> "Tensor":
    """Masks (N, H, W) resampled through `theta` (N, 2, 3), as the pixels were (see
    cnnlab.data.augment): nearest neighbour, so every pixel keeps a class index; what comes from
    outside the image is void. A flip's matrix maps pixel centres onto pixel centres, so a mirrored
    mask is exactly the mask flipped.

    >>> import torch
    >>> flip = torch.tensor([[[-1.0, 0, 0], [0, 1, 0]]])
    >>> move_masks(torch.tensor([[[0, 1, 2]]]), flip, (1, 3)).tolist()
    [[[2, 1, 0]]]
    """
    import torch
    from torch.nn import functional as F

    theta = theta.to(device=masks.device, dtype=torch.float32)
    grid = F.affine_grid(theta, [len(masks), 1, *size], align_corners=False)
    # One added before sampling, so that the zeros grid_sample reads outside the image stand out as void.
    shifted = (masks.float() + 1.0).unsqueeze(1)
    moved = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    return torch.where(moved == 0, torch.full_like(moved, VOID + 1), moved).sub(1).to(masks.dtype)
