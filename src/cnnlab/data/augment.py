"""Augmentation presets: torchvision transforms v2 that draw fresh random parameters per image of a batch.

Augmentation shows the network slightly different versions of each training image every epoch,
so it learns what matters (the shape of a shoe) rather than incidentals (its exact position).

torchvision's own v2 transforms draw one set of parameters per call, so a batch would be shifted
all the same way. These subclasses keep v2's design (`make_params` draws, `transform` applies) but
draw one set per image and apply them all at once: a whole batch is augmented on the device in a
few tensor operations, with no per-image Python. Geometry goes through one affine resampling
(`affine_grid` + `grid_sample`), so a crop, a zoom and a shift cost the same.

Targets that are positions in the image (a detector's boxes, a segmentation's masks) move with the
pixels: each geometric transform also says, as one 2×3 matrix per image (`theta`, the same matrix
the pixels are resampled with), where it moved them, and the task's `move_targets` applies it.
Colour changes leave targets alone.

Presets, applied to batches of pixel values 0–255 before normalisation:
  none      nothing (the default: right for digits, documents and anything orientation-sensitive)
  flip      horizontal mirror images only: for things that look the same mirrored (clothes, animals)
  light     shifts of up to 10% and zoom 0.9–1.1; no flips, so text and digits stay readable
  standard  random crops (60–100% of the area, aspect 3:4–4:3) resized back, horizontal flips and
            brightness/contrast/saturation jitter of ±20%: the usual recipe for photos of objects
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.transforms import v2

from cnnlab.config import AUGMENTATIONS
from cnnlab.errors import ConfigError

PRESETS = AUGMENTATIONS


def _uniform(count: int, low: float, high: float, device: torch.device) -> Tensor:
    return torch.empty(count, device=device).uniform_(low, high)


def _resample(images: Tensor, theta: Tensor) -> Tensor:
    """Sample each image at the positions its 2×3 matrix maps the output grid to (zeros outside)."""
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class BatchRandomAffine(v2.Transform):
    """Per-image random shift (a fraction of the size) and zoom, like v2.RandomAffine without rotation."""

    def __init__(self, translate: float = 0.1, scale: tuple[float, float] = (0.9, 1.1)):
        super().__init__()
        self.translate, self.scale = translate, scale

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        images = flat_inputs[0]
        count, device = len(images), images.device
        zoom = _uniform(count, *self.scale, device)
        theta = torch.zeros(count, 2, 3, device=device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / zoom  # sampling 1/zoom of the input enlarges it by zoom
        # Normalised coordinates span 2 units across the image, so a shift of f·size is 2f.
        theta[:, :, 2] = _uniform(2 * count, -2 * self.translate, 2 * self.translate, device).view(count, 2)
        return {"theta": theta}

    def transform(self, inpt: Tensor, params: dict[str, Any]) -> Tensor:
        return _resample(inpt, params["theta"])

    def theta(self, params: dict[str, Any]) -> Tensor:
        return params["theta"]


class BatchRandomResizedCrop(v2.Transform):
    """Per-image random crop of `scale` of the area with aspect ratio in `ratio`, resized back to full size."""

    def __init__(self, scale: tuple[float, float] = (0.6, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        super().__init__()
        self.scale, self.ratio = scale, ratio

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        images = flat_inputs[0]
        count, device = len(images), images.device
        area = _uniform(count, *self.scale, device)
        aspect = torch.exp(_uniform(count, math.log(self.ratio[0]), math.log(self.ratio[1]), device))
        width = torch.sqrt(area * aspect).clamp(max=1.0)  # crop size as a fraction of the image
        height = torch.sqrt(area / aspect).clamp(max=1.0)
        theta = torch.zeros(count, 2, 3, device=device)
        theta[:, 0, 0], theta[:, 1, 1] = width, height
        theta[:, 0, 2] = (torch.rand(count, device=device) * 2 - 1) * (1 - width)  # crop centre stays inside
        theta[:, 1, 2] = (torch.rand(count, device=device) * 2 - 1) * (1 - height)
        return {"theta": theta}

    def transform(self, inpt: Tensor, params: dict[str, Any]) -> Tensor:
        return _resample(inpt, params["theta"])

    def theta(self, params: dict[str, Any]) -> Tensor:
        return params["theta"]


class BatchRandomHorizontalFlip(v2.Transform):
    """Mirror each image left-right with probability p."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        images = flat_inputs[0]
        return {"flip": torch.rand(len(images), device=images.device) < self.p}

    def transform(self, inpt: Tensor, params: dict[str, Any]) -> Tensor:
        # An exact mirror image (no resampling): pixels only change places.
        return torch.where(params["flip"].view(-1, 1, 1, 1), inpt.flip(-1), inpt)

    def theta(self, params: dict[str, Any]) -> Tensor:
        """The mirror as a sampling matrix: output x reads input −x."""
        flip = params["flip"]
        theta = torch.zeros(len(flip), 2, 3, device=flip.device)
        theta[:, 0, 0] = torch.where(flip, -1.0, 1.0)
        theta[:, 1, 1] = 1.0
        return theta


class BatchColorJitter(v2.Transform):
    """Per-image brightness, contrast and (colour images only) saturation, each by a factor in 1 ± amount."""

    def __init__(self, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2):
        super().__init__()
        self.brightness, self.contrast, self.saturation = brightness, contrast, saturation

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        images = flat_inputs[0]
        count, device = len(images), images.device

        def factors(amount: float) -> Tensor:
            return _uniform(count, 1 - amount, 1 + amount, device).view(-1, 1, 1, 1)

        return {"brightness": factors(self.brightness), "contrast": factors(self.contrast),
                "saturation": factors(self.saturation)}

    def transform(self, inpt: Tensor, params: dict[str, Any]) -> Tensor:
        images = inpt * params["brightness"]
        mean_gray = _luminance(images).mean(dim=(2, 3), keepdim=True)
        images = (images - mean_gray) * params["contrast"] + mean_gray
        if images.shape[1] == 3:
            gray = _luminance(images)
            images = (images - gray) * params["saturation"] + gray
        return images.clamp(0.0, 255.0)


def _luminance(images: Tensor) -> Tensor:
    if images.shape[1] != 3:
        return images
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)


class BatchAugmentation:
    """A preset's transforms applied in order to a batch: `augmentation(images)` for pixels alone,
    `augmentation.apply(images, targets)` to move targets that are positions in the image along."""

    def __init__(self, transforms: Sequence[v2.Transform],
                 move_targets: Callable[[Tensor, Tensor, tuple[int, int]], Tensor] | None = None):
        self.transforms = list(transforms)
        self.move_targets = move_targets

    def __call__(self, images: Tensor) -> Tensor:
        return self.apply(images, None)[0]

    def apply(self, images: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor | None]:
        for transform in self.transforms:
            # make_params, then transform: the order v2's own forward() draws and applies in.
            params = transform.make_params([images])
            images = transform.transform(images, params)
            theta = getattr(transform, "theta", None)
            if self.move_targets is not None and targets is not None and theta is not None:
                targets = self.move_targets(targets, theta(params), tuple(images.shape[-2:]))
        return images, targets


def build_augmentation(preset: str, move_targets: Callable[[Tensor, Tensor, tuple[int, int]], Tensor] | None = None
                       ) -> BatchAugmentation | None:
    """The batch transform for `preset` (None for 'none'): takes and returns float (B, C, H, W) in 0–255.
    `move_targets(targets, theta, (H, W))` moves targets that are positions in the image (a task's).

    >>> augment = build_augmentation("light")
    >>> augment(torch.full((4, 1, 28, 28), 255.0)).shape
    torch.Size([4, 1, 28, 28])
    """
    if preset == "none":
        return None
    if preset == "flip":
        transforms: list[v2.Transform] = [BatchRandomHorizontalFlip()]
    elif preset == "light":
        transforms = [BatchRandomAffine(translate=0.1, scale=(0.9, 1.1))]
    elif preset == "standard":
        transforms = [BatchRandomResizedCrop(scale=(0.6, 1.0)), BatchRandomHorizontalFlip(),
                      BatchColorJitter(0.2, 0.2, 0.2)]
    else:
        raise ConfigError(f"--augment must be one of {', '.join(PRESETS)} (got {preset!r})")
    return BatchAugmentation(transforms, move_targets)
