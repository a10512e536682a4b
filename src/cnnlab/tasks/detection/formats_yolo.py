"""YOLO (Ultralytics): one text file per image, one `class cx cy w h` line per box, normalised to 0–1.

Two layouts are read. An Ultralytics `data.yaml` (also `data.yml`, `dataset.yaml`), which is what
`write_yolo` writes:

    train: images/train        # a folder of images, a .txt list of image paths, or a list of either
    val: images/val
    test: images/test          # optional
    nc: 3
    names: {0: cat, 1: dog, 2: bird}   # or a list: [cat, dog, bird]

with the folders relative to `path:` when the file has one (relative to the file's own folder),
else to the file's folder. Or a plain folder with `images/` and `labels/`, split into
`images/<split>/` + `labels/<split>/` sub-folders or not split at all (then it is the train split),
with the class names in `classes.txt` (in the folder or in `labels/`), one per line.

An image's label file is found as Ultralytics finds it: the last `images` folder of its path becomes
`labels` and the suffix `.txt` (`images/train/a.jpg` → `labels/train/a.txt`). A line is

    2 0.5 0.4 0.25 0.2          class 2, centre (0.5, 0.4), width 0.25, height 0.2 of the image

An empty or missing label file is an image without objects (a background image; missing ones are
counted). A line of a class and more than 4 numbers is a YOLO-seg polygon (x y pairs) and is read
as its bounding box (counted); in a pose dataset (`kpt_shape` in data.yaml) the first 4 numbers are
the box. Coordinates become pixels using the image's size, read from its header: for a file whose
EXIF orientation turns it by 90°, the upright size, as Ultralytics and cnnlab's decoder use it.
Without class names anywhere, the classes are the numbers found in all label files, named "0", "1"...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.images import image_files_below, is_image_file
from cnnlab.errors import DataError, UnreadableImageError
from cnnlab.tasks.detection.formats_base import (
    BoxReport,
    DetectionDataset,
    LabelledImages,
    check_unique_file_names,
    check_writable,
    checked_boxes,
    copy_image,
    counted,
    display_path,
    read_names_file,
    upright_size,
    writable_boxes,
)

YAML_FILE_NAMES = ("data.yaml", "data.yml", "dataset.yaml")
_SPLIT_KEYS = ("train", "val", "test")
_NAMES_FILES = ("classes.txt", "labels/classes.txt")


@dataclass
class _Layout:
    """Where a YOLO dataset's splits and class names are, before any label file is read."""

    root: Path  # images and labels are named relative to it in the report
    splits: dict[str, list[Path]]  # split -> image folders and .txt image lists
    class_ids: list[int] | None  # YOLO class numbers, in index order; None: found from the labels
    class_names: list[str] | None
    keypoints: bool = False
    notes: list[str] = field(default_factory=list)


def find_yolo_yaml(folder: Path) -> Path | None:
    return next((folder / name for name in YAML_FILE_NAMES if (folder / name).is_file()), None)


def is_yolo_folder(folder: Path) -> bool:
    return (folder / "images").is_dir() and (folder / "labels").is_dir()


def yolo_splits(path: Path) -> list[str]:
    return list(_layout(path).splits)


def read_yolo(path: Path, split: str) -> DetectionDataset:
    """One split of a YOLO dataset: a data.yaml, a folder holding one, or images/ + labels/."""
    layout = _layout(path)
    if split not in layout.splits:
        raise DataError(f"{path}: no split {split!r} in this YOLO dataset; it has: {', '.join(layout.splits)}")
    report = BoxReport(notes=list(layout.notes))
    images = _list_images(layout.splits[split], layout.root, report)
    if layout.class_ids is None:
        layout.class_ids = _class_numbers_in_labels(layout)
        layout.class_names = [str(number) for number in layout.class_ids]
        report.notes.append(f"no class names (no names in data.yaml, no classes.txt): the classes are the "
                            f"numbers found in the label files, {_number_range(layout.class_ids)}")
    class_index = {number: index for index, number in enumerate(layout.class_ids)}
    paths, annotations, sizes, turned = [], [], [], 0
    for image in images:
        label_file = label_path_for(image)
        rows = _read_label_file(label_file, layout, class_index, report)
        if rows is None:
            continue
        try:
            width, height, is_turned = upright_size(image)
        except UnreadableImageError as error:
            report.unreadable_images.add(f"{display_path(image, layout.root)}: {error.reason}")
            continue
        turned += is_turned
        boxes = np.array([row[1] for row in rows], np.float64).reshape(-1, 4) * [width, height, width, height]
        labels = [row[0] for row in rows]
        annotations.append(checked_boxes(display_path(label_file, layout.root), boxes, labels,
                                         [0] * len(rows), (width, height), report))
        paths.append(image)
        sizes.append((width, height))
    if turned:
        report.notes.append(f"{turned} image(s) carry an EXIF orientation turning them by 90°: their labels "
                            "were read against the upright size (width and height swapped from the stored ones)")
    report.images = len(paths)
    assert layout.class_names is not None
    contents = f"{counted(len(layout.class_names), 'class')}, {counted(len(paths), 'image')}"
    return DetectionDataset(
        description=f"{path} (YOLO, {contents}, {split} split)",
        image_paths=paths, annotations=annotations, image_sizes=sizes, class_names=list(layout.class_names),
        category_ids=list(layout.class_ids), report=report, format="yolo",
    )


def label_path_for(image: Path) -> Path:
    """The label file of an image: the last `images` folder of its path becomes `labels`, suffix .txt.

    >>> label_path_for(Path("data/images/train/a.jpg")).as_posix()
    'data/labels/train/a.txt'
    """
    parts = list(image.parts)
    for index in range(len(parts) - 2, -1, -1):
        if parts[index] == "images":
            parts[index] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")  # no images/ folder: the labels lie beside the images


# --- finding the layout -------------------------------------------------------------------------


def _layout(path: Path) -> _Layout:
    if path.is_file():
        return _yaml_layout(path)
    yaml_file = find_yolo_yaml(path)
    if yaml_file is not None:
        return _yaml_layout(yaml_file)
    return _folder_layout(path)


def _yaml_layout(yaml_file: Path) -> _Layout:
    import yaml

    try:
        data = yaml.safe_load(yaml_file.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise DataError(f"{yaml_file}: cannot read it as YAML ({error})") from None
    if not isinstance(data, dict):
        raise DataError(f"{yaml_file}: expected a YAML mapping with train/val/test folders and names")
    notes: list[str] = []
    root = _yaml_root(yaml_file, data, notes)
    splits = {key: _split_sources(yaml_file, key, data[key], root, notes) for key in _SPLIT_KEYS if data.get(key)}
    if not splits:
        raise DataError(f"{yaml_file}: names no image folders; it needs a `train:` (and `val:`, `test:`) entry")
    class_ids, class_names = _yaml_names(yaml_file, data)
    return _Layout(root, splits, class_ids, class_names, keypoints="kpt_shape" in data, notes=notes)


def _yaml_root(yaml_file: Path, data: dict[str, Any], notes: list[str]) -> Path:
    if not data.get("path"):
        return yaml_file.parent
    root = Path(str(data["path"])).expanduser()
    root = root if root.is_absolute() else yaml_file.parent / root
    if not root.is_dir():
        notes.append(f"{yaml_file.name}: path {data['path']!r} is not a folder here; image folders were "
                     f"resolved relative to {yaml_file.parent} instead")
        return yaml_file.parent
    return root


def _split_sources(yaml_file: Path, key: str, value: Any, root: Path, notes: list[str]) -> list[Path]:
    values = value if isinstance(value, list) else [value]
    sources = []
    for item in values:
        if not isinstance(item, str):
            raise DataError(f"{yaml_file}: {key}: {item!r} should be a folder or a .txt file of image paths")
        source = Path(item).expanduser()
        source = source if source.is_absolute() else root / source
        if not source.exists() and item.startswith("../") and (root / item[3:]).exists():
            # Roboflow's exports say `train: ../train/images` next to a data.yaml in the same folder.
            notes.append(f"{yaml_file.name}: {key}: {item} read as {item[3:]}, as Ultralytics does")
            source = root / item[3:]
        if not source.exists():
            raise DataError(f"{yaml_file}: {key}: {source} does not exist")
        sources.append(source)
    return sources


def _yaml_names(yaml_file: Path, data: dict[str, Any]) -> tuple[list[int] | None, list[str] | None]:
    names, count = data.get("names"), data.get("nc")
    if isinstance(names, list):
        pairs = list(enumerate(names))
    elif isinstance(names, dict):
        try:
            pairs = sorted((int(key), value) for key, value in names.items())
        except (TypeError, ValueError):
            raise DataError(f"{yaml_file}: names: the keys must be class numbers, found {list(names)}") from None
    elif names is None and isinstance(count, int) and count > 0:
        return list(range(count)), [str(number) for number in range(count)]
    elif names is None:
        return None, None
    else:
        raise DataError(f"{yaml_file}: names should be a list or a {{number: name}} mapping")
    class_names = [str(name) for _, name in pairs]
    if isinstance(count, int) and count != len(class_names):
        raise DataError(f"{yaml_file}: nc is {count} but names lists {len(class_names)} classes")
    if len(set(class_names)) != len(class_names):
        raise DataError(f"{yaml_file}: class names must be distinct: {class_names}")
    return [number for number, _ in pairs], class_names


def _folder_layout(root: Path) -> _Layout:
    images = root / "images"
    subfolders = sorted(entry for entry in images.iterdir() if entry.is_dir() and not entry.name.startswith("."))
    direct = [entry for entry in images.iterdir() if entry.is_file() and is_image_file(entry)]
    if subfolders and not direct:
        splits = {folder.name: [folder] for folder in subfolders}
    else:
        splits = {"train": [images]}
    names_file = next((root / name for name in _NAMES_FILES if (root / name).is_file()), None)
    if names_file is None:
        return _Layout(root, splits, None, None)
    names = read_names_file(names_file)
    notes = [f"class names from {display_path(names_file, root)}"]
    return _Layout(root, splits, list(range(len(names))), names, notes=notes)


def _list_images(sources: list[Path], root: Path, report: BoxReport) -> list[Path]:
    images: list[Path] = []
    for source in sources:
        if source.is_dir():
            images += image_files_below(source)
            continue
        for line in _read_lines(source):
            listed = Path(line).expanduser()
            candidates = [listed] if listed.is_absolute() else [source.parent / listed, root / listed]
            found = next((candidate for candidate in candidates if candidate.is_file()), None)
            if found is None:
                report.missing_images.add(f"{display_path(candidates[0], root)} (listed in {source.name})")
            else:
                images.append(found)
    return list(dict.fromkeys(images))


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the list of images ({error})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _class_numbers_in_labels(layout: _Layout) -> list[int]:
    """0..the largest class number of every label file of every split (the names all splits share)."""
    largest = -1
    for sources in layout.splits.values():
        for image in _list_images(sources, layout.root, BoxReport()):
            try:
                text = label_path_for(image).read_text(encoding="utf-8-sig")
            except (OSError, UnicodeDecodeError):
                continue  # missing or unreadable: reported when its split is read
            for line in text.splitlines():
                number = _class_number(line.split()[0]) if line.split() else None
                largest = max(largest, number if number is not None else -1)
    return list(range(largest + 1))


def _number_range(numbers: list[int]) -> str:
    return "none" if not numbers else f"0 to {numbers[-1]}"


# --- reading label files ------------------------------------------------------------------------

_Row = tuple[int, tuple[float, float, float, float]]  # class index, normalised x1, y1, x2, y2


def _read_label_file(path: Path, layout: _Layout, class_index: dict[int, int],
                     report: BoxReport) -> list[_Row] | None:
    """The rows of a label file (none for a missing one), or None when it cannot be read."""
    where = display_path(path, layout.root)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        report.missing_label_files.add(where)
        return []
    except (OSError, UnicodeDecodeError) as error:
        report.unreadable_files.add(f"{where}: {error}")
        return None
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        row = _parse_line(line, f"{where}:{number}", layout.keypoints, class_index, report)
        if row is not None:
            rows.append(row)
    return rows


def _parse_line(line: str, where: str, keypoints: bool, class_index: dict[int, int],
                report: BoxReport) -> _Row | None:
    fields = line.split()
    if not fields:
        return None
    try:
        values = [float(value) for value in fields]
    except ValueError:
        report.malformed.add(f"{where}: {line.strip()!r} is not all numbers")
        return None
    number = _class_number(fields[0])
    coordinates = values[1:]
    if number is None:
        report.malformed.add(f"{where}: class {fields[0]!r} is not a class number")
        return None
    if len(coordinates) == 4 or (keypoints and len(coordinates) > 4):
        centre_x, centre_y, width, height = coordinates[:4]
        box = (centre_x - width / 2, centre_y - height / 2, centre_x + width / 2, centre_y + height / 2)
    elif len(coordinates) >= 6 and len(coordinates) % 2 == 0:
        xs, ys = coordinates[0::2], coordinates[1::2]
        report.polygons.add(f"{where}: {len(xs)} points")
        box = (min(xs), min(ys), max(xs), max(ys))
    else:
        report.malformed.add(f"{where}: {len(fields)} numbers; expected 5 (class cx cy w h) "
                             "or a class and 3 or more x y points")
        return None
    if number not in class_index:
        report.unknown_classes.add(f"{where}: class {number} (the classes are {_number_range(sorted(class_index))})")
        return None
    return class_index[number], box


def _class_number(text: str) -> int | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and value >= 0 else None


# --- writing ------------------------------------------------------------------------------------


def yolo_image_folder(root: Path, split: str) -> Path:
    """Where `write_yolo` puts the images of `split`."""
    return Path(root) / "images" / split


def write_yolo(dataset: LabelledImages, root: str | Path, split: str = "train", *, decimals: int = 6,
               flagged_boxes: str = "error") -> Path:
    """Write one split as YOLO: `images/<split>/`, `labels/<split>/*.txt` and `data.yaml` in `root`.

    Coordinates are written with `decimals` decimals, as Ultralytics writes them (6). data.yaml
    lists every split written so far (a second call adds its split) and the class names; it has no
    `path:`, so the folders are relative to the file, wherever the folder is moved. YOLO cannot mark
    a box crowd or difficult: `flagged_boxes` says what to do with such boxes ("error", "drop" or
    "plain"). Returns `root`.
    """
    root = Path(root)
    check_writable(dataset)
    yaml_file = root / YAML_FILE_NAMES[0]
    splits = _written_splits(yaml_file, list(dataset.class_names))
    folder = yolo_image_folder(root, split)
    check_unique_file_names([Path(source).name for source in dataset.image_paths], folder)
    for source, boxes, (width, height) in zip(dataset.image_paths, dataset.annotations, dataset.image_sizes):
        boxes = writable_boxes(boxes, set(), flagged_boxes, str(source), "YOLO")
        image = folder / Path(source).name
        copy_image(Path(source), image)
        lines = []
        for (x1, y1, x2, y2), label in zip(boxes.boxes.astype(np.float64), boxes.labels):
            values = ((x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height)
            lines.append(f"{int(label)} " + " ".join(f"{value:.{decimals}f}" for value in values))
        label_file = label_path_for(image)
        label_file.parent.mkdir(parents=True, exist_ok=True)
        label_file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    splits[split] = f"images/{split}"
    _write_yaml(yaml_file, splits, list(dataset.class_names))
    return root


def _written_splits(yaml_file: Path, class_names: list[str]) -> dict[str, str]:
    """The splits an earlier `write_yolo` recorded in data.yaml, after checking its classes are ours."""
    if not yaml_file.is_file():
        return {}
    import yaml

    data = yaml.safe_load(yaml_file.read_text(encoding="utf-8")) or {}
    _, names = _yaml_names(yaml_file, data)
    if names != class_names:
        raise DataError(f"{yaml_file} already lists other classes ({names}); write to an empty folder")
    return {key: data[key] for key in _SPLIT_KEYS if data.get(key)}


def _write_yaml(yaml_file: Path, splits: dict[str, str], class_names: list[str]) -> None:
    import yaml

    ordered = {key: splits[key] for key in _SPLIT_KEYS if key in splits}
    ordered |= {"nc": len(class_names), "names": dict(enumerate(class_names))}
    header = ("# Ultralytics YOLO dataset, written by cnnlab. Folders are relative to this file;\n"
              "# each image's labels are in labels/<split>/<image name>.txt: class cx cy w h, 0-1.\n")
    yaml_file.parent.mkdir(parents=True, exist_ok=True)
    yaml_file.write_text(header + yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True), encoding="utf-8")
