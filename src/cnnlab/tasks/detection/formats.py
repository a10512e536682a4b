"""Detection datasets the way users bring them: COCO JSON, YOLO and Pascal VOC, found by their layout.

    >>> dataset = read_detection_dataset("data/coco", split="val")        # doctest: +SKIP
    >>> dataset.class_names, dataset.annotations[0].boxes                 # doctest: +SKIP
    >>> print(dataset.report.summary())                                   # doctest: +SKIP

Every layout becomes the same `DetectionDataset` (formats_base.py): image paths, one `ImageBoxes`
per image (x1, y1, x2, y2 pixels of the upright image, contiguous class indices, crowd/difficult
flags), the class names and the original id of each class, and a `BoxReport` naming everything
that was clipped, dropped or skipped. Each layout is described in its module:

* formats_coco.py: `annotations/instances_<split>.json` + an image folder, or one JSON file;
* formats_yolo.py: an Ultralytics `data.yaml`, or `images/` + `labels/` folders;
* formats_voc.py: the devkit folder `JPEGImages/` + `Annotations/` + `ImageSets/Main/<split>.txt`.

The writers (`write_coco`, `write_yolo`, `write_voc`) produce exactly the layouts the readers take,
from images and their boxes; the generated Fashion-MNIST canvases (cnnlab.data.canvases) use them.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.errors import DataError
from cnnlab.tasks.detection.formats_base import (
    CROWD,
    DIFFICULT,
    NORMAL,
    BoxReport,
    DetectionDataset,
    ImageBoxes,
    LabelledImages,
    Tally,
)
from cnnlab.tasks.detection.formats_coco import (
    coco_annotation_files,
    coco_image_folder,
    coco_splits,
    read_coco,
    write_coco,
)
from cnnlab.tasks.detection.formats_voc import (
    is_voc_folder,
    read_voc,
    voc_image_folder,
    voc_splits,
    write_voc,
)
from cnnlab.tasks.detection.formats_yolo import (
    find_yolo_yaml,
    is_yolo_folder,
    read_yolo,
    write_yolo,
    yolo_image_folder,
    yolo_splits,
)

FORMATS = ("coco", "yolo", "voc")

_EXPECTED_LAYOUTS = (
    "COCO (annotations/instances_<split>.json + an image folder, or one .json file), "
    "YOLO (data.yaml, or images/ + labels/ folders), "
    "Pascal VOC (JPEGImages/ + Annotations/ + ImageSets/Main/<split>.txt)"
)


def detect_format(path: str | Path) -> str:
    """"coco", "yolo" or "voc": which layout `path` (a folder, a .json or a data .yaml) has.

    A folder is recognised by, in this order: `annotations/instances_*.json` (COCO), a data.yaml
    (YOLO), `Annotations/` + `JPEGImages/` (VOC), `images/` + `labels/` (YOLO). Anything else
    raises a DataError naming the path and the layouts cnnlab reads.
    """
    path = Path(path).expanduser()
    if path.is_file():
        if path.suffix.lower() == ".json":
            return "coco"
        if path.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        raise DataError(f"{path}: not a detection dataset; name a folder, or a COCO .json or YOLO data.yaml "
                        f"file. Layouts read: {_EXPECTED_LAYOUTS}")
    if not path.is_dir():
        raise DataError(f"{path}: no such file or folder")
    if coco_annotation_files(path):
        return "coco"
    if find_yolo_yaml(path) is not None:
        return "yolo"
    if is_voc_folder(path):
        return "voc"
    if is_yolo_folder(path):
        return "yolo"
    raise DataError(f"{path}: not a detection dataset layout cnnlab knows. Expected one of: {_EXPECTED_LAYOUTS}")


def available_splits(path: str | Path) -> list[str]:
    """The splits `read_detection_dataset(path, split=...)` accepts; a layout without splits has "train"."""
    path = Path(path).expanduser()
    kind = detect_format(path)
    if kind == "coco":
        return coco_splits(path)
    if kind == "yolo":
        return yolo_splits(path)
    return list(voc_splits(path))


def read_detection_dataset(path: str | Path, *, split: str = "train") -> DetectionDataset:
    """One split of the detection dataset at `path`, its layout recognised by `detect_format`.

    A split the layout does not have raises a DataError listing the ones it has; so does a dataset
    left without any image once missing and unreadable files are skipped. Everything else that is
    wrong (boxes outside the image, degenerate boxes, unknown classes, malformed lines, missing or
    broken files) is fixed or skipped and named in `dataset.report`.
    """
    path = Path(path).expanduser()
    kind = detect_format(path)
    readers = {"coco": read_coco, "yolo": read_yolo, "voc": read_voc}
    dataset = readers[kind](path, split)
    if not dataset.image_paths:
        raise DataError(f"{dataset.description}: no usable image.\n{dataset.report.summary()}")
    return dataset


def image_folder_for(format: str, root: str | Path, split: str) -> Path:
    """The folder where `write_<format>(..., root, split)` puts the images: write them there directly
    to spare the copy."""
    folders = {"coco": coco_image_folder, "yolo": yolo_image_folder, "voc": voc_image_folder}
    if format not in folders:
        raise DataError(f"unknown detection format {format!r}; known: {', '.join(FORMATS)}")
    return folders[format](Path(root), split)


def write_detection_dataset(dataset: LabelledImages, root: str | Path, split: str = "train", *,
                            format: str = "yolo") -> Path:
    """`write_coco`, `write_yolo` or `write_voc`, chosen by `format`; returns `root`."""
    writers = {"coco": write_coco, "yolo": write_yolo, "voc": write_voc}
    if format not in writers:
        raise DataError(f"unknown detection format {format!r}; known: {', '.join(FORMATS)}")
    return writers[format](dataset, root, split)


__all__ = [
    "CROWD",
    "DIFFICULT",
    "FORMATS",
    "NORMAL",
    "BoxReport",
    "DetectionDataset",
    "ImageBoxes",
    "LabelledImages",
    "Tally",
    "available_splits",
    "detect_format",
    "image_folder_for",
    "read_detection_dataset",
    "write_coco",
    "write_detection_dataset",
    "write_voc",
    "write_yolo",
]
