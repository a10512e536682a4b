"""COCO JSON: category ids, crowd boxes, bad boxes and files, splits and image folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import DataError
from cnnlab.tasks.detection.formats import CROWD, available_splits, read_detection_dataset


def _image(path: Path, size: tuple[int, int] = (100, 80)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)


def _write(root: Path, annotations: list[dict[str, Any]], *, categories: list[dict[str, Any]] | None = None,
           images: list[dict[str, Any]] | None = None, split: str = "train", folder: str | None = None) -> Path:
    images = images if images is not None else [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}]
    for image in images:
        if not image.get("missing"):
            _image(root / (folder or split) / image["file_name"])
    content = {"images": [{k: v for k, v in image.items() if k != "missing"} for image in images],
               "annotations": annotations,
               "categories": categories if categories is not None else [{"id": 1, "name": "cat"}]}
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
    return root


def _box(bbox: list[float], category_id: int = 1, *, image_id: int = 1, **extra: Any) -> dict[str, Any]:
    return {"image_id": image_id, "category_id": category_id, "bbox": bbox, **extra}


def test_category_ids_with_gaps_and_a_background_placeholder_become_contiguous_indices(tmp_path: Path) -> None:
    categories = [{"id": 7, "name": "bird"}, {"id": 0, "name": "__background__"},
                  {"id": 3, "name": "dog"}, {"id": 1, "name": "cat"}]
    annotations = [_box([0, 0, 10, 10], 7), _box([5, 5, 10, 10], 1), _box([20, 20, 10, 10], 3)]
    dataset = read_detection_dataset(_write(tmp_path / "coco", annotations, categories=categories))
    assert dataset.class_names == ["cat", "dog", "bird"]
    assert dataset.category_ids == [1, 3, 7]
    assert dataset.annotations[0].labels.tolist() == [2, 0, 1]
    assert any("category 0 '__background__' has no annotations: left out" in note
               for note in dataset.report.notes)


def test_a_category_0_with_another_name_is_kept_as_declared(tmp_path: Path) -> None:
    categories = [{"id": 0, "name": "cells"}, {"id": 1, "name": "red"}, {"id": 2, "name": "white"}]
    dataset = read_detection_dataset(_write(tmp_path / "coco", [_box([0, 0, 5, 5], 2)], categories=categories))
    assert dataset.class_names == ["cells", "red", "white"] and dataset.category_ids == [0, 1, 2]
    assert dataset.annotations[0].labels.tolist() == [2]
    assert any("category 0 'cells' has no annotations; kept" in note for note in dataset.report.notes)


def test_iscrowd_marks_a_box_crowd(tmp_path: Path) -> None:
    annotations = [_box([0, 0, 10, 10], iscrowd=1), _box([20, 20, 10, 10], iscrowd=0)]
    dataset = read_detection_dataset(_write(tmp_path / "coco", annotations))
    assert dataset.annotations[0].flags.tolist() == [CROWD, 0]
    assert dataset.report.crowd.count == 1


def test_boxes_outside_the_image_are_clipped_and_degenerate_ones_dropped_both_named(tmp_path: Path) -> None:
    annotations = [
        _box([-5, 10, 20, 20]),  # reaches 5 px left of the image: clipped
        _box([90, 70, 30, 30]),  # past the right and bottom edges: clipped
        _box([10, 10, 0, 5]),  # no width: dropped
        _box([120, 10, 10, 10]),  # wholly right of the 100 px wide image: nothing left after clipping
        _box([1, 2, 3, 4]),  # fine
    ]
    root = _write(tmp_path / "coco", annotations)
    content = (root / "annotations" / "instances_train.json").read_text()
    (root / "annotations" / "instances_train.json").write_text(content.replace("[1, 2, 3, 4]", "[NaN, 2, 3, 4]"))
    dataset = read_detection_dataset(root)
    np.testing.assert_array_equal(dataset.annotations[0].boxes, [[0, 10, 15, 30], [90, 70, 100, 80]])
    report = dataset.report
    assert report.clipped.count == 2 and report.degenerate.count == 3 and report.boxes == 2
    assert report.clipped.examples[0] == "train/a.png: (-5, 10, 15, 30) → (0, 10, 15, 30)"
    assert report.degenerate.examples == [
        "train/a.png: box (10, 10, 10, 15)",
        "train/a.png: box (120, 10, 130, 20) → (100, 10, 100, 20)",
        "train/a.png: box (nan, 2, nan, 6) (not a finite number)",
    ]


def test_unknown_categories_and_malformed_annotations_are_named_and_dropped(tmp_path: Path) -> None:
    annotations = [_box([0, 0, 10, 10], 5, id=31), _box([0, 0, 10], id=32), _box([0, 0, 5, 5], image_id=99, id=33),
                   _box([1, 1, 5, 5], id=34)]
    report = read_detection_dataset(_write(tmp_path / "coco", annotations)).report
    assert report.unknown_classes.examples == [
        "instances_train.json: annotations[0] (id 31): category_id 5 is not in \"categories\""]
    assert report.malformed.examples == [
        "instances_train.json: annotations[1] (id 32): bbox [0, 0, 10] is not 4 numbers [x, y, width, height]",
        "instances_train.json: annotations[2] (id 33): image_id 99 is not in \"images\"",
    ]
    assert report.boxes == 1


def test_a_missing_image_is_named_and_skipped(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png", "width": 100, "height": 80},
              {"id": 2, "file_name": "gone.png", "width": 100, "height": 80, "missing": True}]
    dataset = read_detection_dataset(_write(tmp_path / "coco", [_box([0, 0, 5, 5], image_id=2)], images=images))
    assert [path.name for path in dataset.image_paths] == ["a.png"]
    assert dataset.report.missing_images.examples == ["train/gone.png (image id 2 in instances_train.json)"]


def test_an_image_without_width_and_height_is_measured_and_a_broken_one_skipped(tmp_path: Path) -> None:
    images = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "broken.png"}]
    root = _write(tmp_path / "coco", [_box([0, 0, 5, 5])], images=images)
    (root / "train" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    dataset = read_detection_dataset(root)
    assert dataset.image_sizes == [(100, 80)]
    assert dataset.report.unreadable_images.count == 1
    assert dataset.report.unreadable_images.examples[0].startswith("train/broken.png: ")


def test_a_broken_json_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    root = _write(tmp_path / "coco", [])
    (root / "annotations" / "instances_train.json").write_text('{"images": [')
    with pytest.raises(DataError, match=r"instances_train\.json: not valid JSON"):
        read_detection_dataset(root)


def test_splits_come_from_the_annotation_file_names_with_their_years(tmp_path: Path) -> None:
    root = tmp_path / "coco2017"
    _write(root, [_box([0, 0, 5, 5])], split="train2017")
    _write(root, [_box([1, 1, 5, 5]), _box([2, 2, 5, 5])], split="val2017")
    _write(root, [], split="trainval35k")
    assert available_splits(root) == ["train", "val", "trainval"]
    val = read_detection_dataset(root, split="val")
    assert val.image_paths == [root / "val2017" / "a.png"] and len(val.annotations[0]) == 2
    assert val.description == f"{root} (COCO JSON, 1 class, 1 image, val split)"
    assert len(read_detection_dataset(root, split="train").annotations[0]) == 1
    with pytest.raises(DataError, match=r"no COCO annotations for split 'test'.*it has: train, val, trainval"):
        read_detection_dataset(root, split="test")


def test_images_are_found_in_images_split_too(tmp_path: Path) -> None:
    root = _write(tmp_path / "coco", [_box([0, 0, 5, 5])], split="val", folder="images/val")
    assert read_detection_dataset(root, split="val").image_paths == [root / "images" / "val" / "a.png"]


def test_a_single_json_file_reads_its_images_from_beside_it(tmp_path: Path) -> None:
    _image(tmp_path / "export" / "images" / "a.png")
    content = {"images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 80}],
               "annotations": [_box([0, 0, 5, 5])], "categories": [{"id": 1, "name": "cat"}]}
    (tmp_path / "export" / "result.json").write_text(json.dumps(content))
    dataset = read_detection_dataset(tmp_path / "export" / "result.json")
    assert dataset.image_paths == [tmp_path / "export" / "images" / "a.png"]
    assert "COCO JSON file" in dataset.description
    with pytest.raises(DataError, match=r"result\.json: a single annotation file is one set of images"):
        read_detection_dataset(tmp_path / "export" / "result.json", split="val")
