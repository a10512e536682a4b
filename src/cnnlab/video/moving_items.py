"""A video with a known answer: Fashion-MNIST items moving across a black canvas.

Tests and benchmarks need videos whose every object's position is known in every frame, and no
download: each item (from Fashion-MNIST's test split, scaled as `cnnlab.data.canvases` scales the
detection canvases' items) starts in a lane of its own and moves at a constant velocity, bouncing
off the canvas's edges, so its true box in each frame is exact. The video is encoded with the same
library that decodes it (PyAV), so what a test decodes is what any player would show.

    >>> clip = write_moving_items("items.mp4", fashion_mnist_dir="/usr/share/datasets/fashion-mnist",
    ...                           frames=40, canvas=96, items=3)  # doctest: +SKIP
    >>> clip.boxes[0]   # frame 0: [(item id, class, (x1, y1, x2, y2)), ...]  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.errors import ConfigError


@dataclass
class MovingItemsClip:
    """What `write_moving_items` wrote: the file, its frame rate, and per frame each item's box."""

    path: Path
    fps: int
    classes: list[int]  # per item id, its Fashion-MNIST class
    boxes: list[list[tuple[int, int, tuple[int, int, int, int]]]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.boxes)


@dataclass
class _Mover:
    crop: np.ndarray  # the item's visible pixels
    label: int
    x: float
    y: float
    vx: float
    vy: float

    def step(self, canvas: int) -> None:
        """Move one frame on; bounce off an edge (the velocity's component reverses)."""
        height, width = self.crop.shape
        self.x, self.vx = _bounce(self.x + self.vx, self.vx, canvas - width)
        self.y, self.vy = _bounce(self.y + self.vy, self.vy, canvas - height)

    def box(self) -> tuple[int, int, int, int]:
        left, top = int(round(self.x)), int(round(self.y))
        return left, top, left + self.crop.shape[1], top + self.crop.shape[0]


def _bounce(position: float, velocity: float, limit: float) -> tuple[float, float]:
    if position < 0:
        return -position, -velocity
    if position > limit:
        return 2 * limit - position, -velocity
    return position, velocity


def moving_items_frames(*, fashion_mnist_dir: str | Path, frames: int = 40, canvas: int = 96, items: int = 3,
                        speed: float = 2.0, noise: float = 0.0, seed: int = 0, colour: bool = True
                        ) -> tuple[list[np.ndarray], MovingItemsClip]:
    """The frames (H, W, 3 uint8, or H, W when not `colour`) and their true boxes, without writing a file.

    Items keep to horizontal lanes (one per item, so they never cover each other) and cross the
    canvas at `speed` pixels a frame, with a small vertical drift; `noise` adds Gaussian noise of that
    standard deviation (in 0–255 levels) to every frame, drawn afresh each frame."""
    from cnnlab.data.canvases import _fashion_mnist, scaled_item

    if items < 1 or frames < 1 or canvas < 32:
        raise ConfigError(f"moving items: need items ≥ 1, frames ≥ 1 and canvas ≥ 32 (got {items}, {frames}, {canvas})")
    random = np.random.RandomState(seed)
    pixels, labels = (split["test"] for split in _fashion_mnist(Path(fashion_mnist_dir)))
    lane = canvas / items
    size = max(12, min(int(lane) - 2, 28))
    movers = []
    for number in range(items):
        index = int(random.randint(len(labels)))
        scaled, (x1, y1, x2, y2) = scaled_item(pixels[index], size)
        crop = scaled[y1:y2, x1:x2]
        top = number * lane + (lane - crop.shape[0]) / 2
        direction = 1 if number % 2 == 0 else -1
        movers.append(_Mover(crop, int(labels[index]), float(random.uniform(0, canvas - crop.shape[1])),
                             max(0.0, top), direction * speed * random.uniform(0.7, 1.3),
                             random.uniform(-0.15, 0.15)))
    clip = MovingItemsClip(Path(), 0, [mover.label for mover in movers])
    pictures = []
    for _ in range(frames):
        picture = np.zeros((canvas, canvas), np.float32)
        boxes = []
        for identity, mover in enumerate(movers):
            x1, y1, x2, y2 = mover.box()
            picture[y1:y2, x1:x2] = np.maximum(picture[y1:y2, x1:x2], mover.crop)
            boxes.append((identity, mover.label, (x1, y1, x2, y2)))
            mover.step(canvas)
        if noise:
            picture += random.normal(0, noise, picture.shape)
        picture = np.clip(picture, 0, 255).astype(np.uint8)
        pictures.append(np.repeat(picture[..., None], 3, axis=2) if colour else picture)
        clip.boxes.append(boxes)
    return pictures, clip


def write_moving_items(path: str | Path, *, fashion_mnist_dir: str | Path, frames: int = 40, canvas: int = 96,
                       items: int = 3, fps: int = 25, speed: float = 2.0, noise: float = 0.0, seed: int = 0,
                       codec: str | None = None) -> MovingItemsClip:
    """Write the moving items as a video at `path` (its suffix picks the container; `codec`: default
    H.264 in .mp4/.mkv, MPEG-4 part 2 in .avi, VP9 in .webm), near-lossless so the pixels stay the
    items'; returns the clip with its true boxes."""
    from cnnlab.video.encode import VideoWriter

    pictures, clip = moving_items_frames(fashion_mnist_dir=fashion_mnist_dir, frames=frames, canvas=canvas,
                                         items=items, speed=speed, noise=noise, seed=seed)
    clip.path, clip.fps = Path(path), fps
    with VideoWriter(path, fps=fps, codec=codec, quality="high") as writer:
        for picture in pictures:
            writer.write(picture)
    return clip
