"""Pascal VOC: difficult boxes, class names, splits, broken and hostile XML files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import DataError
from cnnlab.tasks.detection.formats import DIFFICULT, available_splits, read_detection_dataset


def _object(name: str, corners: tuple[int, int, int, int] | None, difficult: int = 0) -> str:
    box = "" if corners is None else "<bndbox>" + "".join(
        f"<{key}>{value}</{key}>" for key, value in zip(("xmin", "ymin", "xmax", "ymax"), corners)) + "</bndbox>"
    return f"<object><name>{name}</name><difficult>{difficult}</difficult>{box}</object>"


def _annotated(root: Path, image_id: str, objects: list[str], *, size: tuple[int, int] = (60, 40),
               with_image: bool = True, with_size: bool = True) -> None:
    if with_image:
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size).save(root / "JPEGImages" / f"{image_id}.jpg")
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    size_xml = f"<size><width>{size[0]}</width><height>{size[1]}</height></size>" if with_size else ""
    (root / "Annotations" / f"{image_id}.xml").write_text(
        f"<annotation><filename>{image_id}.jpg</filename>{size_xml}{''.join(objects)}</annotation>")


def _split_file(root: Path, split: str, ids: list[str]) -> None:
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{image_id}\n" for image_id in ids))


def test_difficult_marks_a_box_difficult_and_corners_become_0_based(tmp_path: Path) -> None:
    _annotated(tmp_path, "000001", [_object("dog", (1, 1, 30, 20), difficult=1), _object("cat", (31, 21, 60, 40))])
    dataset = read_detection_dataset(tmp_path)
    np.testing.assert_array_equal(dataset.annotations[0].boxes, [[0, 0, 30, 20], [30, 20, 60, 40]])
    assert dataset.annotations[0].flags.tolist() == [DIFFICULT, 0]
    assert dataset.report.difficult.count == 1


def test_class_names_are_sorted_over_every_split_so_train_and_val_agree(tmp_path: Path) -> None:
    _annotated(tmp_path, "a", [_object("zebra", (1, 1, 10, 10)), _object("ant", (1, 1, 10, 10))])
    _annotated(tmp_path, "b", [_object("moth", (1, 1, 10, 10))])
    _split_file(tmp_path, "train", ["a"])
    _split_file(tmp_path, "val", ["b"])
    train, val = (read_detection_dataset(tmp_path, split=split) for split in ("train", "val"))
    assert train.class_names == val.class_names == ["ant", "moth", "zebra"]
    assert train.annotations[0].labels.tolist() == [2, 0] and val.annotations[0].labels.tolist() == [1]
    assert train.category_ids == [0, 1, 2]


def test_a_classes_file_fixes_the_order_and_unknown_names_are_named_and_dropped(tmp_path: Path) -> None:
    _annotated(tmp_path, "a", [_object("zebra", (1, 1, 10, 10)), _object("yak", (1, 1, 10, 10))])
    (tmp_path / "labels.txt").write_text("zebra\nant\n")
    dataset = read_detection_dataset(tmp_path)
    assert dataset.class_names == ["zebra", "ant"]
    assert dataset.annotations[0].labels.tolist() == [0]
    assert dataset.report.unknown_classes.examples == [
        "Annotations/a.xml: object 2: class 'yak' is not in the class names"]


def test_splits_are_the_image_set_files_and_an_unknown_one_lists_them(tmp_path: Path) -> None:
    for image_id in ("a", "b", "c"):
        _annotated(tmp_path, image_id, [_object("cat", (1, 1, 10, 10))])
    _split_file(tmp_path, "train", ["a", "b"])
    _split_file(tmp_path, "val", ["c"])
    _split_file(tmp_path, "trainval", ["a", "b", "c"])
    _split_file(tmp_path, "cat_train", ["a  1", "b -1"])  # a per-class file, not a split
    assert available_splits(tmp_path) == ["train", "val", "trainval"]
    assert [path.stem for path in read_detection_dataset(tmp_path, split="val").image_paths] == ["c"]
    assert len(read_detection_dataset(tmp_path, split="trainval")) == 3
    with pytest.raises(DataError, match=r"no split 'test' \(ImageSets/Main/test\.txt\); it has: train, val, trainval"):
        read_detection_dataset(tmp_path, split="test")


def test_without_image_sets_every_annotation_is_the_train_split(tmp_path: Path) -> None:
    _annotated(tmp_path, "b", [])
    _annotated(tmp_path, "a", [_object("cat", (1, 1, 10, 10))])
    assert available_splits(tmp_path) == ["train"]
    assert [path.stem for path in read_detection_dataset(tmp_path).image_paths] == ["a", "b"]


def test_broken_files_missing_images_and_bad_objects_are_named_and_skipped(tmp_path: Path) -> None:
    _annotated(tmp_path, "good", [_object("cat", (1, 1, 10, 10)), _object("cat", None)])
    _annotated(tmp_path, "broken", [])
    (tmp_path / "Annotations" / "broken.xml").write_text("<annotation><object>")
    _annotated(tmp_path, "imageless", [_object("cat", (1, 1, 10, 10))], with_image=False)
    _split_file(tmp_path, "train", ["good", "broken", "imageless", "unannotated"])
    report = read_detection_dataset(tmp_path).report
    assert report.images == 1 and report.boxes == 1
    assert report.malformed.examples == ["Annotations/good.xml: object 2 (cat): no <bndbox>"]
    assert report.unreadable_files.examples[0].startswith("Annotations/broken.xml: not well-formed XML")
    assert report.unreadable_files.examples[1] == "Annotations/unannotated.xml: file does not exist"
    assert report.missing_images.examples == ["JPEGImages/imageless.jpg (from Annotations/imageless.xml)"]


def test_a_missing_size_is_read_from_the_image(tmp_path: Path) -> None:
    _annotated(tmp_path, "a", [_object("cat", (1, 1, 80, 10))], size=(70, 50), with_size=False)
    dataset = read_detection_dataset(tmp_path)
    assert dataset.image_sizes == [(70, 50)]
    assert dataset.report.clipped.examples == ["Annotations/a.xml: (0, 0, 80, 10) → (0, 0, 70, 10)"]


@pytest.mark.parametrize("declaration", [
    '<!DOCTYPE annotation [<!ENTITY animal "cat">]>',  # harmless, and parsed fine by expat: refused all the same
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>',
], ids=["entity", "expansion"])
def test_an_xml_file_declaring_entities_is_refused_unread(tmp_path: Path, declaration: str) -> None:
    _annotated(tmp_path, "safe", [_object("cat", (1, 1, 10, 10))])
    _annotated(tmp_path, "hostile", [])
    (tmp_path / "Annotations" / "hostile.xml").write_text(
        f'<?xml version="1.0"?>\n{declaration}\n<annotation><filename>hostile.jpg</filename>'
        f'<object><name>&animal;</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax>'
        '</bndbox></object></annotation>'.replace("&animal;", "&animal;" if "animal" in declaration else "cat"))
    (tmp_path / "classes.txt").write_text("cat\n")
    dataset = read_detection_dataset(tmp_path)
    assert [path.stem for path in dataset.image_paths] == ["safe"]
    assert dataset.report.unreadable_files.examples == [
        "Annotations/hostile.xml: declares a DOCTYPE or ENTITY; refused unread (entity expansion can exhaust memory)"]
