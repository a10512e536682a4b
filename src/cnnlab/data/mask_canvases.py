"""Fashion-MNIST canvases with masks: a segmentation dataset that needs no download.

The canvases are laid out exactly as the detection canvases are (`cnnlab.data.canvases`: items
scaled 0.8–1.6×, some touching, pasted with max()), on smaller squares (64 pixels by default, up to
3 items). Each canvas's mask gives every pixel of an item's silhouette that item's class + 1 (its
visible pixels: bilinear scaling's faint fringe, below 8 of 255, is background), and 0 to the
background; where two items overlap, the pixel belongs to the one that is brighter there, as the
image shows it. Classes: background, then Fashion-MNIST's 10 in order.

Training and validation canvases use items of Fashion-MNIST's train split, test canvases items of
its test split. Written as images/{train,val,test}/NAME.png + masks/{train,val,test}/NAME.png
(mode P, class indices, a palette for viewing), classes.yaml and masks.json (arguments,
fingerprint, and every item's provenance). The same arguments give the same bytes.

    >>> root = write_mask_canvases("masks", fashion_mnist_dir="/usr/share/datasets/fashion-mnist",
    ...                            train_images=40, val_images=10, test_images=10)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from cnnlab.data import canvases
from cnnlab.errors import DataError

FORMAT_VERSION = 1  # bump when the generation changes, so cached copies are regenerated
MASK_DEFAULTS = MappingProxyType(
    {"canvas": 64, "train_images": 2000, "val_images": 300, "test_images": 500, "max_items": 3}
)
MANIFEST_NAME = "masks.json"
CLASS_NAMES = ("background", *canvases.FASHION_MNIST_CLASSES)


def _arguments(canvas: int, train_images: int, val_images: int, test_images: int, max_items: int,
               seed: int) -> dict[str, Any]:
    return {"canvas": canvas, "train_images": train_images, "val_images": val_images, "test_images": test_images,
            "max_items": max_items, "seed": seed}


def masks_fingerprint(*, canvas: int = MASK_DEFAULTS["canvas"], train_images: int = MASK_DEFAULTS["train_images"],
                      val_images: int = MASK_DEFAULTS["val_images"], test_images: int = MASK_DEFAULTS["test_images"],
                      max_items: int = MASK_DEFAULTS["max_items"], seed: int = 0) -> str:
    """What `write_mask_canvases` makes of these arguments, with this generator and the canvases' layout."""
    recipe = {**_arguments(canvas, train_images, val_images, test_images, max_items, seed),
              "version": FORMAT_VERSION, "layout": canvases.canvases_fingerprint(canvas=canvas, max_items=max_items)}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"v{FORMAT_VERSION}-{digest[:12]}"


def existing_fingerprint(root: str | Path) -> str | None:
    try:
        return json.loads((Path(root) / MANIFEST_NAME).read_text(encoding="utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_mask_canvases(root: str | Path, *, fashion_mnist_dir: str | Path, canvas: int = MASK_DEFAULTS["canvas"],
                        train_images: int = MASK_DEFAULTS["train_images"],
                        val_images: int = MASK_DEFAULTS["val_images"],
                        test_images: int = MASK_DEFAULTS["test_images"],
                        max_items: int = MASK_DEFAULTS["max_items"], seed: int = 0) -> Path:
    """Generate the canvases and their masks (see the module docstring) into `root`; returns `root`.
    Built beside `root` and moved into place when complete."""
    canvases._check_arguments(canvas, train_images, val_images, test_images, max_items, seed)
    root = Path(root)
    _check_replaceable(root)
    pixels, labels = canvases._fashion_mnist(Path(fashion_mnist_dir))
    pools = canvases.item_pools(len(labels["train"]), len(labels["test"]), seed)
    counts = {"train": train_images, "val": val_images, "test": test_images}
    root.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        os.chmod(building, 0o755)
        provenance = {}
        for split, count in counts.items():
            source = "test" if split == "test" else "train"
            random = np.random.RandomState([seed, canvases._SPLIT_CODES[split]])
            layouts = [canvases._layout_canvas(random, pools[split], pixels[source], labels[source], canvas, max_items)
                       for _ in range(count)]
            provenance[split] = _write_split(building, split, layouts, canvas, source)
        (building / "classes.yaml").write_text("".join(f"- {json.dumps(name)}\n" for name in CLASS_NAMES),
                                               encoding="utf-8")
        manifest = {"fingerprint": masks_fingerprint(**_arguments(canvas, train_images, val_images, test_images,
                                                                  max_items, seed)),
                    "arguments": _arguments(canvas, train_images, val_images, test_images, max_items, seed),
                    "classes": list(CLASS_NAMES), "splits": provenance}
        (building / MANIFEST_NAME).write_text(json.dumps(manifest) + "\n", encoding="utf-8")  # last: complete
        if root.exists():
            shutil.rmtree(root)
        building.rename(root)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return root


def _check_replaceable(root: Path) -> None:
    if root.exists() and not (root.is_dir() and (not any(root.iterdir()) or (root / MANIFEST_NAME).is_file())):
        raise DataError(f"{root}: exists and holds something other than mask canvases; name a new or empty folder")


def render_with_mask(items: list[Any], canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, mask) of one canvas: pixels as the detection canvases render them, mask = class + 1 where
    an item's pixel is visible and at least as bright as what was there."""
    pixels = np.zeros((canvas, canvas), np.uint8)
    mask = np.zeros((canvas, canvas), np.uint8)
    for item in items:
        x1, y1, x2, y2 = item.box
        region, mask_region = pixels[y1:y2, x1:x2], mask[y1:y2, x1:x2]
        wins = (item.crop > 0) & (item.crop >= region)
        mask_region[wins] = item.label + 1
        np.maximum(region, item.crop, out=region)
    return pixels, mask


def _write_split(root: Path, split: str, layouts: list[list[Any]], canvas: int, source: str) -> list[dict[str, Any]]:
    from PIL import Image

    from cnnlab.tasks.segmentation.draw import default_colours, mask_picture

    images, masks = root / "images" / split, root / "masks" / split
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    colours = default_colours(len(CLASS_NAMES))
    width = max(5, len(str(len(layouts))))
    provenance = []
    for number, items in enumerate(layouts):
        name = f"{split}_{number:0{width}d}.png"
        pixels, mask = render_with_mask(items, canvas)
        Image.fromarray(pixels).save(images / name, format="PNG")  # no timestamp chunk: the same bytes
        mask_picture(mask, colours).save(masks / name, format="PNG")
        provenance.append({"file": name, "items": [
            {"split": source, "index": item.index, "class": item.label, "size": item.size, "box": list(item.box)}
            for item in items]})
    return provenance
