"""COCO polygons, COCO RLE and YOLO-seg polygons of the same objects give the same instance masks; an
object that cannot be a mask is refused with its file and line (or annotation) named."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.instance_canvases import coco_rle
from cnnlab.errors import DataError
from cnnlab.tasks.instances.formats import read_instance_dataset

WIDTH, HEIGHT = 32, 24
CLASSES = ["coin", "cell"]
# Outlines along pixel edges (x, y in pixels), so each encloses exactly the pixels it outlines.
OBJECTS = [
    (0, [[2, 2, 12, 2, 12, 9, 2, 9]]),  # a rectangle
    (1, [[14, 4, 24, 4, 24, 8, 18, 8, 18, 20, 14, 20]]),  # an L
    (1, [[26, 14, 32, 14, 32, 24, 26, 24], [3, 15, 7, 15, 7, 19, 3, 19]]),  # two parts, one touching the corner
]


def _mask(polygons: list[list[float]]) -> np.ndarray:
    from cnnlab.tasks.segmentation.rle import polygon_to_mask

    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    for polygon in polygons:
        mask |= polygon_to_mask(polygon, HEIGHT, WIDTH)
    return mask


def _coco(root: Path, segmentation_of) -> Path:
    (root / "images" / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(root / "images" / "train" / "a.png")
    document = {"images": [{"id": 1, "file_name": "a.png", "width": WIDTH, "height": HEIGHT}],
                "categories": [{"id": 5 + index, "name": name} for index, name in enumerate(CLASSES)],
                "annotations": [{"id": 10 + number, "image_id": 1, "category_id": 5 + label, "iscrowd": 0,
                                 "segmentation": segmentation_of(polygons)}
                                for number, (label, polygons) in enumerate(OBJECTS)]}
    (root / "annotations" / "instances_train.json").write_text(json.dumps(document))
    return root


def _yolo(root: Path, lines: list[str] | None = None) -> Path:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((HEIGHT, WIDTH), np.uint8)).save(root / "images" / "train" / "a.png")
    if lines is None:
        lines = [" ".join([str(label), *(repr(v / (WIDTH if n % 2 == 0 else HEIGHT)) for n, v in enumerate(polygon))])
                 for label, polygons in OBJECTS for polygon in polygons[:1]]
    (root / "labels" / "train" / "a.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("train: images/train\nval: images/train\nnames: [coin, cell]\n")
    return root


def test_coco_polygons_coco_rle_and_yolo_seg_give_the_same_masks(tmp_path):
    polygons = read_instance_dataset(_coco(tmp_path / "polygons", lambda p: p))
    rle = read_instance_dataset(_coco(tmp_path / "rle", lambda p: coco_rle(_mask(p))))
    yolo = read_instance_dataset(_yolo(tmp_path / "yolo"))
    expected = np.stack([_mask(p) for _, p in OBJECTS])
    assert expected.sum(axis=(1, 2)).tolist() == [70, 88, 76]  # 10×7; 10×4 + 4×12; 6×10 + 4×4
    np.testing.assert_array_equal(polygons.images[0].masks(), expected)
    np.testing.assert_array_equal(rle.images[0].masks(), expected)
    # YOLO-seg has one polygon per line: the third object's first part only.
    np.testing.assert_array_equal(yolo.images[0].masks(), np.stack([*expected[:2], _mask(OBJECTS[2][1][:1])]))
    assert polygons.class_names == rle.class_names == yolo.class_names == CLASSES
    assert polygons.images[0].labels.tolist() == yolo.images[0].labels.tolist() == [0, 1, 1]
    assert polygons.category_ids == [5, 6] and yolo.category_ids == [0, 1]


def test_pycocotools_decodes_the_generated_rle_as_cnnlab_does(tmp_path):
    from pycocotools import mask as mask_utils

    mask = _mask(OBJECTS[1][1]) | _mask(OBJECTS[2][1])
    encoded = coco_rle(mask)
    decoded = mask_utils.decode(mask_utils.frPyObjects(encoded, HEIGHT, WIDTH))
    np.testing.assert_array_equal(decoded, mask)


@pytest.mark.parametrize("line, message", [
    ("0 0.1 0.1", "a.txt:2: a polygon of 1 point(s); an outline needs at least 3"),
    ("0 0.1 0.1 0.5 0.1 0.5", "a.txt:2: 5 coordinates, an odd number"),
    ("1 0.1 0.1 1.2 0.1 0.5 0.5", "a.txt:2: x = 1.2 lies outside the image"),
    ("7 0.1 0.1 0.5 0.1 0.5 0.5", "a.txt:2: class 7 is not declared (the classes are 0 to 1)"),
    ("0 0.5 0.5 0.2 0.2", "a.txt:2: a box (class cx cy w h), not an outline"),
])
def test_a_bad_yolo_seg_line_is_named(tmp_path, line, message):
    root = _yolo(tmp_path / "yolo", ["0 0.1 0.1 0.5 0.1 0.5 0.5", line])
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        read_instance_dataset(root)


@pytest.mark.parametrize("segmentation, category, message", [
    ([[1, 1, 5, 1]], 5, "annotation 10 (image 1), polygon 1: a polygon of 2 point(s)"),
    ([[1, 1, 5, 1, 5]], 5, "annotation 10 (image 1), polygon 1: 5 coordinates, an odd number"),
    ([[1, 1, 40, 1, 5, 5]], 5, "annotation 10 (image 1), polygon 1: x = 40 lies outside the image (0 to 32 pixels)"),
    ([[1, 1, 5, 1, 5, 5]], 9, "annotation 10 (image 1): category_id 9 is not one of the file's categories"),
    ({"size": [10, 10], "counts": [100]}, 5, "annotation 10 (image 1): an RLE of size [10, 10] on a 32×24 image"),
    (None, 5, "annotation 10 (image 1): no segmentation"),
])
def test_a_bad_coco_annotation_is_named(tmp_path, segmentation, category, message):
    root = _coco(tmp_path / "coco", lambda p: p)
    path = root / "annotations" / "instances_train.json"
    document = json.loads(path.read_text())
    document["annotations"][0].update(segmentation=segmentation, category_id=category)
    path.write_text(json.dumps(document))
    with pytest.raises(DataError) as raised:
        read_instance_dataset(root)
    assert "instances_train.json" in str(raised.value) and message in str(raised.value)
