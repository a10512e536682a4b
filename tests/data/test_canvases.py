"""The generated Fashion-MNIST canvases: deterministic, items from the right split, tight boxes, and
readable by the detection readers.

Generated from the real Fashion-MNIST files (small sets: a few seconds), once per module.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.canvases import (
    FASHION_MNIST_CLASSES,
    MAX_COVERED,
    MAX_IOU,
    VISIBLE_LEVEL,
    canvases_fingerprint,
    existing_fingerprint,
    item_pools,
    read_manifest,
    write_fashion_canvases,
)
from cnnlab.data.idx import find_idx_splits, read_idx_pair
from cnnlab.errors import DataError
from cnnlab.tasks.detection.formats import read_detection_dataset
from tests.data.conftest import FASHION_MNIST_DEBIAN

SMALL = {"train_images": 40, "val_images": 12, "test_images": 20}

pytestmark = pytest.mark.skipif(not (FASHION_MNIST_DEBIAN / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason=f"no Fashion-MNIST in {FASHION_MNIST_DEBIAN}")


@pytest.fixture(scope="module")
def canvases(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("canvases") / "yolo"
    return write_fashion_canvases(root, fashion_mnist_dir=FASHION_MNIST_DEBIAN, **SMALL)


@pytest.fixture(scope="module")
def fashion_mnist() -> dict[str, np.ndarray]:
    return {split: read_idx_pair(*files)[0] for split, files in find_idx_splits(FASHION_MNIST_DEBIAN).items()}


def _canvas_pixels(root: Path, split: str, file_name: str) -> np.ndarray:
    return np.asarray(Image.open(root / "images" / split / file_name))


def _all_canvases(root: Path) -> list[tuple[str, dict[str, Any]]]:
    return [(split, entry) for split, entries in read_manifest(root)["splits"].items() for entry in entries]


def _files(root: Path) -> dict[str, bytes]:
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_the_same_arguments_give_the_same_bytes(canvases: Path, tmp_path: Path) -> None:
    again = write_fashion_canvases(tmp_path / "again", fashion_mnist_dir=FASHION_MNIST_DEBIAN, **SMALL)
    first, second = _files(canvases), _files(again)
    assert len(first) == 1 + 1 + 2 * 72  # data.yaml, canvases.json, an image and a label file per canvas
    assert first == second
    other_seed = write_fashion_canvases(tmp_path / "seed1", fashion_mnist_dir=FASHION_MNIST_DEBIAN, seed=1, **SMALL)
    assert _files(other_seed)["images/train/train_00000.png"] != first["images/train/train_00000.png"]


def _rendered(item: np.ndarray, size: int) -> np.ndarray:
    """An item as the canvases should show it, computed here: bilinear scaling, faint pixels to 0, tight crop."""
    scaled = np.array(Image.fromarray(item).resize((size, size), Image.Resampling.BILINEAR))
    scaled[scaled < VISIBLE_LEVEL] = 0
    rows, columns = np.flatnonzero(scaled.any(axis=1)), np.flatnonzero(scaled.any(axis=0))
    return scaled[rows[0]:rows[-1] + 1, columns[0]:columns[-1] + 1]


def _alone(box: list[int], others: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    """Mask of the canvas pixels inside `box` that no other box covers."""
    mask = np.zeros(shape, bool)
    mask[box[1]:box[3], box[0]:box[2]] = True
    for other in others:
        mask[other[1]:other[3], other[0]:other[2]] = False
    return mask


def test_each_split_shows_items_of_its_own_fashion_mnist_split(canvases: Path, fashion_mnist) -> None:
    """The manifest says where every item came from; its pixels on the canvas prove it.

    Re-rendering an item from the split the manifest names must reproduce the canvas pixels; an
    item of the other split must not (which shows this comparison can fail).
    """
    indices: dict[str, set[int]] = {"train": set(), "val": set(), "test": set()}
    checked = 0
    for split, entry in _all_canvases(canvases):
        pixels = _canvas_pixels(canvases, split, entry["file"])
        boxes = [item["box"] for item in entry["items"]]
        for item in entry["items"]:
            assert item["split"] == ("test" if split == "test" else "train")
            indices[split].add(item["index"])
            x1, y1, x2, y2 = item["box"]
            mask = _alone(item["box"], [box for box in boxes if box is not item["box"]], pixels.shape)[y1:y2, x1:x2]
            if mask.sum() < 50:
                continue  # mostly covered by a neighbour: too little to compare
            claimed = _rendered(fashion_mnist[item["split"]][item["index"]], item["size"])
            assert claimed.shape == (y2 - y1, x2 - x1)
            np.testing.assert_array_equal(pixels[y1:y2, x1:x2][mask], claimed[mask])
            other = fashion_mnist["train" if item["split"] == "test" else "test"]
            impostor = _rendered(other[item["index"] % len(other)], item["size"])
            assert impostor.shape != claimed.shape or not np.array_equal(impostor[mask], claimed[mask])
            checked += 1
    assert checked >= 100
    pools = item_pools(60_000, 10_000, seed=0)
    for split, used in indices.items():
        assert used and used <= set(pools[split].tolist()), split


def test_validation_items_are_train_split_items_that_training_never_uses() -> None:
    pools = item_pools(60_000, 10_000, seed=0)
    assert len(pools["val"]) == 10_000 and not set(pools["train"].tolist()) & set(pools["val"].tolist())
    assert sorted(pools["train"].tolist() + pools["val"].tolist()) == list(range(60_000))
    assert pools["test"].tolist() == list(range(10_000))


def test_boxes_are_tight_around_the_visible_pixels_and_the_rest_is_black(canvases: Path) -> None:
    for split, entry in _all_canvases(canvases):
        pixels = _canvas_pixels(canvases, split, entry["file"])
        boxes = [item["box"] for item in entry["items"]]
        covered = np.zeros(pixels.shape, bool)
        for x1, y1, x2, y2 in boxes:
            covered[y1:y2, x1:x2] = True
            # Every edge of the box touches the item: its first and last rows and columns show pixels.
            assert pixels[y1, x1:x2].any() and pixels[y2 - 1, x1:x2].any()
            assert pixels[y1:y2, x1].any() and pixels[y1:y2, x2 - 1].any()
        assert not pixels[~covered].any(), entry["file"]  # just outside each box (and everywhere else): black


def test_some_canvases_are_empty_some_items_touch_and_none_overlap_much(canvases: Path) -> None:
    entries = [entry for _, entry in _all_canvases(canvases)]
    assert sum(not entry["items"] for entry in entries) >= 2
    touching = 0
    for entry in entries:
        for first, second in itertools.combinations([item["box"] for item in entry["items"]], 2):
            width = min(first[2], second[2]) - max(first[0], second[0])
            height = min(first[3], second[3]) - max(first[1], second[1])
            touching += width >= 0 and height >= 0 and (width <= 3 or height <= 3)
            intersection = max(width, 0) * max(height, 0)
            areas = [(box[2] - box[0]) * (box[3] - box[1]) for box in (first, second)]
            assert intersection / (sum(areas) - intersection) < MAX_IOU
            assert intersection < MAX_COVERED * min(areas)
    assert touching >= 5
    sizes = [item["size"] for entry in entries for item in entry["items"]]
    assert min(sizes) <= 25 and max(sizes) >= 40  # items of several sizes
    assert max(len(entry["items"]) for entry in entries) == 4


def test_the_yolo_canvases_read_back_with_their_boxes_and_classes(canvases: Path) -> None:
    manifest = read_manifest(canvases)
    for split in ("train", "val", "test"):
        dataset = read_detection_dataset(canvases, split=split)
        assert dataset.class_names == list(FASHION_MNIST_CLASSES) and dataset.category_ids == list(range(10))
        assert len(dataset) == SMALL[f"{split}_images"] and set(dataset.image_sizes) == {(96, 96)}
        for path, boxes, entry in zip(dataset.image_paths, dataset.annotations, manifest["splits"][split]):
            assert path.name == entry["file"]
            np.testing.assert_allclose(boxes.boxes, np.array([item["box"] for item in entry["items"]]).reshape(-1, 4),
                                       atol=1e-3, rtol=0)
            assert boxes.labels.tolist() == [item["class"] for item in entry["items"]]
        assert dataset.report.clipped.count == dataset.report.degenerate.count == 0


@pytest.mark.parametrize("fmt", ["coco", "voc"])
def test_coco_and_voc_canvases_read_back_with_exact_boxes(tmp_path: Path, fmt: str) -> None:
    root = write_fashion_canvases(tmp_path / fmt, fashion_mnist_dir=FASHION_MNIST_DEBIAN, format=fmt,
                                  train_images=10, val_images=3, test_images=5)
    manifest = read_manifest(root)
    for split in ("train", "val", "test"):
        dataset = read_detection_dataset(root, split=split)
        assert dataset.format == fmt and dataset.class_names == list(FASHION_MNIST_CLASSES)
        expected = [np.array([item["box"] for item in entry["items"]], np.float32).reshape(-1, 4)
                    for entry in manifest["splits"][split]]
        for boxes, wanted in zip(dataset.annotations, expected, strict=True):
            np.testing.assert_array_equal(boxes.boxes, wanted)


def test_the_fingerprint_follows_every_argument_and_is_recorded(canvases: Path) -> None:
    base = canvases_fingerprint(**SMALL)
    assert existing_fingerprint(canvases) == base
    variants = [{"format": "coco"}, {"canvas": 128}, {"train_images": 41}, {"val_images": 13},
                {"test_images": 21}, {"max_items": 3}, {"seed": 1}]
    fingerprints = {canvases_fingerprint(**{**SMALL, **change}) for change in variants}
    assert len(fingerprints) == len(variants) and base not in fingerprints


def test_canvases_are_replaced_whole_and_other_folders_left_alone(tmp_path: Path) -> None:
    root = tmp_path / "canvases"
    write_fashion_canvases(root, fashion_mnist_dir=FASHION_MNIST_DEBIAN, train_images=6, val_images=1, test_images=1)
    write_fashion_canvases(root, fashion_mnist_dir=FASHION_MNIST_DEBIAN, train_images=3, val_images=1, test_images=1)
    assert len(list((root / "images" / "train").iterdir())) == 3  # none left over from the first copy
    assert sorted(path.name for path in tmp_path.iterdir()) == ["canvases"]  # no partial copy left beside it
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(DataError, match="holds something other than canvases"):
        write_fashion_canvases(tmp_path / "photos", fashion_mnist_dir=FASHION_MNIST_DEBIAN, train_images=1)
    assert (tmp_path / "photos" / "holiday.jpg").read_bytes() == b"precious"
