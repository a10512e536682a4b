"""The layouts a segmentation dataset comes in, read into image files and their masks.

    DATA/images/NAME.png + DATA/masks/NAME.png   same stem; each optionally in train/, val/, test/
                                                 sub-folders (`--split` picks one), classes.yaml beside
    DATA.csv with columns image,mask             paths relative to the CSV; classes.yaml beside it
    COCO: DATA/annotations/instances_SPLIT.json  polygons or RLE per object, rasterised: background 0,
          (or one .json file) + the images       categories 1.. in id order, crowd regions void

Masks are read as `masks.py` says; every mask is checked against its image when the dataset is
opened, so a bad one is named before training starts.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnlab.errors import DataError
from cnnlab.tasks.segmentation.masks import (VOID, MaskReading, check_mask_size, decide_reading,
                                             find_classes_file, to_indices)

IMAGE_FOLDERS = ("images", "image", "imgs")
MASK_FOLDERS = ("masks", "mask", "segmentations")
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


@dataclass
class MaskDataset:
    description: str
    image_paths: list[Path]
    masks: list[Path | np.ndarray]  # a mask file, or a mask already rasterised (COCO)
    reading: MaskReading
    notes: list[str] = field(default_factory=list)


def read_segmentation_dataset(path: Path, *, split: str = "train") -> MaskDataset:
    """The images and masks at `path` (a folder or a CSV or COCO JSON file), at `split` where it has splits."""
    if path.is_file() and path.suffix.lower() == ".csv":
        return _read_csv(path)
    if path.is_file() and path.suffix.lower() == ".json" or _coco_files(path):
        return _read_coco(path, split)
    if path.is_dir():
        return _read_folders(path, split)
    raise DataError(f"--data {path}: a segmentation dataset is a folder with images/ and masks/, a CSV of "
                    "image,mask, or COCO JSON with segmentations")


def available_splits(path: Path) -> tuple[str, ...]:
    if _coco_files(path):
        return tuple(split for split in SPLIT_NAMES if any(split in f.stem for f in _coco_files(path)))
    images = _child(path, IMAGE_FOLDERS) if path.is_dir() else None
    if images is None:
        return ()
    return tuple(split for split in SPLIT_NAMES if _child(images, SPLIT_NAMES[split]) is not None)


def _child(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_dir()), None)


# --- images/ + masks/ ---------------------------------------------------------------------------


def _read_folders(root: Path, split: str) -> MaskDataset:
    from cnnlab.data.images import image_files_below

    images, masks = _child(root, IMAGE_FOLDERS), _child(root, MASK_FOLDERS)
    if images is None or masks is None:
        raise DataError(f"--data {root}: expected images/ and masks/ folders (the same file names in both), a CSV "
                        "of image,mask, or COCO JSON in annotations/")
    description = str(root)
    if available_splits(root):
        if _child(images, SPLIT_NAMES.get(split, (split,))) is None:
            raise DataError(f"--data {root}: no {split} split (it has {', '.join(available_splits(root))})")
        images = _child(images, SPLIT_NAMES[split])
        masks = _child(masks, SPLIT_NAMES[split]) or masks / split
        description = f"{root} ({split})"
    by_stem = {path.relative_to(masks).with_suffix("").as_posix(): path for path in image_files_below(masks)} \
        if masks.is_dir() else {}
    image_paths = image_files_below(images)
    pairs = [(image, by_stem.get(image.relative_to(images).with_suffix("").as_posix())) for image in image_paths]
    missing = [image for image, mask in pairs if mask is None]
    if missing:
        raise DataError(f"{len(missing)} of {len(pairs)} images in {images} have no mask of the same name in "
                        f"{masks} (e.g. {missing[0].name}); every image needs its mask")
    classes_file = find_classes_file(root, masks, masks.parent)
    return _checked(description, [image for image, _ in pairs], [mask for _, mask in pairs], classes_file)


# --- CSV ----------------------------------------------------------------------------------------


def _read_csv(path: Path) -> MaskDataset:
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"--data {path}: cannot read the CSV ({error})") from None
    if not rows or not {"image", "mask"} <= set(rows[0]):
        raise DataError(f"--data {path}: a segmentation CSV needs the columns image,mask (paths relative to it)")
    images, masks = [], []
    for number, row in enumerate(rows, start=2):
        image, mask = path.parent / row["image"].strip(), path.parent / row["mask"].strip()
        for kind, file in (("image", image), ("mask", mask)):
            if not file.is_file():
                raise DataError(f"{path}, line {number}: {kind} {file} does not exist")
        images.append(image)
        masks.append(mask)
    return _checked(str(path), images, masks, find_classes_file(path.parent))


def _checked(description: str, images: list[Path], masks: list[Path], classes_file: Path | None) -> MaskDataset:
    """Decide how the masks read, then check every one against its image (size, values)."""
    from PIL import Image

    notes: list[str] = []
    reading = decide_reading(masks, classes_file, notes)
    for image, mask in zip(images, masks):
        with Image.open(image) as opened:
            image_size = opened.size
        indices = to_indices(mask, reading)
        check_mask_size(image, mask, image_size, (indices.shape[1], indices.shape[0]))
    return MaskDataset(description, images, list(masks), reading, notes)


# --- COCO ---------------------------------------------------------------------------------------


def _coco_files(path: Path) -> list[Path]:
    folder = path / "annotations"
    return sorted(folder.glob("*.json")) if path.is_dir() and folder.is_dir() else []


def _coco_file(path: Path, split: str) -> Path:
    if path.is_file():
        return path
    files = _coco_files(path)
    chosen = [f for f in files if f.stem.endswith(split) or f.stem.endswith(f"{split}2017")] or \
        ([files[0]] if len(files) == 1 else [])
    if not chosen:
        raise DataError(f"--data {path}: no COCO file for the {split} split in annotations/ "
                        f"(found {', '.join(f.name for f in files)})")
    return chosen[0]


def _read_coco(path: Path, split: str) -> MaskDataset:
    """Every image of a COCO file with its objects painted on one mask: the larger objects first, so a
    small object on a large one stays visible; crowd regions are void."""
    from PIL import Image

    file = _coco_file(path, split)
    try:
        document = json.loads(file.read_text(encoding="utf-8"))
        categories = sorted(document["categories"], key=lambda c: int(c["id"]))
        images_listed = document["images"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{file}: not COCO JSON with images and categories ({error})") from None
    class_of = {int(c["id"]): index + 1 for index, c in enumerate(categories)}
    by_image: dict[int, list[dict[str, Any]]] = {}
    for annotation in document.get("annotations", []):
        by_image.setdefault(int(annotation["image_id"]), []).append(annotation)
    image_paths, masks = [], []
    for entry in images_listed:
        image = _coco_image_path(file, entry["file_name"], split)
        height, width = int(entry["height"]), int(entry["width"])
        with Image.open(image) as opened:
            check_mask_size(image, f"{file} (image id {entry['id']})", opened.size, (width, height))
        mask = np.zeros((height, width), np.uint8)
        objects = sorted(by_image.get(int(entry["id"]), []), key=lambda a: -float(a.get("area", 0)))
        for annotation in objects:
            where = f"{file}, annotation {annotation.get('id')}"
            region = _rasterise(annotation.get("segmentation"), height, width, where).astype(bool)
            if int(annotation["category_id"]) not in class_of:
                raise DataError(f"{where}: category {annotation['category_id']} is not in the file's categories")
            mask[region] = VOID if annotation.get("iscrowd") else class_of[int(annotation["category_id"])]
        image_paths.append(image)
        masks.append(mask)
    reading = MaskReading(["background"] + [str(c["name"]) for c in categories])
    return MaskDataset(f"{file}", image_paths, masks, reading)


def _coco_image_path(file: Path, name: str, split: str) -> Path:
    root = file.parent.parent if file.parent.name == "annotations" else file.parent
    for candidate in (root / "images" / split / name, root / "images" / name, root / split / name,
                      file.parent / name, root / name):
        if candidate.is_file():
            return candidate
    raise DataError(f"{file}: image {name} not found under {root}/images/ (or beside the JSON)")


def _rasterise(segmentation: Any, height: int, width: int, where: str) -> np.ndarray:
    from cnnlab.tasks.segmentation.rle import coco_rle_to_mask, polygon_to_mask

    if isinstance(segmentation, list):
        mask = np.zeros((height, width), np.uint8)
        for polygon in segmentation:
            mask |= polygon_to_mask(polygon, height, width)
        return mask
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size", [height, width])
        if list(size) != [height, width]:
            raise DataError(f"{where}: an RLE of size {size} on a {width}×{height} image (size is [height, width])")
        return coco_rle_to_mask(segmentation["counts"], height, width, where)
    raise DataError(f"{where}: no segmentation (polygons or RLE) to make a mask of")
