"""Fashion-MNIST canvases with one mask per item: an instance-segmentation dataset needing no download.

The canvases are those of `fashion-mnist-masks` (`cnnlab.data.mask_canvases`: the detection
canvases' layout, items scaled 0.8–1.6×, some touching, on 64-pixel squares, up to 3 items): each
item's instance mask is its visible silhouette there (where it is drawn and at least as bright as what
was under it), so masks never overlap. Written in COCO's layout, every mask as an uncompressed RLE
(exact, column by column, as pycocotools reads it):

    images/{train,val,test}/NAME.png
    annotations/instances_{train,val,test}.json     categories 1-10: Fashion-MNIST's classes
    instances.json                                  arguments, fingerprint, every item's provenance

Training and validation canvases use items of Fashion-MNIST's train split, test canvases items of
its test split. The same arguments give the same bytes.

    >>> root = write_instance_canvases("instances", fashion_mnist_dir="/usr/share/datasets/fashion-mnist",
    ...                                train_images=40, val_images=10, test_images=10)  # doctest: +SKIP
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
INSTANCE_DEFAULTS = MappingProxyType(
    {"canvas": 64, "train_images": 2000, "val_images": 300, "test_images": 500, "max_items": 3}
)
MANIFEST_NAME = "instances.json"
MIN_PIXELS = 4  # an item almost hidden by its neighbours (fewer visible pixels) is not an object to find


def _arguments(canvas: int, train_images: int, val_images: int, test_images: int, max_items: int,
               seed: int) -> dict[str, Any]:
    return {"canvas": canvas, "train_images": train_images, "val_images": val_images, "test_images": test_images,
            "max_items": max_items, "seed": seed}


def instances_fingerprint(*, canvas: int = INSTANCE_DEFAULTS["canvas"],
                          train_images: int = INSTANCE_DEFAULTS["train_images"],
                          val_images: int = INSTANCE_DEFAULTS["val_images"],
                          test_images: int = INSTANCE_DEFAULTS["test_images"],
                          max_items: int = INSTANCE_DEFAULTS["max_items"], seed: int = 0) -> str:
    """What `write_instance_canvases` makes of these arguments, with this generator and the layout."""
    recipe = {**_arguments(canvas, train_images, val_images, test_images, max_items, seed),
              "version": FORMAT_VERSION, "layout": canvases.canvases_fingerprint(canvas=canvas, max_items=max_items)}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()
    return f"v{FORMAT_VERSION}-{digest[:12]}"


def existing_fingerprint(root: str | Path) -> str | None:
    try:
        return json.loads((Path(root) / MANIFEST_NAME).read_text(encoding="utf-8"))["fingerprint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_instance_canvases(root: str | Path, *, fashion_mnist_dir: str | Path,
                            canvas: int = INSTANCE_DEFAULTS["canvas"],
                            train_images: int = INSTANCE_DEFAULTS["train_images"],
                            val_images: int = INSTANCE_DEFAULTS["val_images"],
                            test_images: int = INSTANCE_DEFAULTS["test_images"],
                            max_items: int = INSTANCE_DEFAULTS["max_items"], seed: int = 0) -> Path:
    """Generate the canvases and their instance masks (see the module docstring) into `root`; returns
    `root`. Built beside `root` and moved into place when complete."""
    canvases._check_arguments(canvas, train_images, val_images, test_images, max_items, seed)
    root = Path(root)
    if root.exists() and not (root.is_dir() and (not any(root.iterdir()) or (root / MANIFEST_NAME).is_file())):
        raise DataError(f"{root}: exists and holds something other than instance canvases; name a new or empty folder")
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
        arguments = _arguments(canvas, train_images, val_images, test_images, max_items, seed)
        manifest = {"fingerprint": instances_fingerprint(**arguments), "arguments": arguments,
                    "classes": list(canvases.FASHION_MNIST_CLASSES), "splits": provenance}
        (building / MANIFEST_NAME).write_text(json.dumps(manifest) + "\n", encoding="utf-8")  # last: complete
        if root.exists():
            shutil.rmtree(root)
        building.rename(root)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    return root


def render_with_instances(items: list[Any], canvas: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, instance ids) of one canvas: ids 1.. in the items' order where an item's pixel is visible
    and at least as bright as what was there (fashion-mnist-masks' rule), 0 elsewhere."""
    pixels = np.zeros((canvas, canvas), np.uint8)
    ids = np.zeros((canvas, canvas), np.uint8)
    for number, item in enumerate(items, start=1):
        x1, y1, x2, y2 = item.box
        region, id_region = pixels[y1:y2, x1:x2], ids[y1:y2, x1:x2]
        id_region[(item.crop > 0) & (item.crop >= region)] = number
        np.maximum(region, item.crop, out=region)
    return pixels, ids


def coco_rle(mask: np.ndarray) -> dict[str, Any]:
    """A 0/1 mask as COCO's uncompressed RLE: runs column by column, starting with a run of 0s.

    >>> coco_rle(np.array([[0, 1], [1, 1]], np.uint8))
    {'size': [2, 2], 'counts': [1, 3]}
    """
    flat = np.asarray(mask, bool).T.reshape(-1)  # column by column
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    runs = np.diff(np.r_[0, changes, len(flat)]).tolist()
    if len(flat) and flat[0]:
        runs = [0, *runs]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": [int(run) for run in runs]}


def _write_split(root: Path, split: str, layouts: list[list[Any]], canvas: int, source: str) -> list[dict[str, Any]]:
    from PIL import Image

    images = root / "images" / split
    images.mkdir(parents=True)
    (root / "annotations").mkdir(exist_ok=True)
    width = max(5, len(str(len(layouts))))
    entries, annotations, provenance = [], [], []
    for number, items in enumerate(layouts):
        name = f"{split}_{number:0{width}d}.png"
        pixels, ids = render_with_instances(items, canvas)
        Image.fromarray(pixels).save(images / name, format="PNG")  # no timestamp chunk: the same bytes
        entries.append({"id": number + 1, "file_name": name, "width": canvas, "height": canvas})
        kept = []
        for index, item in enumerate(items, start=1):
            mask = ids == index
            if mask.sum() < MIN_PIXELS:
                continue
            ys, xs = np.nonzero(mask)
            annotations.append({"id": len(annotations) + 1, "image_id": number + 1, "category_id": item.label + 1,
                                "segmentation": coco_rle(mask), "area": int(mask.sum()), "iscrowd": 0,
                                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                         int(ys.max() - ys.min() + 1)]})
            kept.append({"split": source, "index": item.index, "class": item.label, "size": item.size,
                         "box": list(item.box), "pixels": int(mask.sum())})
        provenance.append({"file": name, "items": kept})
    document = {"images": entries, "annotations": annotations,
                "categories": [{"id": c + 1, "name": n} for c, n in enumerate(canvases.FASHION_MNIST_CLASSES)]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(document) + "\n", encoding="utf-8")
    return provenance
