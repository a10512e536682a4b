"""COCO JSON: one annotation file per split, boxes as x, y, width, height pixels.

The layout, as the COCO 2017 download has it (`write_coco` writes it without the year):

    root/annotations/instances_train2017.json   (or instances_train.json, instances_val2017.json...)
    root/train2017/000000000009.jpg            (or root/train/, root/images/train/, root/images/)

A single JSON file can also be named directly, as labelling tools export it; its images are then
looked for beside it or in an `images/` folder beside it, and it is one set of images: the train split.

    {"images": [{"id": 9, "file_name": "000000000009.jpg", "width": 640, "height": 480}],
     "annotations": [{"id": 1, "image_id": 9, "category_id": 3, "bbox": [10, 20, 30, 40], "iscrowd": 0}],
     "categories": [{"id": 3, "name": "car"}]}

Categories are kept as declared, sorted by id; a class's index is its position in that order, and
`category_ids` keeps the original ids (COCO's 80 classes have ids 1 to 90, with gaps). The one
exception: a category 0 named "background" or "__background__" that no annotation uses is a
placeholder some exporters add, and is left out (with a note). `iscrowd` marks a box crowd.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnlab.errors import DataError, UnreadableImageError
from cnnlab.tasks.detection.formats_base import (
    CROWD,
    NORMAL,
    BoxReport,
    DetectionDataset,
    ImageBoxes,  # noqa: F401 (write_coco's doctest uses it)
    LabelledImages,
    check_unique_file_names,
    check_writable,
    checked_boxes,
    copy_image,
    counted,
    display_path,
    upright_size,
    writable_boxes,
)

_INSTANCES_FILE = re.compile(r"^instances_(?P<split>[A-Za-z]+)(?P<tail>[^A-Za-z].*)?\.json$")
_BACKGROUND_NAMES = {"background", "__background__"}
_FOLDER_PROBES = 50  # images tried in each candidate folder to tell which one holds them
SPLIT_ORDER = ("train", "val", "test")


def coco_annotation_files(root: Path) -> dict[str, Path]:
    """{split: annotations/instances_<split>*.json} of a COCO folder, train, val and test first."""
    folder = root / "annotations"
    if not folder.is_dir():
        return {}
    found: dict[str, list[Path]] = {}
    for path in sorted(folder.glob("instances_*.json")):
        match = _INSTANCES_FILE.match(path.name)
        if match and path.is_file():
            found.setdefault(match["split"], []).append(path)
    for split, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(path.name for path in paths)
            raise DataError(f"{folder}: several annotation files for the {split} split ({names}); keep one")
    order = sorted(found, key=lambda split: (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else 9, split))
    return {split: found[split][0] for split in order}


def coco_splits(path: Path) -> list[str]:
    return ["train"] if path.is_file() else list(coco_annotation_files(path))


def read_coco(path: Path, split: str) -> DetectionDataset:
    """One split of a COCO folder, or the images of one COCO JSON file (see the module docstring)."""
    report = BoxReport()
    if path.is_file():
        if split != "train":
            raise DataError(f"{path}: a single annotation file is one set of images, read as split 'train'; "
                            f"there is no split {split!r}")
        json_path, root, folders = path, path.parent, [path.parent, path.parent / "images"]
    else:
        files = coco_annotation_files(path)
        if split not in files:
            raise DataError(f"{path}: no COCO annotations for split {split!r} "
                            f"(annotations/instances_{split}*.json); it has: {', '.join(files) or 'none'}")
        json_path, root = files[split], path
        folders = _image_folder_candidates(path, split, _INSTANCES_FILE.match(json_path.name)["tail"] or "")
    content = _load_json(json_path)
    categories = _categories(content, json_path, report)
    entries = _image_entries(content, json_path, report)
    class_index = {category_id: index for index, category_id in enumerate(categories)}
    raw_boxes = _boxes_by_image(content, json_path, entries, class_index, report)
    folder = _choose_image_folder(folders, [entry["file_name"] for entry in entries.values()], json_path)

    paths, annotations, sizes = [], [], []
    for image_id, entry in entries.items():
        image = Path(entry["file_name"]) if Path(entry["file_name"]).is_absolute() else folder / entry["file_name"]
        where = display_path(image, root)
        if not image.is_file():
            report.missing_images.add(f"{where} (image id {image_id} in {json_path.name})")
            continue
        size = entry.get("size")
        if size is None:
            try:
                width, height, _ = upright_size(image)
            except UnreadableImageError as error:
                report.unreadable_images.add(f"{where}: {error.reason}")
                continue
            size = (width, height)
        boxes, labels, flags = raw_boxes.get(image_id, ([], [], []))
        annotations.append(checked_boxes(where, np.asarray(boxes, np.float64), labels, flags, size, report))
        paths.append(image)
        sizes.append(size)
    report.images = len(paths)
    kind = "COCO JSON file" if path.is_file() else "COCO JSON"
    contents = f"{counted(len(categories), 'class')}, {counted(len(paths), 'image')}"
    split_part = "" if path.is_file() else f", {split} split"
    return DetectionDataset(
        description=f"{path} ({kind}, {contents}{split_part})",
        image_paths=paths, annotations=annotations, image_sizes=sizes,
        class_names=list(categories.values()), category_ids=list(categories), report=report, format="coco",
    )


def _image_folder_candidates(root: Path, split: str, tail: str) -> list[Path]:
    named = [split, split + tail] if tail else [split]
    candidates = [root / name for name in named] + [root / "images" / name for name in named]
    return list(dict.fromkeys(candidates + [root / "images", root]))


def _choose_image_folder(candidates: list[Path], file_names: list[str], json_path: Path) -> Path:
    """The candidate folder in which most of the first images exist (the first one on a tie)."""
    existing = [folder for folder in candidates if folder.is_dir()]
    if not existing:
        raise DataError(f"{json_path}: no image folder; looked for {', '.join(str(f) for f in candidates)}")
    probes = file_names[:_FOLDER_PROBES]
    found = [sum((folder / name).is_file() for name in probes) for folder in existing]
    return existing[found.index(max(found))]


def _load_json(path: Path) -> dict[str, Any]:
    try:
        content = json.loads(path.read_bytes())
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise DataError(f"{path}: not a COCO annotation file (expected an object with an \"images\" list)")
    for key in ("annotations", "categories"):
        if not isinstance(content.get(key, []), list):
            raise DataError(f"{path}: \"{key}\" must be a list")
    return content


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _categories(content: dict[str, Any], path: Path, report: BoxReport) -> dict[int, str]:
    """{category id: name}, sorted by id, with an unused background placeholder left out."""
    categories: dict[int, str] = {}
    for index, category in enumerate(content.get("categories", [])):
        if not isinstance(category, dict) or not _is_int(category.get("id")) or \
                not isinstance(category.get("name"), str):
            raise DataError(f"{path}: categories[{index}] needs an integer \"id\" and a string \"name\"")
        if category["id"] in categories:
            raise DataError(f"{path}: category id {category['id']} is declared twice")
        categories[category["id"]] = category["name"]
    if not categories:
        raise DataError(f"{path}: no categories; a COCO file declares its classes in \"categories\"")
    used = {annotation.get("category_id") for annotation in content.get("annotations", [])
            if isinstance(annotation, dict)}
    if 0 in categories and 0 not in used:
        if categories[0].lower() in _BACKGROUND_NAMES:
            report.notes.append(f"category 0 {categories[0]!r} has no annotations: left out as a placeholder")
            del categories[0]
        else:
            report.notes.append(f"category 0 {categories[0]!r} has no annotations; kept as a class")
    return dict(sorted(categories.items()))


def _image_entries(content: dict[str, Any], path: Path, report: BoxReport) -> dict[Any, dict[str, Any]]:
    """{image id: {"file_name": ..., "size": (w, h) or None}} in file order; malformed entries named."""
    entries: dict[Any, dict[str, Any]] = {}
    for index, image in enumerate(content["images"]):
        image_id = image.get("id") if isinstance(image, dict) else None
        if image_id is None or isinstance(image_id, (bool, float, list, dict)) or \
                not isinstance(image.get("file_name"), str) or not image["file_name"]:
            report.malformed.add(f"{path.name}: images[{index}] has no usable \"id\" and \"file_name\"")
            continue
        if image_id in entries:
            raise DataError(f"{path}: image id {image_id!r} is used by two images")
        width, height = image.get("width"), image.get("height")
        size = (width, height) if _is_int(width) and _is_int(height) and width > 0 and height > 0 else None
        entries[image_id] = {"file_name": image["file_name"], "size": size}
    return entries


_RawBoxes = tuple[list[list[float]], list[int], list[int]]  # xyxy boxes, class indices, flags


def _boxes_by_image(content: dict[str, Any], path: Path, entries: dict[Any, dict[str, Any]],
                    class_index: dict[int, int], report: BoxReport) -> dict[Any, _RawBoxes]:
    """Each image's boxes as read (xywh → xyxy), before clipping; unusable annotations named."""
    boxes: dict[Any, _RawBoxes] = {}
    for index, annotation in enumerate(content.get("annotations", [])):
        where = f"{path.name}: annotations[{index}]"
        if not isinstance(annotation, dict):
            report.malformed.add(f"{where} is not an object")
            continue
        where += f" (id {annotation.get('id')})" if "id" in annotation else ""
        bbox = annotation.get("bbox")
        if annotation.get("image_id") not in entries:
            report.malformed.add(f"{where}: image_id {annotation.get('image_id')!r} is not in \"images\"")
            continue
        if not isinstance(bbox, list) or len(bbox) != 4 or \
                not all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in bbox):
            report.malformed.add(f"{where}: bbox {bbox!r} is not 4 numbers [x, y, width, height]")
            continue
        if annotation.get("category_id") not in class_index:
            report.unknown_classes.add(f"{where}: category_id {annotation.get('category_id')!r} "
                                       "is not in \"categories\"")
            continue
        x, y, width, height = (float(value) for value in bbox)
        image_boxes = boxes.setdefault(annotation["image_id"], ([], [], []))
        image_boxes[0].append([x, y, x + width, y + height])
        image_boxes[1].append(class_index[annotation["category_id"]])
        image_boxes[2].append(CROWD if annotation.get("iscrowd") else NORMAL)
    return boxes


# --- writing ------------------------------------------------------------------------------------


def coco_image_folder(root: Path, split: str) -> Path:
    """Where `write_coco` puts the images of `split`."""
    return Path(root) / split


def write_coco(dataset: LabelledImages, root: str | Path, split: str = "train", *,
               category_ids: Sequence[int] | None = None, flagged_boxes: str = "error") -> Path:
    """Write one split as COCO: `root/annotations/instances_<split>.json` and the images in `root/<split>/`.

    Images are copied there under their own file names (left alone if already there). Category ids
    are `category_ids` or 1, 2, ... in class order, as COCO numbers them. Boxes become x, y, width,
    height; crowd boxes get `iscrowd: 1`; COCO has no "difficult", so `flagged_boxes` says what to
    do with such boxes ("error", "drop" or "plain"). Returns `root`.

    >>> import tempfile, pathlib, PIL.Image
    >>> from cnnlab.tasks.detection.formats import DetectionDataset, BoxReport, read_detection_dataset
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> PIL.Image.new("L", (40, 30)).save(folder / "a.png")
    >>> scene = DetectionDataset("a scene", [folder / "a.png"], [ImageBoxes.of([[2, 3, 12, 13]], [1])],
    ...                          [(40, 30)], ["cat", "dog"], [0, 1], BoxReport(), "coco")
    >>> root = write_coco(scene, folder / "coco", "val")
    >>> read_detection_dataset(root, split="val").annotations[0].boxes.tolist()
    [[2.0, 3.0, 12.0, 13.0]]
    """
    root = Path(root)
    check_writable(dataset)
    ids = list(category_ids) if category_ids is not None else list(range(1, len(dataset.class_names) + 1))
    if len(ids) != len(dataset.class_names) or len(set(ids)) != len(ids):
        raise DataError(f"category_ids {ids} must be {len(dataset.class_names)} distinct ids, one per class")
    folder = coco_image_folder(root, split)
    check_unique_file_names([Path(source).name for source in dataset.image_paths], folder)
    images, annotations = [], []
    for image_id, (source, boxes, (width, height)) in enumerate(
            zip(dataset.image_paths, dataset.annotations, dataset.image_sizes), start=1):
        boxes = writable_boxes(boxes, {CROWD}, flagged_boxes, str(source), "COCO")
        copy_image(Path(source), folder / Path(source).name)
        images.append({"id": image_id, "file_name": Path(source).name, "width": width, "height": height})
        for box, label, flag in zip(boxes.boxes, boxes.labels, boxes.flags):
            x1, y1, x2, y2 = (float(value) for value in box)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": ids[int(label)],
                "bbox": [_number(x1), _number(y1), _number(x2 - x1), _number(y2 - y1)],
                "area": _number((x2 - x1) * (y2 - y1)), "iscrowd": int(flag == CROWD), "segmentation": [],
            })
    content = {
        "info": {"description": f"{split} split, written by cnnlab"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": category_id, "name": name, "supercategory": "none"}
                       for category_id, name in zip(ids, dataset.class_names)],
    }
    json_path = root / "annotations" / f"instances_{split}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(_one_entry_per_line(content), encoding="utf-8")
    return root


def _one_entry_per_line(content: dict[str, Any]) -> str:
    """JSON with one image, annotation or category per line: readable, and a tenth of indent=2's lines."""
    parts = []
    for key, value in content.items():
        if isinstance(value, list) and value:
            entries = ",\n  ".join(json.dumps(entry, ensure_ascii=False) for entry in value)
            parts.append(f" {json.dumps(key)}: [\n  {entries}\n ]")
        else:
            parts.append(f" {json.dumps(key)}: {json.dumps(value, ensure_ascii=False)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _number(value: float) -> int | float:
    """An integer when the value is one, else the shortest decimal that reads back as the same float32."""
    value32 = np.float32(value)
    return int(value32) if float(value32).is_integer() else float(str(value32))
