"""Fashion-MNIST canvases: an object-detection dataset that needs no download.

Detection needs images with several objects, their boxes and their classes. Public detection sets
are gigabytes behind a download; this one is generated in seconds from the Fashion-MNIST copy
cnnlab already finds offline (Debian installs it in /usr/share/datasets/fashion-mnist/), so demos,
tests and benchmarks run anywhere, and every machine gets the same bytes.

Each canvas is a black square (`canvas` pixels, 96 by default) holding 0 to `max_items`
Fashion-MNIST items, each scaled by a random factor between 0.8 and 1.6 (22 to 45 pixels across),
so objects come in several sizes:

* about 8% of the canvases are empty (background images, which a detector must learn to leave empty);
* about a third of the items are placed against an item already there, touching it or reaching up
  to 3 pixels into its box; no two boxes overlap by an IoU of 0.3 or more, and no box lies more
  than half inside another;
* items are pasted with max(), so where two overlap both stay visible, as on Fashion-MNIST's
  black background;
* an item's box is the tight box of its visible pixels after scaling: pixels that bilinear scaling
  leaves below 8 (of 255) are set to 0 first, so no invisible fringe widens the box.

The training and validation canvases use items of Fashion-MNIST's train split (validation from a
fixed 10,000 of them that training never uses), the test canvases items of its test split, so a
test score measures items no model has seen. The classes are Fashion-MNIST's 10, in order.

The canvases are written in a detection layout (YOLO by default, COCO and Pascal VOC too; see
cnnlab.tasks.detection.formats), so that they show what users' data should look like, and read back
with `read_detection_dataset`. `canvases.json` beside them records the arguments, a fingerprint of
them, and where every item came from (its split and index in Fashion-MNIST, its size, its box).

    >>> root = write_fashion_canvases("canvases", fashion_mnist_dir="/usr/share/datasets/fashion-mnist",
    ...                               train_images=40, val_images=10, test_images=10)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from cnnlab.errors import ConfigError, DataError

FORMAT_VERSION = 1  # bump when the generation changes, so cached copies are regenerated
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CANVAS_DEFAULTS = MappingProxyType(
    {"canvas": 96, "train_images": 2000, "val_images": 300, "test_images": 500, "max_items": 4}
)
MANIFEST_NAME = "canvases.json"

ITEM_SIDE = 28  # Fashion-MNIST's images
SCALE_RANGE = (0.8, 1.6)
EMPTY_SHARE = 0.08
TOUCH_SHARE = 0.35  # of the items after the first, placed against one already there
TOUCH_REACH_PX = 3  # how far a touching item may reach into its neighbour's box
MAX_IOU = 0.3
MAX_COVERED = 0.5  # of the smaller box's area, inside the other box
VISIBLE_LEVEL = 8  # scaled pixels below this are set to 0
PLACEMENT_TRIES = 30  # positions tried for an item before it is left out
VALIDATION_ITEMS = 10_000  # train-split items kept for the validation canvases
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}  # seeds each split's random stream


def canvases_fingerprint(*, format: str = "yolo", canvas: int = CANVAS_DEFAULTS["canvas"],
                         train_images: int = CANVAS_DEFAULTS["train_images"],
                         val_images: int = CANVAS_DEFAULTS["val_images"],
                         test_images: int = CANVAS_DEFAULTS["test_images"],
                         max_items: int = CANVAS_DEFAULTS["max_items"], seed: int = 0) -> str:
    """A short string naming what `write_fashion_canvases` makes of these arguments (and of this
    version of the generator): a cached copy with another fingerprint must be regenerated.

    >>> canvases_fingerprint() == canvases_fingerprint(seed=0), canvases_fingerprint() == canvases_fingerprint(seed=1)
    (True, False)
    """
    arguments = _arguments(format, canvas, train_images, val_images, test_images, max_items, seed)
    recipe = {**arguments, "version": FORMAT_VERSION, "scale": SCALE_RANGE, "empty": EMPTY_SHARE,
              "touch": [TOUCH_SHARE, TOUCH_REACH_PX], "max_iou": MAX_IOU, "max_covered": MAX_COVERED, "visible": VISIBLE_LEVEL,
              "tries": PLACEMENT_TRIES, "validation_items": VALIDATION_ITEMS}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"v{FORMAT_VERSION}-{digest[:12]}"


def existing_fingerprint(root: str | Path) -> str | None:
    """The fingerprint of the canvases at `root`, or None when there are none (or only a partial copy)."""
    try:
        return read_manifest(root)["fingerprint"]
    except (DataError, KeyError, TypeError):
        return None


def write_fashion_canvases(root: str | Path, *, fashion_mnist_dir: str | Path, format: str = "yolo",
                           canvas: int = CANVAS_DEFAULTS["canvas"],
                           train_images: int = CANVAS_DEFAULTS["train_images"],
                           val_images: int = CANVAS_DEFAULTS["val_images"],
                           test_images: int = CANVAS_DEFAULTS["test_images"],
                           max_items: int = CANVAS_DEFAULTS["max_items"], seed: int = 0) -> Path:
    """Generate the canvases (see the module docstring) into `root`, in `format`; returns `root`.

    The same arguments give the same bytes. `root` must be absent, empty, or earlier canvases (a
    folder with canvases.json), which are replaced; the new copy is built beside it and moved into
    place when complete, so `root` never holds a partial copy.
    """
    from cnnlab.tasks.detection.formats import FORMATS

    if format not in FORMATS:
        raise ConfigError(f"format={format!r}: the canvases can be written as {', '.join(FORMATS)}")
    _check_arguments(canvas, train_images, val_images, test_images, max_items, seed)
    root = Path(root)
    _check_replaceable(root)
    arguments = _arguments(format, canvas, train_images, val_images, test_images, max_items, seed)
    pixels, labels = _fashion_mnist(Path(fashion_mnist_dir))
    pools = item_pools(len(labels["train"]), len(labels["test"]), seed)
    counts = {"train": train_images, "val": val_images, "test": test_images}
    root.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        os.chmod(building, 0o755)
        provenance = {}
        for split, count in counts.items():
            source = "test" if split == "test" else "train"
            random = np.random.RandomState([seed, _SPLIT_CODES[split]])
            layouts = [_layout_canvas(random, pools[split], pixels[source], labels[source], canvas, max_items)
                       for _ in range(count)]
            provenance[split] = _write_split(building, split, layouts, canvas, format, source)
        manifest = _manifest_text(canvases_fingerprint(**arguments), arguments, provenance)
        (building / MANIFEST_NAME).write_text(manifest, encoding="utf-8")  # last: it marks a complete copy
        _move_into_place(building, root)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return root


def _arguments(format: str, canvas: int, train_images: int, val_images: int, test_images: int,
               max_items: int, seed: int) -> dict[str, Any]:
    return {"format": format, "canvas": canvas, "train_images": train_images, "val_images": val_images,
            "test_images": test_images, "max_items": max_items, "seed": seed}


def _check_arguments(canvas: int, train_images: int, val_images: int, test_images: int, max_items: int,
                     seed: int) -> None:
    largest = round(ITEM_SIDE * SCALE_RANGE[1])
    if canvas < largest:
        raise ConfigError(f"canvas={canvas}: the largest items are {largest} pixels; use {largest} or more")
    if max_items < 1:
        raise ConfigError(f"max_items={max_items}: a canvas must be able to hold at least 1 item")
    counts = {"train_images": train_images, "val_images": val_images, "test_images": test_images, "seed": seed}
    for name, value in counts.items():
        if value < 0:
            raise ConfigError(f"{name}={value}: must be 0 or more")


def _manifest_text(fingerprint: str, arguments: dict[str, Any], provenance: dict[str, list[Any]]) -> str:
    """canvases.json, one canvas per line (what json.dumps(indent=...) spreads over a dozen)."""
    lines = ["{", f' "fingerprint": {json.dumps(fingerprint)},', f' "arguments": {json.dumps(arguments)},',
             f' "classes": {json.dumps(list(FASHION_MNIST_CLASSES))},', ' "splits": {']
    for split_number, (split, canvases) in enumerate(provenance.items()):
        lines.append(f"  {json.dumps(split)}: [")
        lines += [f"   {json.dumps(entry)}" + ("," if number < len(canvases) - 1 else "")
                  for number, entry in enumerate(canvases)]
        lines.append("  ]" + ("," if split_number < len(provenance) - 1 else ""))
    return "\n".join(lines + [" }", "}"]) + "\n"


def read_manifest(root: str | Path) -> dict[str, Any]:
    """canvases.json of the canvases at `root`: arguments, fingerprint, and every item's provenance."""
    path = Path(root) / MANIFEST_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the canvases' manifest ({error})") from None


def _check_replaceable(root: Path) -> None:
    if root.exists() and not (root.is_dir() and (not any(root.iterdir()) or (root / MANIFEST_NAME).is_file())):
        raise DataError(f"{root}: exists and holds something other than canvases; name a new or empty folder")


def _move_into_place(building: Path, root: Path) -> None:
    if root.exists():
        _check_replaceable(root)
        shutil.rmtree(root)
    building.rename(root)


def _fashion_mnist(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    from cnnlab.data.idx import find_idx_splits, read_idx_pair

    splits = find_idx_splits(folder)
    if set(splits) != {"train", "test"}:
        raise DataError(f"{folder}: expected Fashion-MNIST's train-* and t10k-* IDX files, found splits "
                        f"{sorted(splits) or 'none'}")
    pixels, labels = {}, {}
    for split, (images, label_file) in splits.items():
        pixels[split], labels[split] = read_idx_pair(images, label_file)
        if pixels[split].shape[1:] != (ITEM_SIDE, ITEM_SIDE) or labels[split].max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(f"{images}: not Fashion-MNIST (28×28 images of 10 classes expected)")
    return pixels, labels


def item_pools(train_count: int, test_count: int, seed: int) -> dict[str, np.ndarray]:
    """The item indices each split's canvases draw from: validation's are train items training never uses."""
    shuffled = np.random.RandomState([seed, 0]).permutation(train_count)
    reserved = min(VALIDATION_ITEMS, train_count // 6)
    return {"train": np.sort(shuffled[reserved:]), "val": np.sort(shuffled[:reserved]),
            "test": np.arange(test_count)}


# --- laying out one canvas ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Item:
    index: int  # in its Fashion-MNIST split
    label: int
    size: int  # side of the scaled item, pixels
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 of its visible pixels on the canvas
    crop: np.ndarray  # those pixels


def scaled_item(item: np.ndarray, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A 28×28 item scaled to size×size (bilinear), faint pixels set to 0, and the tight box of the rest.

    Returns (scaled pixels, (x1, y1, x2, y2) in them).
    """
    from PIL import Image

    scaled = np.asarray(Image.fromarray(item).resize((size, size), Image.Resampling.BILINEAR)).copy()
    scaled[scaled < VISIBLE_LEVEL] = 0
    rows, columns = np.flatnonzero(scaled.any(axis=1)), np.flatnonzero(scaled.any(axis=0))
    if not len(rows):
        return scaled, (0, 0, 0, 0)
    return scaled, (int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1)


def _layout_canvas(random: np.random.RandomState, pool: np.ndarray, pixels: np.ndarray, labels: np.ndarray,
                   canvas: int, max_items: int) -> list[_Item]:
    count = 0 if random.random_sample() < EMPTY_SHARE else random.randint(1, max_items + 1)
    placed: list[_Item] = []
    for _ in range(count):
        index = int(pool[random.randint(len(pool))])
        size = round(ITEM_SIDE * random.uniform(*SCALE_RANGE))
        scaled, (x1, y1, x2, y2) = scaled_item(pixels[index], size)
        width, height = x2 - x1, y2 - y1
        if width == 0 or width > canvas or height > canvas:
            continue
        against = placed[random.randint(len(placed))] if placed and random.random_sample() < TOUCH_SHARE else None
        corner = _free_corner(random, against, placed, width, height, canvas)
        if corner is not None:
            left, top = corner
            placed.append(_Item(index, int(labels[index]), size, (left, top, left + width, top + height),
                                scaled[y1:y2, x1:x2]))
    return placed


def _free_corner(random: np.random.RandomState, against: _Item | None, placed: list[_Item],
                 width: int, height: int, canvas: int) -> tuple[int, int] | None:
    """A top-left corner for a width×height box, inside the canvas and apart enough from every box;
    against a neighbour's edge when `against` is given (for the first half of the tries). None after
    PLACEMENT_TRIES tries."""
    for attempt in range(PLACEMENT_TRIES):
        if against is None or attempt >= PLACEMENT_TRIES // 2:  # no room beside it: anywhere will do
            left, top = random.randint(canvas - width + 1), random.randint(canvas - height + 1)
        else:
            left, top = _touching_corner(random, against.box, width, height)
        box = (left, top, left + width, top + height)
        inside = left >= 0 and top >= 0 and box[2] <= canvas and box[3] <= canvas
        if inside and all(_apart_enough(box, item.box) for item in placed):
            return left, top
    return None


def _touching_corner(random: np.random.RandomState, neighbour: tuple[int, int, int, int],
                     width: int, height: int) -> tuple[int, int]:
    """A corner putting the box against one side of `neighbour`, reaching 0 to TOUCH_REACH_PX into it."""
    x1, y1, x2, y2 = neighbour
    reach = random.randint(TOUCH_REACH_PX + 1)
    side = random.randint(4)
    along_x = random.randint(x1 - width + 1, x2)  # some overlap of the two boxes' x ranges
    along_y = random.randint(y1 - height + 1, y2)
    if side == 0:
        return x1 - width + reach, along_y  # left of it
    if side == 1:
        return x2 - reach, along_y  # right of it
    if side == 2:
        return along_x, y1 - height + reach  # above it
    return along_x, y2 - reach  # below it


def _apart_enough(first: tuple[int, ...], second: tuple[int, ...]) -> bool:
    """IoU below MAX_IOU, and neither box more than MAX_COVERED inside the other: with IoU alone a
    small item could sit wholly inside a large one's box."""
    intersection = _intersection(first, second)
    smaller = min(_area(first), _area(second))
    return box_iou(first, second) < MAX_IOU and intersection < MAX_COVERED * smaller


def _area(box: tuple[int, ...]) -> int:
    return (box[2] - box[0]) * (box[3] - box[1])


def _intersection(first: tuple[int, ...], second: tuple[int, ...]) -> int:
    width = min(first[2], second[2]) - max(first[0], second[0])
    height = min(first[3], second[3]) - max(first[1], second[1])
    return width * height if width > 0 and height > 0 else 0


def box_iou(first: tuple[int, ...], second: tuple[int, ...]) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes.

    >>> box_iou((0, 0, 10, 10), (5, 0, 15, 10))
    0.3333333333333333
    """
    intersection = _intersection(first, second)
    return intersection / (_area(first) + _area(second) - intersection) if intersection else 0.0


# --- writing ------------------------------------------------------------------------------------


def _write_split(root: Path, split: str, layouts: list[list[_Item]], canvas: int, format: str,
                 source: str) -> list[dict[str, Any]]:
    """Write the canvases of one split as PNG files and in `format`; returns their provenance."""
    from PIL import Image

    from cnnlab.tasks.detection.formats import ImageBoxes, image_folder_for, write_detection_dataset

    folder = image_folder_for(format, root, split)
    folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(len(layouts))))
    images, annotations, provenance = [], [], []
    for number, items in enumerate(layouts):
        path = folder / f"{split}_{number:0{width}d}.png"
        Image.fromarray(_render(items, canvas)).save(path, format="PNG")  # no timestamp chunk
        images.append(path)
        annotations.append(ImageBoxes.of([item.box for item in items], [item.label for item in items]))
        provenance.append({"file": path.name, "items": [
            {"split": source, "index": item.index, "class": item.label, "size": item.size, "box": list(item.box)}
            for item in items]})
    written = _Written(images, annotations, [(canvas, canvas)] * len(images), list(FASHION_MNIST_CLASSES))
    write_detection_dataset(written, root, split, format=format)
    return provenance


def _render(items: list[_Item], canvas: int) -> np.ndarray:
    pixels = np.zeros((canvas, canvas), np.uint8)
    for item in items:
        x1, y1, x2, y2 = item.box
        pixels[y1:y2, x1:x2] = np.maximum(pixels[y1:y2, x1:x2], item.crop)  # overlaps stay visible
    return pixels


@dataclass
class _Written:
    """The four lists the detection writers need."""

    image_paths: list[Path]
    annotations: list[Any]
    image_sizes: list[tuple[int, int]]
    class_names: list[str]
