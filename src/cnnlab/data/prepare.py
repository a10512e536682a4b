"""From a `Source` to `ImageSet`: every image as uint8 C×H×W at one size, ready to batch.

Pixels stay uint8 until they reach the device, where a batch is scaled to 0–1 and normalised
with the mean/std recorded in the model's sidecar (see `cnnlab.data.input`). Keeping uint8 makes
an in-memory copy of a dataset 4× smaller than float32 and turns loading a batch into one slice.

Small datasets are decoded once and held in memory ("cache": auto holds them when they fit in
2 GiB); larger ones are decoded on the fly by DataLoader worker processes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from cnnlab.data.images import (DEFAULT_MAX_IMAGE_PIXELS, load_image_array, load_image_array_and_origin,
                                probe_image)
from cnnlab.data.source import Source
from cnnlab.data.targets import dense_targets, needs_origins
from cnnlab.errors import DataError, UnreadableImageError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

MEMORY_BUDGET_BYTES = 2 * 1024**3
_PROBE_COUNT = 64


@dataclass(frozen=True)
class Geometry:
    """The shape every image is converted to: channels × height × width, how an image of another
    shape is fitted to it (`cnnlab.data.images.FITS`), and the most pixels a file may hold to be
    decoded at all (`--max-image-pixels`)."""

    channels: int
    height: int
    width: int
    fit: str = "squash"
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    @property
    def size(self) -> tuple[int, int]:
        return (self.height, self.width)

    def __str__(self) -> str:
        return f"{self.channels}×{self.height}×{self.width}"

    def describe(self) -> str:
        """The shape, and how other shapes are fitted to it, for a log line."""
        how = {"squash": "", "crop": ", other shapes scaled to cover it and centre-cropped",
               "pad": ", other shapes scaled to fit inside it and padded with black"}[self.fit]
        return f"{self} (C×H×W{how})"


def infer_geometry(
    source: Source, *, channels: int | None = None, image_size: tuple[int, int] | None = None,
    fit: str = "squash", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
) -> Geometry:
    """The data's own geometry, overridden by `--channels` / `--image-size` where given.

    For files, the first images decide: colour if any of them is colour; their size if they
    all share one, otherwise 224×224 (the ImageNet convention), which is logged.
    """
    if source.pixels is not None:
        own_channels = 1 if source.pixels.ndim == 3 else source.pixels.shape[3]
        own_size = source.pixels.shape[1:3]
    elif channels and image_size:
        return Geometry(channels, *image_size, fit, max_pixels)  # nothing left for the files to decide
    else:
        own_channels, own_size = _probe_files(source, size_given=image_size is not None, fit=fit,
                                              max_pixels=max_pixels)
    return Geometry(channels or own_channels, *(image_size or own_size), fit, max_pixels)


def _probe_files(source: Source, *, size_given: bool = False, fit: str = "squash",
                 max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, tuple[int, int]]:
    sizes, colour, unreadable = set(), False, []
    probed = list(source.paths or [])[:_PROBE_COUNT]
    for path in probed:
        try:
            width, height, is_colour = probe_image(path, max_pixels=max_pixels)
        except UnreadableImageError as error:
            unreadable.append(error)  # skipped and named when the images are loaded
            continue
        sizes.add((height, width))
        colour = colour or is_colour
    if len(sizes) == 1:
        return (3 if colour else 1), sizes.pop()
    if not sizes:  # nothing to learn a size from: say so, not that sizes differ
        if unreadable and not size_given:
            log.warning(f"none of the first {len(unreadable)} image file(s) could be read (e.g. {unreadable[0]}), "
                        "so their size is unknown: making images 224×224 (set --image-size to choose)")
    elif not size_given:  # with --image-size the sizes differing changes nothing
        how = ("stretching them" if fit == "squash" else
               "scaling each to cover it and cutting out the centre" if fit == "crop" else
               "scaling each to fit inside it and padding with black")
        keep = " and --fit crop or pad to keep their aspect ratio" if fit == "squash" else ""
        log.warning(f"images have different sizes; making all 224×224 by {how} (set --image-size to choose{keep})")
    return (3 if colour else 1), (224, 224)


class ImageSet:
    """A torch-style dataset: `imageset[i]` is (uint8 tensor C×H×W, target).

    `pixels` holds every image when in memory (`in_memory`); otherwise files are decoded in
    `__getitem__`, which returns None for a file that fails so the batch can drop it. `targets` is
    the dense target tensor (`cnnlab.data.targets`); for streamed images whose targets depend on the
    image's own size (boxes), each image's is made as it is decoded, and `targets` is None.
    `origins`: each image's own (width, height) before it was fitted, where known.
    """

    def __init__(self, source: Source, geometry: Geometry, pixels: "torch.Tensor | None",
                 origins: list[tuple[int, int]] | None = None):
        self.source = source
        self.geometry = geometry
        self.pixels = pixels
        self.origins = origins
        if pixels is None and needs_origins(source.targets) and origins is None:
            self.targets = None
        else:
            self.targets = dense_targets(source.targets, origins, geometry)

    @property
    def in_memory(self) -> bool:
        return self.pixels is not None

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        import torch

        if self.pixels is not None:
            return self.pixels[index], self.targets[index]
        path = self.source.paths[index]  # type: ignore[index]
        geometry = self.geometry
        try:
            if self.targets is not None:
                array = load_image_array(path, channels=geometry.channels, size=geometry.size, fit=geometry.fit,
                                         max_pixels=geometry.max_pixels)
                return torch.from_numpy(array), self.targets[index]
            array, (width, height, _) = load_image_array_and_origin(path, channels=geometry.channels,
                                                                    size=geometry.size, fit=geometry.fit,
                                                                    max_pixels=geometry.max_pixels)
        except UnreadableImageError as error:
            log.warning("skipping %s", error)
            return None
        target = dense_targets(self.source.targets[np.array([index])], [(width, height)], geometry)[0]
        return torch.from_numpy(array), target

    def subset(self, indices: np.ndarray) -> "ImageSet":
        import torch

        pixels = None if self.pixels is None else self.pixels[torch.from_numpy(np.asarray(indices))]
        origins = None if self.origins is None else [self.origins[i] for i in np.asarray(indices)]
        return ImageSet(self.source.subset(indices), self.geometry, pixels, origins)


@dataclass
class LoadReport:
    """What happened while loading: the unreadable files that were skipped."""

    unreadable: list[UnreadableImageError]

    def summary(self, part: str | None = None) -> str:
        """The skipped files, one a line; `part` says among which images ("training", "validation")."""
        if not self.unreadable:
            return ""
        listed = "\n".join(f"  {error.path}: {error.reason}" for error in self.unreadable[:20])
        more = f"\n  ... and {len(self.unreadable) - 20} more" if len(self.unreadable) > 20 else ""
        among = f" of the {part} images" if part else ""
        return f"skipped {len(self.unreadable)} unreadable image file(s){among}:\n{listed}{more}"


def load_images(
    source: Source,
    geometry: Geometry,
    *,
    cache: str = "auto",
    workers: int | None = None,
    strict: bool = False,
    progress: Callable[[int], None] | None = None,
) -> tuple[ImageSet, LoadReport]:
    """Convert a Source to an ImageSet at `geometry`, skipping (or, if strict, refusing) bad files."""
    if source.pixels is not None:
        height, width = source.pixels.shape[1:3]
        origins = [(width, height)] * len(source) if needs_origins(source.targets) else None
        return ImageSet(source, geometry, array_to_tensor(source.pixels, geometry), origins), LoadReport([])
    image_bytes = len(source) * geometry.channels * geometry.height * geometry.width
    origins = None
    if cache == "memory" or (cache == "auto" and image_bytes <= MEMORY_BUDGET_BYTES):
        pixels, good, unreadable, origins = _decode_all(source, geometry, workers, progress)
    else:
        good, unreadable = _probe_all(source, workers, full_decode=strict, geometry=geometry)
        pixels = None
    report = LoadReport(unreadable)
    if unreadable and strict:
        raise DataError(f"--strict: {report.summary()}\nremove or fix these files, or drop --strict to skip them")
    if not good.size:
        first = unreadable[0] if unreadable else None
        more = f", and {len(unreadable) - 1} more" if len(unreadable) > 1 else ""
        raise DataError(f"{source.description}: none of the images could be read"
                        + (f" ({first.path}: {first.reason}{more})" if first else ""))
    kept = source.subset(good) if len(good) != len(source) else source
    return ImageSet(kept, geometry, pixels, origins), report


def array_to_tensor(pixels: np.ndarray, geometry: Geometry, chunk: int = 4096) -> "torch.Tensor":
    """(N,H,W[,C]) uint8 array -> (N,C,H,W) uint8 tensor at `geometry`, converting channels and size."""
    import torch

    images = torch.from_numpy(np.ascontiguousarray(pixels))
    images = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    if images.shape[1] == geometry.channels and tuple(images.shape[2:]) == geometry.size:
        # Nothing to convert (and torchvision, a second to import, not needed). A copy all the
        # same: the caller's array may be read-only or reused.
        return images.clone(memory_format=torch.contiguous_format)
    from torchvision.transforms.v2 import functional as F

    parts = []
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk]
        if part.shape[1] != geometry.channels:
            part = F.rgb_to_grayscale(part) if geometry.channels == 1 else part.expand(-1, 3, -1, -1)
        if tuple(part.shape[2:]) != geometry.size:
            part = _fit_tensor(part, geometry)
        parts.append(part.contiguous())
    return torch.cat(parts) if parts else images


def _fit_tensor(images: "torch.Tensor", geometry: Geometry) -> "torch.Tensor":
    """(N, C, h, w) uint8 -> (N, C, H, W) by `geometry.fit`, as `images.fit_image` fits a file."""
    from torchvision.transforms.v2 import functional as F

    height, width = geometry.size
    if geometry.fit == "squash":
        return F.resize(images, [height, width], antialias=True)
    own_height, own_width = images.shape[-2:]
    scale = (max if geometry.fit == "crop" else min)(height / own_height, width / own_width)
    inner = [max(1, round(own_height * scale)), max(1, round(own_width * scale))]
    if geometry.fit == "crop":
        inner = [max(height, inner[0]), max(width, inner[1])]  # rounding must not leave a gap
        return F.center_crop(F.resize(images, inner, antialias=True), [height, width])
    inner = [min(height, inner[0]), min(width, inner[1])]
    top, left = (height - inner[0]) // 2, (width - inner[1]) // 2
    padding = [left, top, width - inner[1] - left, height - inner[0] - top]
    return F.pad(F.resize(images, inner, antialias=True), padding, fill=0)


class _DecodeFiles:
    """Picklable dataset for DataLoader workers: index -> (index, pixels or the error); with
    `with_origin`, (index, (pixels, (width, height, is_colour) of the file)) or the error."""

    def __init__(self, paths, geometry: Geometry, full_decode: bool = True, with_origin: bool = False):
        self.paths, self.geometry, self.full_decode = paths, geometry, full_decode
        self.with_origin = with_origin

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        geometry = self.geometry
        try:
            if not self.full_decode:
                probe_image(self.paths[index], max_pixels=geometry.max_pixels)
                return index, None
            if self.with_origin:
                return index, load_image_array_and_origin(self.paths[index], channels=geometry.channels,
                                                          size=geometry.size, fit=geometry.fit,
                                                          max_pixels=geometry.max_pixels)
            return index, load_image_array(self.paths[index], channels=geometry.channels, size=geometry.size,
                                           fit=geometry.fit, max_pixels=geometry.max_pixels)
        except UnreadableImageError as error:
            return index, error


_WORKER_THRESHOLD_BYTES = 32 * 1024**2


def _total_bytes(paths: Sequence[Path]) -> int:
    total = 0
    for path in paths:
        try:
            total += os.stat(path).st_size
        except OSError:
            pass  # reported when the file is decoded
        if total > _WORKER_THRESHOLD_BYTES:
            break
    return total


def _default_workers(workers: int | None) -> int:
    return min(4, os.cpu_count() or 1) if workers is None else workers


def _as_list(items: list) -> list:
    return items


def decodes_in_process(paths: Sequence[Path], workers: int | None) -> bool:
    """Whether `decode_files` decodes in this process: small jobs by default, since starting workers
    costs a few tenths of a second, more than decoding a few megabytes of images takes."""
    return workers == 0 or (workers is None and _total_bytes(paths) <= _WORKER_THRESHOLD_BYTES)


def decode_files(paths: Sequence[Path], geometry: Geometry, *, workers: int | None = None, batch_size: int = 64,
                 full_decode: bool = True, with_origin: bool = False, ahead: bool = False,
                 first_batch: int | None = None) -> Iterator[list[tuple[int, "np.ndarray | UnreadableImageError | None"]]]:
    """Decode files in worker processes, in order, a batch at a time: [(index, pixels or the error)].

    In this process (see `decodes_in_process`), `ahead` decodes the next batch on a thread while the
    caller works on this one: Pillow releases the interpreter while it decompresses, and PyTorch
    while it computes, so the two overlap; `first_batch` makes the first batch that size (a quick
    one to time), the others `batch_size`.
    """
    from torch.utils.data import DataLoader

    dataset = _DecodeFiles(paths, geometry, full_decode, with_origin)
    if decodes_in_process(paths, workers):  # a plain loop, without the DataLoader's per-batch machinery
        bounds = _batch_bounds(len(paths), batch_size, first_batch)
        batches = ([dataset[index] for index in range(start, end)] for start, end in bounds)
        yield from (_ahead_on_a_thread(batches) if ahead and len(bounds) > 1 else batches)
        return
    if first_batch is not None:
        raise ValueError("first_batch applies to decoding in this process (workers=0)")
    yield from DataLoader(dataset, batch_size=batch_size, num_workers=_default_workers(workers),
                          collate_fn=_as_list)


def _batch_bounds(count: int, batch_size: int, first_batch: int | None) -> list[tuple[int, int]]:
    """(start, end) of each batch: the first `first_batch` long (when given), then `batch_size`."""
    starts = [0] if count else []
    position = min(first_batch or batch_size, count)
    while position < count:
        starts.append(position)
        position += batch_size
    return [(start, min(end, count)) for start, end in zip(starts, [*starts[1:], count])]


def _ahead_on_a_thread(items: Iterator, depth: int = 2) -> Iterator:
    """The items of `items`, produced on a thread up to `depth` ahead of the consumer. An exception
    in the producer is raised in the consumer; a consumer that stops early stops the producer."""
    import queue
    import threading

    ready: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    finished = object()

    def hand_over(entry: tuple) -> bool:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False  # the consumer has gone

    def produce() -> None:
        try:
            for item in items:
                if not hand_over((item, None)):
                    return
            hand_over((finished, None))
        except BaseException as error:  # handed to the consumer, which raises it
            hand_over((finished, error))

    thread = threading.Thread(target=produce, name="cnnlab-decode-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if error is not None:
                raise error
            if item is finished:
                return
            yield item
    finally:
        stop.set()


def _run_decoder(dataset: _DecodeFiles, workers: int | None, progress: Callable[[int], None] | None):
    for batch in decode_files(dataset.paths, dataset.geometry, workers=workers, full_decode=dataset.full_decode,
                              with_origin=dataset.with_origin):
        yield from batch
        if progress:
            progress(len(batch))


def _decode_all(source: Source, geometry: Geometry, workers, progress):
    """(pixels of the readable images, their indices, the errors, their own (width, height) or None
    where the targets do not need them)."""
    import torch

    with_origin = needs_origins(source.targets)
    pixels = torch.empty((len(source), geometry.channels, *geometry.size), dtype=torch.uint8)
    ok = np.zeros(len(source), dtype=bool)
    origins: list[tuple[int, int]] = [(0, 0)] * len(source)
    unreadable = []
    decoder = _DecodeFiles(source.paths, geometry, with_origin=with_origin)
    for index, result in _run_decoder(decoder, workers, progress):
        if isinstance(result, UnreadableImageError):
            unreadable.append(result)
            continue
        if with_origin:
            result, (width, height, _) = result
            origins[index] = (width, height)
        pixels[index] = torch.from_numpy(result)
        ok[index] = True
    good = np.flatnonzero(ok)
    kept_origins = [origins[i] for i in good] if with_origin else None
    return (pixels if ok.all() else pixels[torch.from_numpy(good)]), good, unreadable, kept_origins


def _probe_all(source: Source, workers, *, full_decode: bool, geometry: Geometry):
    unreadable = []
    bad = set()
    for index, result in _run_decoder(_DecodeFiles(source.paths, geometry, full_decode), workers, None):
        if isinstance(result, UnreadableImageError):
            unreadable.append(result)
            bad.add(index)
    good = np.array([i for i in range(len(source)) if i not in bad], dtype=np.int64)
    return good, unreadable


def channel_statistics(imageset: ImageSet, max_images: int = 10_000, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of pixel values scaled to 0–1 (a seeded sample)."""
    import torch

    count = len(imageset)
    chosen = np.random.default_rng(seed).permutation(count)[:max_images] if count > max_images else np.arange(count)
    if imageset.pixels is not None:
        sample = imageset.pixels[torch.from_numpy(chosen)]
    else:
        items = [imageset[int(i)] for i in chosen[:1000]]
        sample = torch.stack([item[0] for item in items if item is not None])
    values = sample.double().div_(255.0).transpose(0, 1).reshape(imageset.geometry.channels, -1)
    mean = values.mean(dim=1)
    std = values.std(dim=1).clamp_min(1e-3)  # a constant channel must not divide by zero
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]
