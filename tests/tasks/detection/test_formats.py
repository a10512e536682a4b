"""One scene in COCO, YOLO and Pascal VOC, written by hand and by the writers, read to the same targets.

The hand-written files pin each format's conventions independently of cnnlab's writers: COCO's
x, y, width, height; YOLO's normalised centre and size; VOC's 1-based first and last pixel.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import DataError
from cnnlab.tasks.detection.formats import (
    CROWD,
    DIFFICULT,
    BoxReport,
    DetectionDataset,
    ImageBoxes,
    available_splits,
    detect_format,
    read_detection_dataset,
    write_coco,
    write_voc,
    write_yolo,
)

# The scene: a 100×80 image with a cat and a dog (the dog reaches the right and bottom edges),
# and a 64×48 image without objects. Classes in the order dog, cat (not alphabetical).
CLASS_NAMES = ["dog", "cat"]
SCENE_BOXES = {"a.png": ([[10, 20, 40, 60], [50, 0, 100, 80]], [1, 0]), "b.png": ([], [])}
SIZES = {"a.png": (100, 80), "b.png": (64, 48)}


def _image(path: Path, size: tuple[int, int], mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 40).save(path)
    return path


def _coco_by_hand(root: Path) -> Path:
    for name, size in SIZES.items():
        _image(root / "train" / name, size)
    content = {
        "images": [{"id": 4, "file_name": "a.png", "width": 100, "height": 80},
                   {"id": 9, "file_name": "b.png", "width": 64, "height": 48}],
        "annotations": [{"id": 1, "image_id": 4, "category_id": 2, "bbox": [10, 20, 30, 40], "iscrowd": 0},
                        {"id": 2, "image_id": 4, "category_id": 1, "bbox": [50, 0, 50, 80], "iscrowd": 0}],
        "categories": [{"id": 2, "name": "cat"}, {"id": 1, "name": "dog"}],
    }
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train.json").write_text(json.dumps(content))
    return root


def _yolo_by_hand(root: Path) -> Path:
    for name, size in SIZES.items():
        _image(root / "images" / "train" / name, size)
    (root / "labels" / "train").mkdir(parents=True)
    # cat: centre (25, 40) of 100×80 = (0.25, 0.5), size 30×40 = (0.3, 0.5); dog: centre (75, 40), 50×80.
    (root / "labels" / "train" / "a.txt").write_text("1 0.25 0.5 0.3 0.5\n0 0.75 0.5 0.5 1.0\n")
    (root / "labels" / "train" / "b.txt").write_text("")
    (root / "data.yaml").write_text("train: images/train\nnames: [dog, cat]\n")
    return root


def _voc_xml(filename: str, size: tuple[int, int], objects: list[tuple[str, int, int, int, int]],
             difficult: tuple[int, ...] = ()) -> str:
    parts = [f"<annotation><filename>{filename}</filename>",
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for number, (name, xmin, ymin, xmax, ymax) in enumerate(objects):
        parts.append(f"<object><name>{name}</name><difficult>{int(number in difficult)}</difficult>"
                     f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax>"
                     "</bndbox></object>")
    return "".join(parts) + "</annotation>"


def _voc_by_hand(root: Path) -> Path:
    for name, size in SIZES.items():
        _image(root / "JPEGImages" / name, size)
    (root / "Annotations").mkdir(parents=True)
    # VOC names the first and last pixel, counting from 1: columns 10..39 are xmin 11, xmax 40.
    (root / "Annotations" / "a.xml").write_text(
        _voc_xml("a.png", (100, 80), [("cat", 11, 21, 40, 60), ("dog", 51, 1, 100, 80)]))
    (root / "Annotations" / "b.xml").write_text(_voc_xml("b.png", (64, 48), []))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    (root / "classes.txt").write_text("dog\ncat\n")
    return root


def _assert_is_the_scene(dataset: DetectionDataset, tolerance: float) -> None:
    assert [path.name for path in dataset.image_paths] == ["a.png", "b.png"]
    assert dataset.class_names == CLASS_NAMES
    assert dataset.image_sizes == [(100, 80), (64, 48)]
    for path, boxes in zip(dataset.image_paths, dataset.annotations):
        expected_boxes, expected_labels = SCENE_BOXES[path.name]
        assert boxes.boxes.dtype == np.float32 and boxes.labels.dtype == np.int64 and boxes.flags.dtype == np.uint8
        assert boxes.boxes.shape == (len(expected_labels), 4)
        np.testing.assert_allclose(boxes.boxes, np.array(expected_boxes, np.float32).reshape(-1, 4),
                                   atol=tolerance, rtol=0)
        assert boxes.labels.tolist() == expected_labels
        assert boxes.flags.tolist() == [0] * len(expected_labels)
    assert dataset.report.images == 2 and dataset.report.boxes == 2
    assert dataset.report.background_images.count == 1
    assert dataset.report.clipped.count == dataset.report.degenerate.count == 0


@pytest.mark.parametrize("layout, tolerance, category_ids", [
    (_coco_by_hand, 0.0, [1, 2]),
    (_yolo_by_hand, 1e-3, [0, 1]),
    (_voc_by_hand, 0.0, [0, 1]),
], ids=["coco", "yolo", "voc"])
def test_the_same_scene_by_hand_in_each_format_loads_to_the_same_targets(
        tmp_path: Path, layout, tolerance: float, category_ids: list[int]) -> None:
    dataset = read_detection_dataset(layout(tmp_path / "scene"))
    _assert_is_the_scene(dataset, tolerance)
    assert dataset.category_ids == category_ids


def _scene(folder: Path) -> DetectionDataset:
    paths = [_image(folder / name, size) for name, size in SIZES.items()]
    annotations = [ImageBoxes.of(*SCENE_BOXES[name]) for name in SIZES]
    return DetectionDataset("the scene", paths, annotations, list(SIZES.values()), CLASS_NAMES, [0, 1],
                            BoxReport(), "memory")


@pytest.mark.parametrize("write, fmt, tolerance", [(write_coco, "coco", 0.0), (write_yolo, "yolo", 1e-3),
                                                    (write_voc, "voc", 0.0)], ids=["coco", "yolo", "voc"])
def test_the_writers_produce_layouts_that_read_back_to_the_scene(tmp_path: Path, write, fmt: str,
                                                                 tolerance: float) -> None:
    root = write(_scene(tmp_path / "source"), tmp_path / fmt, "train")
    write(_scene(tmp_path / "source"), root, "val")
    assert detect_format(root) == fmt
    assert available_splits(root)[:2] == ["train", "val"]
    for split in ("train", "val"):
        dataset = read_detection_dataset(root, split=split)
        assert dataset.format == fmt and f"{split} split" in dataset.description
        _assert_is_the_scene(dataset, tolerance)


def test_yolo_labels_are_written_with_six_decimals_by_default(tmp_path: Path) -> None:
    root = write_yolo(_scene(tmp_path / "source"), tmp_path / "yolo")
    assert (root / "labels" / "train" / "a.txt").read_text() == (
        "1 0.250000 0.500000 0.300000 0.500000\n0 0.750000 0.500000 0.500000 1.000000\n")
    assert (root / "labels" / "train" / "b.txt").read_text() == ""


def test_crowd_and_difficult_boxes_survive_the_formats_that_store_them(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "source")
    scene.annotations[0] = ImageBoxes.of(SCENE_BOXES["a.png"][0], [1, 0], [CROWD, 0])
    coco = read_detection_dataset(write_coco(scene, tmp_path / "coco"))
    assert coco.annotations[0].flags.tolist() == [CROWD, 0] and coco.report.crowd.count == 1
    scene.annotations[0] = ImageBoxes.of(SCENE_BOXES["a.png"][0], [1, 0], [0, DIFFICULT])
    voc = read_detection_dataset(write_voc(scene, tmp_path / "voc"))
    assert voc.annotations[0].flags.tolist() == [0, DIFFICULT] and voc.report.difficult.count == 1


def test_a_flag_the_format_cannot_store_is_refused_unless_told_what_to_do(tmp_path: Path) -> None:
    scene = _scene(tmp_path / "source")
    scene.annotations[0] = ImageBoxes.of(SCENE_BOXES["a.png"][0], [1, 0], [CROWD, 0])
    with pytest.raises(DataError, match=r"a\.png: YOLO cannot mark a box crowd"):
        write_yolo(scene, tmp_path / "refused")
    dropped = read_detection_dataset(write_yolo(scene, tmp_path / "dropped", flagged_boxes="drop"))
    assert dropped.annotations[0].labels.tolist() == [0]
    plain = read_detection_dataset(write_yolo(scene, tmp_path / "plain", flagged_boxes="plain"))
    assert plain.annotations[0].labels.tolist() == [1, 0]
    with pytest.raises(DataError, match="Pascal VOC cannot mark a box crowd"):
        write_voc(scene, tmp_path / "voc")


def test_a_folder_of_no_known_layout_is_a_clear_error(tmp_path: Path) -> None:
    _image(tmp_path / "photos" / "a.png", (10, 10))
    with pytest.raises(DataError, match=r"photos: not a detection dataset layout.*COCO.*YOLO.*Pascal VOC"):
        read_detection_dataset(tmp_path / "photos")
    with pytest.raises(DataError, match="no such file or folder"):
        read_detection_dataset(tmp_path / "nowhere")


def test_a_dataset_left_without_images_is_an_error_that_says_why(tmp_path: Path) -> None:
    root = _coco_by_hand(tmp_path / "coco")
    for image in (root / "train").iterdir():
        image.unlink()
    with pytest.raises(DataError, match=r"no usable image(.|\n)*not on disk \(skipped\): 2"):
        read_detection_dataset(root)


def test_the_report_names_what_it_counts_and_survives_json(tmp_path: Path) -> None:
    report = BoxReport()
    for number in range(15):
        report.clipped.add(f"img{number}.png: (-1, 0, 5, 5) → (0, 0, 5, 5)")
    report.notes.append("class names from classes.txt")
    assert report.clipped.count == 15 and len(report.clipped.examples) == 10
    summary = report.summary()
    assert "boxes clipped to the image: 15 (e.g. img0.png: (-1, 0, 5, 5) → (0, 0, 5, 5); img1.png" in summary
    assert "note: class names from classes.txt" in summary and "degenerate" not in summary
    restored = BoxReport.from_json(json.loads(json.dumps(report.to_json())))
    assert restored == report


def test_the_format_modules_do_not_import_torch() -> None:
    import cnnlab.tasks.detection.formats as front

    folder = Path(front.__file__).parent
    for module in ("formats.py", "formats_base.py", "formats_coco.py", "formats_yolo.py", "formats_voc.py"):
        tree = ast.parse((folder / module).read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                    for alias in node.names}
        imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree)
                     if isinstance(node, ast.ImportFrom)}
        assert not imported & {"torch", "torchvision"}, module
