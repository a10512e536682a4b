"""benchmarks/detection_vs_yolo.py: both contenders' boxes reach COCO's scorer in the same terms
(image ids, category ids, pixels), and the budget arithmetic. Runs without Ultralytics; the
scoring test needs pycocotools (the bench extra) and is skipped without it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from detection_vs_yolo import (at_budget, coco_ground_truth, coco_map, first_reaching,  # noqa: E402
                               fitted_epochs, image_ids, should_stop, xyxy_to_coco, yolo_labels_to_annotations)

# Two lines of fashion-mnist-boxes' labels/test/test_00000.txt (class cx cy w h, 0-1 of a 96×96 canvas).
LABEL_TEXT = "4 0.239583 0.781250 0.291667 0.375000\n\n6 0.572917 0.697917 0.312500 0.375000\n"


def test_yolo_labels_become_coco_annotations_in_pixels() -> None:
    annotations = yolo_labels_to_annotations(LABEL_TEXT, image_id=7, width=96, height=96, first_id=3)
    assert [a["id"] for a in annotations] == [3, 4]
    assert [a["image_id"] for a in annotations] == [7, 7]
    assert [a["category_id"] for a in annotations] == [5, 7]  # YOLO class + 1
    # x = (cx - w/2) * 96: 0.239583 - 0.1458335 = 0.0937495 -> 9.0; w = 0.291667 * 96 = 28.0
    assert annotations[0]["bbox"] == pytest.approx([9.0, 57.0, 28.0, 36.0], abs=1e-3)
    assert annotations[0]["area"] == pytest.approx(28.0 * 36.0, abs=0.1)
    assert annotations[1]["bbox"] == pytest.approx([40.0, 49.0, 30.0, 36.0], abs=1e-3)
    assert all(a["iscrowd"] == 0 for a in annotations)


def test_a_label_line_of_the_wrong_length_names_the_image() -> None:
    with pytest.raises(ValueError, match="image 2: YOLO label line '3 0.5 0.5 0.2' has 4 fields"):
        yolo_labels_to_annotations("3 0.5 0.5 0.2\n", image_id=2, width=96, height=96, first_id=1)


def test_detections_in_corners_become_coco_boxes_with_the_same_ids() -> None:
    results = xyxy_to_coco(5, [[10.0, 20.0, 40.0, 60.5], [0, 0, 8, 8]], [0.91, 0.0012], [2, 0])
    assert results == [
        {"image_id": 5, "category_id": 3, "bbox": [10.0, 20.0, 30.0, 40.5], "score": 0.91},
        {"image_id": 5, "category_id": 1, "bbox": [0.0, 0.0, 8.0, 8.0], "score": 0.0012},
    ]


def test_image_ids_follow_the_sorted_file_names() -> None:
    assert image_ids(["test_00002.png", "test_00000.png", "test_00001.png"]) == {
        "test_00000.png": 1, "test_00001.png": 2, "test_00002.png": 3}


def _yolo_layout(root: Path) -> None:
    """Three test canvases: two boxes, none (an empty label file), and no label file at all."""
    for folder in ("images/test", "labels/test"):
        (root / folder).mkdir(parents=True)
    for name in ("b.png", "a.png", "c.png"):
        (root / "images/test" / name).write_bytes(b"")
    (root / "labels/test/b.txt").write_text(LABEL_TEXT)
    (root / "labels/test/a.txt").write_text("")


def test_ground_truth_from_a_yolo_layout(tmp_path: Path) -> None:
    _yolo_layout(tmp_path)
    truth = coco_ground_truth(tmp_path, "test", ["zero", "one"], (96, 96))
    assert [(image["id"], image["file_name"]) for image in truth["images"]] == [(1, "a.png"), (2, "b.png"),
                                                                               (3, "c.png")]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in truth["annotations"]] == [(1, 2, 5), (2, 2, 7)]
    assert truth["categories"] == [{"id": 1, "name": "zero"}, {"id": 2, "name": "one"}]


def test_coco_scores_the_truth_as_perfect_and_a_shorter_box_by_its_iou() -> None:
    pytest.importorskip("pycocotools")
    truth = {"images": [{"id": 1, "file_name": "a.png", "width": 96, "height": 96}],
             "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 40, 40], "area": 1600,
                              "iscrowd": 0}],
             "categories": [{"id": 1, "name": "zero"}]}
    perfect = coco_map(truth, xyxy_to_coco(1, [[0, 0, 40, 40]], [0.5], [0]))
    assert perfect == pytest.approx({"map": 1.0, "map50": 1.0, "map75": 1.0})
    # 40×37 inside 40×40: IoU 0.925 passes the thresholds 0.50 ... 0.90 (9 of 10), not 0.95.
    scores = coco_map(truth, xyxy_to_coco(1, [[0, 0, 40, 37]], [0.5], [0]))
    assert scores == pytest.approx({"map": 0.9, "map50": 1.0, "map75": 1.0})
    # The right box with the wrong class finds nothing.
    assert coco_map(truth, xyxy_to_coco(1, [[0, 0, 40, 40]], [0.5], [1]))["map"] == 0.0
    assert coco_map(truth, [])["map"] == 0.0


CURVE = [{"epoch": 1, "train_seconds": 100.0, "map": 0.1}, {"epoch": 2, "train_seconds": 210.0, "map": 0.25},
         {"epoch": 3, "train_seconds": 325.0, "map": 0.31}]


def test_first_epoch_reaching_a_target_and_the_last_within_the_budget() -> None:
    assert first_reaching(CURVE, 0.25)["epoch"] == 2
    assert first_reaching(CURVE, 0.4) is None
    assert at_budget(CURVE, 300, slack=0.1)["epoch"] == 3  # 325 s <= 330 s
    assert at_budget(CURVE, 300, slack=0.0)["epoch"] == 2
    assert at_budget(CURVE, 50, slack=0.1) is None


def test_epochs_fitted_to_the_budget_and_when_a_run_stops() -> None:
    assert fitted_epochs(300, images_per_s=20.0, train_images=2000) == 3
    assert fitted_epochs(300, images_per_s=2.0, train_images=2000) == 1  # never none
    assert not should_stop([100.0, 100.0], budget=300, slack=0.1)  # 200 + 100 <= 330
    assert should_stop([100.0, 140.0], budget=300, slack=0.1)  # 240 + 120 > 330
