"""Augmentation presets, built from torchvision transforms v2.

Augmentation shows the network slightly different versions of each training image every epoch,
so it learns what matters (the shape of a shoe) rather than incidentals (its exact position).
The presets act on uint8 C×H×W tensors, one image at a time, before normalisation:

  none      nothing (the default: right for digits, documents and anything orientation-sensitive)
  light     shifts of up to 10% and zoom 0.9–1.1; no flips, so text and digits stay readable
  standard  random crops (60–100% of the area) resized back, horizontal flips, colour jitter:
            the usual recipe for photos of objects
"""

from __future__ import annotations

from typing import Callable

from cnnlab.errors import ConfigError

PRESETS = ("none", "light", "standard")


def build_augmentation(preset: str, *, size: tuple[int, int], channels: int) -> Callable | None:
    """The transform for `preset`, or None for 'none'."""
    from torchvision.transforms import v2

    if preset == "none":
        return None
    if preset == "light":
        return v2.RandomAffine(degrees=0, translate=(0.1, 0.1), scale=(0.9, 1.1))
    if preset == "standard":
        jitter = (v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2) if channels == 3
                  else v2.ColorJitter(brightness=0.2, contrast=0.2))
        return v2.Compose([
            v2.RandomResizedCrop(list(size), scale=(0.6, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            jitter,
        ])
    raise ConfigError(f"--augment must be one of {', '.join(PRESETS)} (got {preset!r})")
