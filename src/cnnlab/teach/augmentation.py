"""What an `--augment` preset does to images: each one beside versions the preset draws.

Training draws a new version of every image every epoch, so the network never sees the same
picture twice and has to learn what stays the same across them. `cnnlab augment IMAGES --augment
PRESET` shows that on your own images before you train; `cnnlab report` shows it for a run trained
with a preset.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cnnlab.errors import ConfigError

DEFAULT_VERSIONS = 7
_DEFAULT_SIZE = (224, 224)  # when the images differ in size: what `cnnlab train` resizes them to


def augmented_versions(images: Sequence[np.ndarray], preset: str, count: int, seed: int = 0) -> list[list[np.ndarray]]:
    """`count` versions of each uint8 (C, H, W) image drawn by the `--augment` preset, as training
    draws one for every image of every epoch: [[version 1, ..., version count] per image]."""
    import torch

    from cnnlab.data.augment import build_augmentation

    augment = build_augmentation(preset)
    if augment is None or not len(images):
        return [[] for _ in images]
    batch = torch.from_numpy(np.stack(images)).float()  # what training augments: pixel values 0–255
    with torch.random.fork_rng(devices=[]):  # a picture must not move the caller's random numbers
        torch.manual_seed(seed)
        drawn = [augment(batch.clone()).round().clamp(0, 255).to(torch.uint8).numpy() for _ in range(count)]
    return [[versions[index] for versions in drawn] for index in range(len(images))]


def augmentation_figure(rows: Sequence[tuple[str, np.ndarray]], preset: str, versions: int = DEFAULT_VERSIONS,
                        seed: int = 0):
    """One row per (label, uint8 (C, H, W) image): the image, then `versions` drawn by `preset`."""
    from cnnlab.pictures import image_rows

    drawn = augmented_versions([image for _, image in rows], preset, versions, seed)
    title = (f"--augment {preset}: each image, then {versions} versions\n"
             "drawn as training draws them (a new one every epoch)")
    captions = [["original"] + [""] * versions for _ in rows]
    return image_rows([(label, [image, *more]) for (label, image), more in zip(rows, drawn)], title,
                      cell=0.7, captions=captions)


def preview_augmentation(paths: Sequence[str | Path], preset: str, output: str | Path, *,
                         versions: int = DEFAULT_VERSIONS, image_size: tuple[int, int] | None = None,
                         channels: int | None = None, seed: int = 0, fit: str = "squash",
                         max_image_pixels: int | None = None) -> Path:
    """Write a picture of `paths`, each followed by `versions` drawn by `preset`, and return its path.

    The images are read as training reads them: grayscale or colour (colour if any of them is),
    fitted to `image_size` by `fit` (default: their own size when they share one, else 224×224),
    refused beyond `max_image_pixels` pixels (--max-image-pixels).
    """
    from cnnlab.data.augment import PRESETS
    from cnnlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, FITS, check_max_image_pixels, load_image_array
    from cnnlab.pictures import save

    budget = check_max_image_pixels(max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS)

    if preset == "none" or preset not in PRESETS:
        drawing = ", ".join(name for name in PRESETS if name != "none")
        raise ConfigError(f"--augment must be one of {drawing} (got {preset!r}): "
                          + ("it draws nothing to show" if preset == "none" else "no such preset"))
    if fit not in FITS:
        raise ConfigError(f"--fit must be one of {', '.join(FITS)} (got {fit!r})")
    if versions < 1:
        raise ConfigError(f"--versions must be at least 1 (got {versions})")
    if not paths:
        raise ConfigError("give at least one image")
    channels, size = preview_geometry(paths, image_size=image_size, channels=channels, max_pixels=budget)
    rows = [(Path(path).name, load_image_array(path, channels=channels, size=size, fit=fit, max_pixels=budget))
            for path in paths]
    return save(augmentation_figure(rows, preset, versions, seed), Path(output))


def preview_geometry(paths: Sequence[str | Path], *, image_size: tuple[int, int] | None = None,
                     channels: int | None = None, max_pixels: int | None = None) -> tuple[int, tuple[int, int]]:
    """(channels, (height, width)) the images are shown at, read from their headers as training
    decides: colour if any is colour; their size if they share one, else 224×224."""
    from cnnlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, probe_image

    budget = max_pixels or DEFAULT_MAX_IMAGE_PIXELS
    probes = [probe_image(path, max_pixels=budget) for path in paths]  # names an unreadable file before any work
    sizes = {(height, width) for width, height, _ in probes}
    size = image_size or (sizes.pop() if len(sizes) == 1 else _DEFAULT_SIZE)
    return channels or (3 if any(colour for _, _, colour in probes) else 1), size
