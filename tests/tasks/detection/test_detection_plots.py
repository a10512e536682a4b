"""Detection plots: PNG files of the stated size, drawing the curves and the counts they are given."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.tasks.detection.metrics import DetectionMeter
from cnnlab.tasks.detection.plots import (
    draw_detection_confusion_matrix,
    draw_precision_recall,
    plot_detection_confusion_matrix,
    plot_precision_recall,
)

NAMES = ["cat", "dog", "bird"]


def _meter() -> DetectionMeter:
    """Two images: cats found (one with a false cat above it), a dog missed, no bird anywhere."""
    meter = DetectionMeter(NAMES)
    meter.update(
        [{"boxes": [[0, 0, 10, 10], [50, 50, 60, 60]], "scores": [0.6, 0.9], "labels": [0, 0]},
         {"boxes": [[0, 0, 20, 20], [30, 30, 40, 40]], "scores": [0.8, 0.7], "labels": [0, 1]}],
        [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "labels": [0, 1]},
         {"boxes": [[0, 0, 20, 21]], "labels": [0]}])
    return meter


def test_precision_recall_png_has_one_curve_per_class_with_its_ap(tmp_path):
    meter = _meter()
    result = meter.compute()
    path = plot_precision_recall(meter, tmp_path / "pr.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (770, 605)
    figure = draw_precision_recall(result)  # compute()'s result works as well as the meter
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    cat = result["per_class"]["cat"]
    assert f"cat (AP {cat['ap50']:.3f})" in lines and "all classes (mAP 0.333)" in lines
    assert not any(label.startswith("bird") for label in lines)  # no ground truth: no curve
    drawn = lines[f"cat (AP {cat['ap50']:.3f})"].get_ydata()
    expected = np.asarray(result["precision_recall"]["precision"]["cat"])
    np.testing.assert_allclose(drawn, expected[: len(drawn)])
    assert expected[len(drawn):].sum() == 0  # only zeros left off, past the class's last recall
    assert "1 class without ground truth" in figure.axes[0].get_title()


def test_many_classes_colour_and_name_only_the_lowest_ap_ones():
    recall = np.linspace(0, 1, 101)
    curves = {"iou": 0.5, "recall": recall.tolist(),
              "precision": {f"c{index}": np.full(101, index / 30).tolist() for index in range(30)}}
    figure = draw_precision_recall(curves)
    labels = [line.get_label() for line in figure.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert labels == ["the 20 other classes", *[f"c{i} (AP {i / 30:.3f})" for i in range(10)],
                      f"all classes (mAP {np.mean(np.arange(30) / 30):.3f})"]


def test_detection_confusion_matrix_png_shows_the_counts_it_is_given(tmp_path):
    meter = _meter()
    counts = meter.compute()["confusion_matrix"]["counts"]
    assert counts == [[2, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0]]
    path = plot_detection_confusion_matrix(counts, NAMES, tmp_path / "confusion.png")
    side = min(4.0 + 0.5 * 4, 16.0)
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (round((side + 1.2) * 110), round(side * 110))
    figure = draw_detection_confusion_matrix(counts, [*NAMES, "background"])
    axes = figure.axes[0]
    drawn = {}
    for text in axes.texts:  # each count is drawn at (column, row)
        column, row = text.get_position()
        drawn[round(row), round(column)] = text.get_text()
    expected = {(row, column): str(counts[row][column]) for row in range(4) for column in range(4)
                if (row, column) != (3, 3)}  # background-background means nothing: left blank
    assert drawn == expected
    assert [tick.get_text() for tick in axes.get_xticklabels()] == [*NAMES, "background"]


def test_confusion_matrix_labels_must_fit_the_matrix():
    with pytest.raises(ValueError, match="needs 4 labels"):
        draw_detection_confusion_matrix(np.zeros((4, 4), int), ["a", "b"])
