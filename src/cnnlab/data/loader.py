"""Batches for one epoch: (uint8 images on the device, targets on the device).

Two paths, same result:
  * in memory, no augmentation: a seeded permutation, then one index-select per batch — no
    per-image Python at all, which is what makes small datasets fast on CPU;
  * otherwise a torch DataLoader (worker processes decode files and augment images one by one).
The order of every epoch depends only on (seed, epoch), so a resumed run sees the same batches.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable, Iterator

from cnnlab.data.prepare import ImageSet

if TYPE_CHECKING:
    import torch


def epoch_seed(seed: int, epoch: int) -> int:
    """One seed per (run seed, epoch): the whole randomness of an epoch is fixed by these two."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**63 - 1)


class _Augmented:
    """An ImageSet seen through a per-image transform (picklable, for DataLoader workers)."""

    def __init__(self, imageset: ImageSet, transform: Callable | None):
        self.imageset, self.transform = imageset, transform

    def __len__(self) -> int:
        return len(self.imageset)

    def __getitem__(self, index: int):
        item = self.imageset[index]
        if item is None or self.transform is None:
            return item
        return self.transform(item[0]), item[1]


def _collate_skipping_unreadable(items: list):
    """Stack a batch, dropping images that failed to decode; also say how many were dropped."""
    import torch

    kept = [item for item in items if item is not None]
    if not kept:
        return None, None, len(items)
    images = torch.stack([item[0] for item in kept])
    targets = torch.stack([item[1] for item in kept])
    return images, targets, len(items) - len(kept)


class Batches:
    """Re-iterable batches of an ImageSet; `epoch(n)` yields (images, targets) on `device`."""

    def __init__(
        self,
        imageset: ImageSet,
        *,
        batch_size: int,
        device: "torch.device",
        shuffle: bool,
        seed: int = 0,
        augment: Callable | None = None,
        workers: int | None = None,
        drop_last: bool = False,
    ):
        self.imageset = imageset
        self.batch_size = batch_size
        self.device = device
        self.shuffle = shuffle
        self.seed = seed
        self.augment = augment
        self.drop_last = drop_last and len(imageset) > batch_size
        self.fast = imageset.in_memory and augment is None
        default_workers = 0 if self.fast else min(4, os.cpu_count() or 1)
        self.workers = default_workers if workers is None else workers
        self.skipped = 0  # images that failed to decode while streaming, over all epochs
        self._device_pixels = None

    def __len__(self) -> int:
        count = len(self.imageset)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    @property
    def num_images(self) -> int:
        return len(self) * self.batch_size if self.drop_last else len(self.imageset)

    def epoch(self, epoch: int) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        return self._fast_epoch(epoch) if self.fast else self._loader_epoch(epoch)

    def __iter__(self) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        return self.epoch(0)

    def _order(self, epoch: int) -> "torch.Tensor":
        import torch

        if not self.shuffle:
            return torch.arange(len(self.imageset))
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        return torch.randperm(len(self.imageset), generator=generator)

    def _pixels_for_device(self) -> "torch.Tensor":
        pixels = self.imageset.pixels
        assert pixels is not None
        if self.device.type != "cpu" and self._device_pixels is None:
            # A small uint8 dataset fits on the accelerator; batches are then sliced there.
            self._device_pixels = pixels.to(self.device) if pixels.numel() < 2**31 else pixels
        return self._device_pixels if self._device_pixels is not None else pixels

    def _fast_epoch(self, epoch: int):
        pixels = self._pixels_for_device()
        targets = self.imageset.targets
        order = self._order(epoch)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            images = pixels[index.to(pixels.device)]
            yield images.to(self.device, non_blocking=True), targets[index].to(self.device, non_blocking=True)

    def _loader_epoch(self, epoch: int):
        import torch
        from torch.utils.data import DataLoader

        loader = DataLoader(
            _Augmented(self.imageset, self.augment),
            batch_size=self.batch_size,
            sampler=self._order(epoch).tolist(),  # the same order as the in-memory path
            # Worker processes seed their augmentation from this generator: reproducible per epoch.
            generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch) + 1),
            num_workers=self.workers,
            collate_fn=_collate_skipping_unreadable,
            pin_memory=self.device.type == "cuda",
            drop_last=self.drop_last,
        )
        for images, targets, skipped in loader:
            self.skipped += skipped
            if images is not None:
                yield images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
