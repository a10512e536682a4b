"""Mask mAP equals pycocotools' COCOeval(iouType="segm") on random masks, edge cases included."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.tasks.instances.metrics import InstanceMeter

pycocotools = pytest.importorskip("pycocotools")


def _blob(random: np.random.RandomState, size: tuple[int, int], near: np.ndarray | None = None) -> np.ndarray:
    """A random rectangle-ish blob (a rectangle with a few pixels flipped), near another mask or anywhere."""
    height, width = size
    mask = np.zeros(size, bool)
    if near is not None and near.any() and random.rand() < 0.8:
        ys, xs = np.nonzero(near)
        y1, x1 = ys.min() + random.randint(-1, 2), xs.min() + random.randint(-1, 2)
        y2, x2 = ys.max() + random.randint(0, 3), xs.max() + random.randint(0, 3)
    else:
        y1, x1 = random.randint(0, height - 8), random.randint(0, width - 8)
        y2, x2 = y1 + random.randint(6, height // 2 + 4), x1 + random.randint(6, width // 2 + 4)
    mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    around = np.zeros(size, bool)
    around[max(y1 - 1, 0):max(y2 + 1, 0), max(x1 - 1, 0):max(x2 + 1, 0)] = True
    mask ^= around & (random.rand(*size) < 0.08)  # a ragged edge and holes: masks that boxes do not describe
    return mask


def _box(mask: np.ndarray) -> list[float]:
    if not mask.any():
        return [0.0, 0.0, 0.0, 0.0]
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def _random_images(seed: int, images: int = 12, classes: int = 3):
    random = np.random.RandomState(seed)
    predictions, truths = [], []
    for image in range(images):
        size = (24 + 8 * (image % 3), 32)
        count = random.randint(0, 5) if image % 5 else 0  # some images without objects
        truth_masks = [_blob(random, size) for _ in range(count)]
        labels = random.randint(0, classes, count)
        flags = (random.rand(count) < 0.15).astype(int)  # crowd regions
        found = []
        for mask, label in zip(truth_masks, labels):
            for _ in range(random.randint(0, 3)):  # misses, duplicates
                blob = _blob(random, size, near=mask)
                found.append((blob, label if random.rand() < 0.8 else random.randint(classes)))  # some mislabelled
        found += [(_blob(random, size), random.randint(classes)) for _ in range(random.randint(0, 3))]
        if image % 7 == 3:
            found = []  # an image without detections
        if found and image % 4 == 1:
            found.append((np.zeros(size, bool), 0))  # an empty mask
        scores = np.round(random.rand(len(found)), 2)  # rounded: ties, as pycocotools breaks them
        predictions.append({"masks": np.array([m for m, _ in found], bool).reshape(-1, *size),
                            "boxes": [_box(m) for m, _ in found], "scores": scores,
                            "labels": [int(c) for _, c in found]})
        truths.append({"masks": np.array(truth_masks, bool).reshape(-1, *size),
                       "boxes": [_box(m) for m in truth_masks], "labels": labels, "flags": flags})
    return predictions, truths


def _pycocotools(predictions, truths, classes: int, iou_type: str):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def rle(mask):
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        encoded["counts"] = encoded["counts"].decode("ascii")
        return encoded

    images, annotations, results = [], [], []
    for image, (prediction, truth) in enumerate(zip(predictions, truths), start=1):
        height, width = truth["masks"].shape[1:] if len(truth["masks"]) else prediction["masks"].shape[1:]
        images.append({"id": image, "width": int(width), "height": int(height)})
        for mask, box, label, flag in zip(truth["masks"], truth["boxes"], truth["labels"], truth["flags"]):
            x1, y1, x2, y2 = box
            annotations.append({"id": len(annotations) + 1, "image_id": image, "category_id": int(label) + 1,
                                "segmentation": rle(mask), "area": float(mask.sum()),
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": int(flag)})
        for mask, box, score, label in zip(prediction["masks"], prediction["boxes"], prediction["scores"],
                                           prediction["labels"]):
            x1, y1, x2, y2 = box
            results.append({"image_id": image, "category_id": int(label) + 1, "score": float(score),
                            "segmentation": rle(mask), "bbox": [x1, y1, x2 - x1, y2 - y1]})
    truth_api = COCO()
    truth_api.dataset = {"images": images, "annotations": annotations,
                         "categories": [{"id": c + 1, "name": str(c)} for c in range(classes)]}
    truth_api.createIndex()
    found_api = truth_api.loadRes(results) if results else COCO()
    evaluation = COCOeval(truth_api, found_api, iou_type)
    evaluation.params.imgIds = [image["id"] for image in images]
    evaluation.evaluate()
    evaluation.accumulate()
    return evaluation.eval["precision"][:, :, :, 0, 2]  # area all, 100 detections


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_map_equals_pycocotools(seed, capsys):
    classes = 3
    predictions, truths = _random_images(seed, classes=classes)
    meter = InstanceMeter([str(c) for c in range(classes)])
    for start in range(0, len(predictions), 5):  # streamed in batches
        meter.update(predictions[start:start + 5], truths[start:start + 5])
    result = meter.compute()
    for kind, iou_type in (("mask", "segm"), ("box", "bbox")):
        reference = _pycocotools(predictions, truths, classes, iou_type)
        defined = reference[reference > -1]
        assert result[f"{kind}_map"] == pytest.approx(float(np.mean(defined)), abs=1e-9)
        assert result[f"{kind}_map50"] == pytest.approx(float(np.mean(reference[0][reference[0] > -1])), abs=1e-9)
        for index in range(classes):
            column = reference[:, :, index]
            expected = float(np.mean(column[column > -1])) if (column > -1).any() else None
            assert result["per_class"][str(index)][f"{kind}_ap"] == pytest.approx(expected, abs=1e-9)
    assert 0.05 < result["mask_map"] < 0.9 and result["mask_map"] != result["box_map"]  # masks decided, not boxes


def test_no_detections_and_merging_across_processes():
    predictions, truths = _random_images(3, images=6)
    empty = [{"masks": np.zeros((0, *t["masks"].shape[1:]), bool), "boxes": [], "scores": [], "labels": []}
             for t in truths]
    meter = InstanceMeter(["0", "1", "2"])
    meter.update(empty, truths)
    assert meter.compute()["mask_map"] == 0.0
    whole, first, second = (InstanceMeter(["0", "1", "2"]) for _ in range(3))
    whole.update(predictions, truths)
    first.update(predictions[:3], truths[:3])
    second.update(predictions[3:], truths[3:])
    first.merge(second.state())
    assert first.compute()["mask_map"] == whole.compute()["mask_map"]
