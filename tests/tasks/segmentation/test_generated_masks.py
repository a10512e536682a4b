"""fashion-mnist-masks: the canvases' layout, each item's silhouette as its class, the same bytes twice."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.data.mask_canvases import CLASS_NAMES, write_mask_canvases
from tests.conftest import FASHION_DIR, requires_fashion_mnist

pytestmark = requires_fashion_mnist
SMALL = {"canvas": 48, "train_images": 12, "val_images": 4, "test_images": 6, "max_items": 2}


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def test_the_same_arguments_give_the_same_bytes(tmp_path):
    first = write_mask_canvases(tmp_path / "a", fashion_mnist_dir=FASHION_DIR, **SMALL)
    second = write_mask_canvases(tmp_path / "b", fashion_mnist_dir=FASHION_DIR, **SMALL)
    assert _digest(first) == _digest(second)
    other = write_mask_canvases(tmp_path / "c", fashion_mnist_dir=FASHION_DIR, **SMALL, seed=1)
    assert _digest(first) != _digest(other)


def test_each_mask_is_its_items_silhouettes_with_their_classes(mask_canvases):
    from tests.tasks.segmentation.conftest import SMALL_SET
    from cnnlab.tasks.segmentation.task import Segmentation

    root = mask_canvases
    manifest = json.loads((root / "masks.json").read_text())
    assert manifest["classes"] == list(CLASS_NAMES)
    for split in ("train", "val", "test"):
        source = Segmentation.open_data(root, split=split)
        assert len(source) == SMALL_SET[f"{split}_images"] and source.class_names == list(CLASS_NAMES)
        for index, entry in enumerate(manifest["splits"][split][:20]):
            assert all(item["split"] == ("test" if split == "test" else "train") for item in entry["items"])
            pixels = np.asarray(Image.open(root / "images" / split / entry["file"]))
            mask = source.targets.indices(index)
            assert Image.open(root / "masks" / split / entry["file"]).mode == "P"
            assert np.array_equal(mask > 0, pixels > 0)  # the silhouettes: every visible pixel, nothing else
            classes = {item["class"] + 1 for item in entry["items"]}
            assert set(np.unique(mask)) - {0} <= classes
            for item in entry["items"]:  # each item owns pixels inside its box
                x1, y1, x2, y2 = item["box"]
                assert (mask[y1:y2, x1:x2] == item["class"] + 1).any()
