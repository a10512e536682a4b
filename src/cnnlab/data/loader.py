"""Batches for one epoch: (images on the device, targets on the device).

Two ways in, one result:
  * in memory: a seeded permutation, then one index-select per batch from the uint8 tensor (moved
    to the accelerator once when there is one) — no per-image Python at all, which is what makes
    small datasets fast;
  * streamed: a torch DataLoader whose worker processes decode files (persistent across epochs,
    pinned memory for CUDA), collated into uint8 batches.
Augmentation then happens per batch on the device (see `cnnlab.data.augment`), for both.

The order of every epoch depends only on (seed, epoch), so a resumed run sees the same batches;
with several processes (DDP) each rank takes its own share of that one order.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Iterator

from cnnlab.data.prepare import ImageSet

if TYPE_CHECKING:
    import torch

    from cnnlab.data.augment import BatchAugmentation


def epoch_seed(seed: int, epoch: int) -> int:
    """One seed per (run seed, epoch): the whole randomness of an epoch is fixed by these two."""
    return (seed * 1_000_003 + epoch * 7_919) % (2**63 - 1)


class EpochOrder:
    """The image order of an epoch, shuffled from (seed, epoch), and this rank's share of it.

    Used as a DataLoader sampler (call `set_epoch` first, like DistributedSampler) and directly by
    the in-memory path. With several ranks, the order is padded by wrapping around so that every
    rank gets the same number of images (DDP needs equal step counts).
    """

    def __init__(self, count: int, *, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 pad: bool = True):
        self.count, self.shuffle, self.seed = count, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.pad = pad  # False for evaluation: every image exactly once, shares may differ by one
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.pad:
            return -(-self.count // self.world_size)
        return len(range(self.rank, self.count, self.world_size))

    def indices(self) -> "torch.Tensor":
        import torch

        if self.shuffle:
            generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
            order = torch.randperm(self.count, generator=generator)
        else:
            order = torch.arange(self.count)
        if self.world_size > 1 and self.pad:
            padded = len(self) * self.world_size
            order = torch.cat([order, order[: padded - self.count]])
        return order[self.rank :: self.world_size] if self.world_size > 1 else order

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())


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
    """Re-iterable batches of an ImageSet; `epoch(n)` yields (images, targets) on `device`.

    Images are uint8, or float 0–255 when `augment` is given (it runs on the device, per batch, and
    moves targets that are positions in the image along: see `cnnlab.data.augment`).
    """

    def __init__(
        self,
        imageset: ImageSet,
        *,
        batch_size: int,
        device: "torch.device",
        shuffle: bool,
        seed: int = 0,
        augment: "BatchAugmentation | None" = None,
        workers: int | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.imageset = imageset
        self.batch_size = batch_size
        self.device = device
        self.augment = augment
        # Training shares are padded to equal length (DDP steps in lockstep); evaluation is not.
        self.order = EpochOrder(len(imageset), shuffle=shuffle, seed=seed, rank=rank, world_size=world_size,
                                pad=shuffle)
        self.drop_last = drop_last and len(self.order) > batch_size
        self.workers = (0 if imageset.in_memory else min(4, os.cpu_count() or 1)) if workers is None else workers
        self.skipped = 0  # images that failed to decode while streaming, over all epochs
        self._device_pixels: "torch.Tensor | None" = None
        self._loader = None

    def __len__(self) -> int:
        count = len(self.order)
        return count // self.batch_size if self.drop_last else -(-count // self.batch_size)

    @property
    def num_images(self) -> int:
        """Images per epoch on this rank."""
        return len(self) * self.batch_size if self.drop_last else len(self.order)

    def epoch(self, epoch: int) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        self.order.set_epoch(epoch)
        batches = self._in_memory() if self.imageset.in_memory and self.workers == 0 else self._streamed()
        for images, targets in batches:
            if self.augment is not None:
                images, targets = self.augment.apply(images.float(), targets)
            yield images, targets

    def __iter__(self) -> Iterator[tuple["torch.Tensor", "torch.Tensor"]]:
        return self.epoch(0)

    def _pixels_on_device(self) -> "torch.Tensor":
        pixels = self.imageset.pixels
        assert pixels is not None
        if self.device.type != "cpu" and self._device_pixels is None and pixels.numel() < 2**31:
            # A small uint8 dataset fits on the accelerator: batches are then sliced there.
            self._device_pixels = pixels.to(self.device)
        return self._device_pixels if self._device_pixels is not None else pixels

    def _in_memory(self):
        pixels = self._pixels_on_device()
        targets = self.imageset.targets.to(pixels.device)
        order = self.order.indices().to(pixels.device)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield (pixels[index].to(self.device, non_blocking=True),
                   targets[index].to(self.device, non_blocking=True))

    def _data_loader(self):
        import torch
        from torch.utils.data import DataLoader

        if self._loader is None:
            # Workers only decode (augmentation is on the device), so they can live across epochs.
            self._loader = DataLoader(
                self.imageset,
                batch_size=self.batch_size,
                sampler=self.order,
                num_workers=self.workers,
                collate_fn=_collate_skipping_unreadable,
                pin_memory=self.device.type == "cuda",
                drop_last=self.drop_last,
                persistent_workers=self.workers > 0,
                generator=torch.Generator().manual_seed(self.order.seed),
            )
        return self._loader

    def _streamed(self):
        for images, targets, skipped in self._data_loader():
            self.skipped += skipped
            if images is not None:
                yield images.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
