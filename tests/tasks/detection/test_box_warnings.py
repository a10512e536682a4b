"""Opening detection data warns only when reading changed something (a box clipped or dropped, a file
skipped); background images and a YOLO image without a label file are what such data holds."""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from cnnlab.tasks.detection.task import Detection


def _labelled(root: Path, name: str, text: str | None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    Image.new("L", (100, 100), 90).save(root / "images" / f"{name}.png")
    if text is not None:
        (root / "labels" / f"{name}.txt").write_text(text)


def _warnings(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]


def test_background_images_alone_give_no_warning(tmp_path, caplog):
    root = tmp_path / "yolo"
    _labelled(root, "boxes", "0 0.5 0.5 0.2 0.4\n")
    _labelled(root, "empty", "")
    _labelled(root, "unlabelled", None)
    (root / "classes.txt").write_text("cat\n")
    with caplog.at_level(logging.INFO):
        source = Detection.open_data(root)
    assert len(source) == 3 and _warnings(caplog) == []
    assert source.targets.summary()["read"]["background_images"]["count"] == 2  # still recorded in data.json


def test_a_clipped_and_a_dropped_box_are_warned_about_with_the_background_images(tmp_path, caplog):
    root = tmp_path / "yolo"
    _labelled(root, "clipped", "0 0.95 0.5 0.2 0.4\n0 0.5 0.5 0 0.4\n")  # past the right edge; no width
    _labelled(root, "empty", "")
    (root / "classes.txt").write_text("cat\n")
    with caplog.at_level(logging.INFO):
        Detection.open_data(root)
    [warning] = _warnings(caplog)
    assert "2 images, 1 boxes" in warning
    assert "boxes clipped to the image: 1 (e.g. labels/clipped.txt" in warning
    assert "degenerate boxes: no width or height after clipping, or not finite (dropped): 1" in warning
    assert "images without boxes (background images): 1" in warning
