"""YOLO: label files line by line, background images, class names, data.yaml, EXIF orientation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import DataError
from cnnlab.tasks.detection.formats import available_splits, read_detection_dataset


def _image(path: Path, size: tuple[int, int] = (100, 100)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, 90).save(path)
    return path


def _labelled(root: Path, name: str, text: str | None, size: tuple[int, int] = (100, 100),
              split: str | None = None) -> None:
    sub = Path(split) if split else Path()
    _image(root / "images" / sub / f"{name}.png", size)
    (root / "labels" / sub).mkdir(parents=True, exist_ok=True)
    if text is not None:
        (root / "labels" / sub / f"{name}.txt").write_text(text)


def test_empty_and_missing_label_files_are_background_images_and_missing_ones_are_named(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    _labelled(root, "boxes", "0 0.5 0.5 0.2 0.4\n")
    _labelled(root, "empty", "")
    _labelled(root, "unlabelled", None)
    (root / "classes.txt").write_text("cat\n")
    dataset = read_detection_dataset(root)
    assert [path.name for path in dataset.image_paths] == ["boxes.png", "empty.png", "unlabelled.png"]
    np.testing.assert_allclose(dataset.annotations[0].boxes, [[40, 30, 60, 70]], atol=1e-4)
    assert [len(boxes) for boxes in dataset.annotations] == [1, 0, 0]
    assert dataset.report.background_images.count == 2
    assert dataset.report.missing_label_files.examples == ["labels/unlabelled.txt"]
    assert dataset.class_names == ["cat"] and "class names from classes.txt" in dataset.report.notes


def test_malformed_lines_and_unknown_classes_are_named_with_their_line_numbers(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    lines = ["0 0.5 0.5 0.2 0.2",  # fine
             "1 0.5 0.5 0.2",  # a number short
             "0 0.5 zero 0.2 0.2",  # not a number
             "",  # blank lines are allowed
             "7 0.5 0.5 0.2 0.2",  # class 7 of 2
             "1.5 0.5 0.5 0.2 0.2",  # not a class number
             "1 0.1 0.1 0.3 0.1 0.2 0.4"]  # a triangle: its bounding box
    _labelled(root, "a", "\n".join(lines) + "\n")
    (root / "labels" / "classes.txt").write_text("cat\ndog\n")
    dataset = read_detection_dataset(root)
    report = dataset.report
    assert report.malformed.examples == [
        "labels/a.txt:2: 4 numbers; expected 5 (class cx cy w h) or a class and 3 or more x y points",
        "labels/a.txt:3: '0 0.5 zero 0.2 0.2' is not all numbers",
        "labels/a.txt:6: class '1.5' is not a class number",
    ]
    assert report.unknown_classes.examples == ["labels/a.txt:5: class 7 (the classes are 0 to 1)"]
    assert report.polygons.examples == ["labels/a.txt:7: 3 points"]
    assert dataset.annotations[0].labels.tolist() == [0, 1]
    np.testing.assert_allclose(dataset.annotations[0].boxes, [[40, 40, 60, 60], [10, 10, 30, 40]], atol=1e-4)


def test_boxes_past_the_edges_are_clipped_and_non_finite_ones_dropped(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    _labelled(root, "a", "0 0.95 0.5 0.2 0.2\n0 nan 0.5 0.2 0.2\n0 0.5 0.5 -0.1 0.2\n")
    dataset = read_detection_dataset(root)
    np.testing.assert_allclose(dataset.annotations[0].boxes, [[85, 40, 100, 60]], atol=1e-4)
    assert dataset.report.clipped.examples == ["labels/a.txt: (85, 40, 105, 60) → (85, 40, 100, 60)"]
    assert dataset.report.degenerate.count == 2
    assert "labels/a.txt: box (nan, 40, nan, 60) (not a finite number)" in dataset.report.degenerate.examples


def test_without_class_names_the_classes_are_the_numbers_of_every_split(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    _labelled(root, "a", "0 0.5 0.5 0.2 0.2\n", split="train")
    _labelled(root, "b", "2 0.5 0.5 0.2 0.2\n", split="val")
    assert available_splits(root) == ["train", "val"]
    for split in ("train", "val"):
        dataset = read_detection_dataset(root, split=split)
        assert dataset.class_names == ["0", "1", "2"] and dataset.category_ids == [0, 1, 2]
    assert any("no class names" in note for note in dataset.report.notes)
    with pytest.raises(DataError, match=r"no split 'test' in this YOLO dataset; it has: train, val"):
        read_detection_dataset(root, split="test")


def test_a_data_yaml_with_a_names_mapping_a_path_and_an_image_list(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    _labelled(root, "a", "1 0.5 0.5 0.2 0.2\n", split="train")
    _labelled(root, "b", "0 0.5 0.5 0.2 0.2\n", split="val")
    _labelled(root, "c", "", split="val")
    (root / "val.txt").write_text("./images/val/b.png\nimages/val/gone.png\n")
    (tmp_path / "data.yaml").write_text("path: dataset\ntrain: images/train\nval: val.txt\n"
                                        "nc: 2\nnames: {0: cat, 1: dog}\n")
    val = read_detection_dataset(tmp_path / "data.yaml", split="val")
    assert val.image_paths == [root / "images" / "val" / "b.png"]  # only what the list names
    assert val.report.missing_images.examples == ["images/val/gone.png (listed in val.txt)"]
    assert val.class_names == ["cat", "dog"]
    assert read_detection_dataset(tmp_path / "data.yaml").annotations[0].labels.tolist() == [1]


def test_a_data_yaml_whose_nc_disagrees_with_its_names_is_refused(tmp_path: Path) -> None:
    _labelled(tmp_path, "a", "", split="train")
    (tmp_path / "data.yaml").write_text("train: images/train\nnc: 3\nnames: [cat, dog]\n")
    with pytest.raises(DataError, match=r"data\.yaml: nc is 3 but names lists 2 classes"):
        read_detection_dataset(tmp_path)


def test_roboflow_style_parent_paths_are_read_as_ultralytics_reads_them(tmp_path: Path) -> None:
    root = tmp_path / "export"
    _image(root / "train" / "images" / "a.png")
    (root / "train" / "labels").mkdir(parents=True)
    (root / "train" / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text("train: ../train/images\nnames: [cat]\n")
    dataset = read_detection_dataset(root)
    assert len(dataset.annotations[0]) == 1
    assert any("../train/images read as train/images" in note for note in dataset.report.notes)


def test_labels_of_an_image_turned_by_its_exif_orientation_use_the_upright_size(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    (root / "images").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 40 wide and 20 high, shown turned 90° clockwise: 20 wide, 40 high
    Image.new("RGB", (40, 20)).save(root / "images" / "phone.jpg", exif=exif)
    (root / "labels").mkdir()
    (root / "labels" / "phone.txt").write_text("0 0.5 0.25 0.5 0.5\n")
    dataset = read_detection_dataset(root)
    assert dataset.image_sizes == [(20, 40)]
    np.testing.assert_allclose(dataset.annotations[0].boxes, [[5, 0, 15, 20]], atol=1e-4)
    assert any("EXIF orientation" in note for note in dataset.report.notes)


def test_unreadable_label_files_and_images_are_named_and_skipped(tmp_path: Path) -> None:
    root = tmp_path / "yolo"
    _labelled(root, "good", "0 0.5 0.5 0.2 0.2\n")
    _labelled(root, "latin1", "")
    (root / "labels" / "latin1.txt").write_bytes(b"0 0.5 0.5 0.2 0.2 \xe9\n")
    _labelled(root, "truncated", "0 0.5 0.5 0.2 0.2\n")
    (root / "images" / "truncated.png").write_bytes(b"")
    dataset = read_detection_dataset(root)
    assert [path.name for path in dataset.image_paths] == ["good.png"]
    assert dataset.report.unreadable_files.count == 1
    assert dataset.report.unreadable_files.examples[0].startswith("labels/latin1.txt: ")
    assert dataset.report.unreadable_images.examples == ["images/truncated.png: file is empty (0 bytes)"]


def test_pose_labels_give_their_box_and_ignore_the_keypoints(tmp_path: Path) -> None:
    _labelled(tmp_path, "a", "0 0.5 0.5 0.2 0.2 0.5 0.45 2 0.52 0.5 1\n", split="train")
    (tmp_path / "data.yaml").write_text("train: images/train\nnames: [person]\nkpt_shape: [2, 3]\n")
    dataset = read_detection_dataset(tmp_path)
    np.testing.assert_allclose(dataset.annotations[0].boxes, [[40, 40, 60, 60]], atol=1e-4)
    assert dataset.report.polygons.count == 0 and dataset.report.malformed.count == 0
