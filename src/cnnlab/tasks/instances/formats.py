"""The layouts an instance-segmentation dataset comes in: COCO (polygons or RLE) and YOLO-seg.

    COCO       DATA/annotations/instances_SPLIT.json + the images (or one .json file), as detection
               finds them (tasks/detection/formats_coco.py: splits, image folders, categories);
               each annotation's "segmentation" is a list of polygons [x1, y1, x2, y2, ...] in pixels,
               or RLE {"size": [h, w], "counts": [...] or "compressed"}; "iscrowd" 1 marks a crowd region
    YOLO-seg   data.yaml, or images/ + labels/ (+ classes.txt), as detection finds them
               (tasks/detection/formats_yolo.py); each line of a label file is one object:
               `class x1 y1 x2 y2 ...`, a polygon of at least 3 points, coordinates 0-1 of the image

The same object written in both gives the same mask (tests/tasks/instances/test_formats.py).
Unlike detection's readers, which drop and count what they cannot use, an object that cannot be
one instance mask stops reading with its place named: a polygon of fewer than 3 points or an odd
number of coordinates, a coordinate outside the image, a class that is not declared, a YOLO box
line (4 numbers) where an outline is needed, an RLE whose size is not its image's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import DataError
from cnnlab.tasks.instances.targets import CROWD, NORMAL, ImageInstances

EDGE_TOLERANCE = 1e-6  # YOLO's normalised coordinates: rounding may put an edge a hair past 1


@dataclass
class InstanceDataset:
    description: str
    image_paths: list[Path]
    images: list[ImageInstances]
    class_names: list[str]
    category_ids: list[int]


def read_instance_dataset(path: Path, *, split: str = "train") -> InstanceDataset:
    """The images and objects at `path` (COCO or YOLO-seg, see the module docstring), at `split`."""
    from cnnlab.tasks.detection.formats_yolo import find_yolo_yaml, is_yolo_folder

    if path.is_file() and path.suffix.lower() == ".json" or path.is_dir() and (path / "annotations").is_dir():
        return read_coco_instances(path, split)
    if path.is_file() and path.suffix.lower() in (".yaml", ".yml") or path.is_dir() and (
            find_yolo_yaml(path) is not None or is_yolo_folder(path)):
        return read_yolo_instances(path, split)
    raise DataError(f"--data {path}: an instance-segmentation dataset is COCO JSON with segmentations "
                    "(annotations/instances_SPLIT.json + images) or YOLO-seg (data.yaml, or images/ + labels/ "
                    "with one `class x1 y1 x2 y2 ...` polygon per line)")


def available_splits(path: Path) -> tuple[str, ...]:
    from cnnlab.tasks.detection.formats import available_splits as detection_splits

    return tuple(detection_splits(path))


# --- COCO ------------------------------------------------------------------------------------------


def read_coco_instances(path: Path, split: str) -> InstanceDataset:
    from cnnlab.tasks.detection.formats_base import BoxReport, display_path, upright_size
    from cnnlab.tasks.detection.formats_coco import (_INSTANCES_FILE, _categories, _choose_image_folder,
                                                     _image_entries, _image_folder_candidates, _load_json,
                                                     coco_annotation_files)

    if path.is_file():
        if split != "train":
            raise DataError(f"{path}: a single annotation file is one set of images, read as split 'train'")
        json_path, root, folders = path, path.parent, [path.parent, path.parent / "images"]
    else:
        files = coco_annotation_files(path)
        if split not in files:
            raise DataError(f"{path}: no COCO annotations for split {split!r} "
                            f"(annotations/instances_{split}*.json); it has: {', '.join(files) or 'none'}")
        json_path, root = files[split], path
        folders = _image_folder_candidates(path, split, _INSTANCES_FILE.match(json_path.name)["tail"] or "")
    content = _load_json(json_path)
    report = BoxReport()
    categories = _categories(content, json_path, report)
    class_index = {category_id: index for index, category_id in enumerate(categories)}
    entries = _image_entries(content, json_path, report)
    if report.malformed.count:
        raise DataError(f"{json_path}: {report.malformed.examples[0]}")
    by_image: dict[Any, list[dict[str, Any]]] = {}
    for number, annotation in enumerate(content.get("annotations", [])):
        if not isinstance(annotation, dict) or annotation.get("image_id") not in entries:
            raise DataError(f"{json_path}: annotations[{number}] has no image_id of a listed image")
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    folder = _choose_image_folder(folders, [entry["file_name"] for entry in entries.values()], json_path)
    paths, images = [], []
    for image_id, entry in entries.items():
        image = Path(entry["file_name"]) if Path(entry["file_name"]).is_absolute() else folder / entry["file_name"]
        if not image.is_file():
            raise DataError(f"{json_path}: image {entry['file_name']} (id {image_id}) is not in {folder}")
        size = entry["size"] or upright_size(image)[:2]
        objects = [_coco_object(annotation, json_path, size, class_index) for annotation in by_image.get(image_id, [])]
        images.append(ImageInstances(tuple(size), np.array([o[0] for o in objects], np.int64),
                                     np.array([o[1] for o in objects], np.uint8), [o[2] for o in objects],
                                     [o[3] for o in objects]))
        paths.append(image)
    where = display_path(json_path, root) if not path.is_file() else str(path)
    return InstanceDataset(f"{path} (COCO {where}, {len(categories)} classes, {len(paths)} images)", paths, images,
                           list(categories.values()), list(categories))


def _coco_object(annotation: dict[str, Any], json_path: Path, size: tuple[int, int],
                 class_index: dict[int, int]) -> tuple[int, int, Any, str]:
    """(class index, flag, shape, where) of one annotation, checked."""
    where = f"{json_path}: annotation {annotation.get('id', '?')} (image {annotation.get('image_id')})"
    category = annotation.get("category_id")
    if category not in class_index:
        raise DataError(f"{where}: category_id {category!r} is not one of the file's categories "
                        f"({', '.join(str(c) for c in class_index)})")
    width, height = size
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict) and "counts" in segmentation:
        if list(segmentation.get("size", [])) != [height, width]:
            raise DataError(f"{where}: an RLE of size {segmentation.get('size')} on a {width}×{height} image "
                            "(size is [height, width])")
        shape: Any = segmentation
    elif isinstance(segmentation, list) and segmentation:
        polygons = segmentation if isinstance(segmentation[0], list) else [segmentation]
        shape = [_checked_polygon(polygon, (width, height), f"{where}, polygon {n + 1}", scale=(1.0, 1.0))
                 for n, polygon in enumerate(polygons)]
    else:
        raise DataError(f"{where}: no segmentation; an instance needs polygons [[x1, y1, x2, y2, ...]] or RLE "
                        "{\"size\": [h, w], \"counts\": ...}")
    return class_index[category], CROWD if annotation.get("iscrowd") else NORMAL, shape, where


def _checked_polygon(values: Any, size: tuple[int, int], where: str, *, scale: tuple[float, float]) -> list[float]:
    """A polygon's coordinates in pixels, refused with `where` named when it cannot outline an object.
    `scale` turns the given coordinates into pixels (YOLO's 0-1: the image's width and height)."""
    try:
        numbers = [float(value) for value in values]
    except (TypeError, ValueError):
        raise DataError(f"{where}: a polygon must be numbers x1 y1 x2 y2 ...") from None
    if len(numbers) % 2:
        raise DataError(f"{where}: {len(numbers)} coordinates, an odd number; a polygon is x y pairs")
    if len(numbers) < 6:
        raise DataError(f"{where}: a polygon of {len(numbers) // 2} point(s); an outline needs at least 3")
    if not all(math.isfinite(value) for value in numbers):
        raise DataError(f"{where}: a coordinate is not a finite number")
    limits = (1.0, 1.0) if scale != (1.0, 1.0) else (float(size[0]), float(size[1]))
    tolerance = EDGE_TOLERANCE if scale != (1.0, 1.0) else 0.01
    for axis, name in ((0, "x"), (1, "y")):
        outside = [value for value in numbers[axis::2] if not -tolerance <= value <= limits[axis] + tolerance]
        if outside:
            raise DataError(f"{where}: {name} = {outside[0]:g} lies outside the image (0 to {limits[axis]:g}"
                            f"{' of its size' if scale != (1.0, 1.0) else ' pixels'})")
    return [min(max(value, 0.0), limits[n % 2]) * scale[n % 2] for n, value in enumerate(numbers)]


# --- YOLO-seg --------------------------------------------------------------------------------------


def read_yolo_instances(path: Path, split: str) -> InstanceDataset:
    from cnnlab.tasks.detection.formats_base import BoxReport, display_path, upright_size
    from cnnlab.tasks.detection.formats_yolo import _class_numbers_in_labels, _layout, _list_images, label_path_for

    layout = _layout(path)
    if split not in layout.splits:
        raise DataError(f"{path}: no split {split!r} in this YOLO dataset; it has: {', '.join(layout.splits)}")
    report = BoxReport()
    images = _list_images(layout.splits[split], layout.root, report)
    if report.missing_images.count:
        raise DataError(f"{path}: image {report.missing_images.examples[0]} is listed but not on disk")
    if layout.class_ids is None:
        layout.class_ids = _class_numbers_in_labels(layout)
        layout.class_names = [str(number) for number in layout.class_ids]
    class_index = {number: index for index, number in enumerate(layout.class_ids)}
    instances = []
    for image in images:
        label_file = label_path_for(image)
        width, height, _ = upright_size(image)
        try:
            text = label_file.read_text(encoding="utf-8-sig") if label_file.is_file() else ""
        except (OSError, UnicodeDecodeError) as error:
            raise DataError(f"{label_file}: cannot read it ({error})") from None
        labels, shapes, places = [], [], []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.split():
                continue
            where = f"{display_path(label_file, layout.root)}:{number}"
            label, polygon = _yolo_line(line, where, class_index, (width, height))
            labels.append(label)
            shapes.append([polygon])
            places.append(where)
        instances.append(ImageInstances((width, height), np.array(labels, np.int64),
                                        np.zeros(len(labels), np.uint8), shapes, places))
    assert layout.class_names is not None
    return InstanceDataset(f"{path} (YOLO-seg, {len(layout.class_names)} classes, {len(images)} images, {split} split)",
                           list(images), instances, list(layout.class_names), list(layout.class_ids))


def _yolo_line(line: str, where: str, class_index: dict[int, int], size: tuple[int, int]) -> tuple[int, list[float]]:
    fields = line.split()
    try:
        number = int(fields[0])
    except ValueError:
        raise DataError(f"{where}: class {fields[0]!r} is not a class number") from None
    if number not in class_index:
        known = sorted(class_index)
        raise DataError(f"{where}: class {number} is not declared (the classes are "
                        f"{f'{known[0]} to {known[-1]}' if known else 'none'})")
    if len(fields) == 5:
        raise DataError(f"{where}: a box (class cx cy w h), not an outline; instance segmentation needs YOLO-seg "
                        "lines: class x1 y1 x2 y2 x3 y3 ... (0-1)")
    width, height = size
    return class_index[number], _checked_polygon(fields[1:], size, where, scale=(float(width), float(height)))
