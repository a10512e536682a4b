"""Instance metrics: COCO's mask mAP (pycocotools' `COCOeval(iouType="segm")`) and box mAP, streaming.

`InstanceMeter` is the detection meter (tasks/detection/metrics.py: the matching and accumulation
rule by rule as pycocotools does them) with one mask per detection and per true object kept beside
the boxes, bit-packed (one bit per pixel: a 64×64 mask costs 512 bytes), so no image and no network
output is held. Mask mAP runs the very same matching with the masks' IoU in place of the boxes':

* IoU = |D ∩ T| / |D ∪ T|, and against a crowd region |D ∩ T| / |D| (pycocotools' `rleIou`);
  no common pixel (an empty mask included) is 0 — pycocotools gets there through the masks'
  bounding boxes first, which is the same number;
* intersections are counted exactly (bit counts), in float64 like pycocotools' `(double)i/(double)u`,
  so the numbers are pycocotools' to the bit (tests/tasks/instances/test_metrics.py).

Masks of one meter may have different sizes from image to image (each image's masks share its size).

    >>> import numpy as np
    >>> truth = np.zeros((1, 8, 8), bool); truth[0, 2:6, 2:6] = True
    >>> found = np.zeros((1, 8, 8), bool); found[0, 2:6, 2:5] = True   # 12 of the 16 pixels
    >>> meter = InstanceMeter(["coin"])
    >>> meter.update([{"boxes": [[2, 2, 5, 6]], "scores": [0.9], "labels": [0], "masks": found}],
    ...              [{"boxes": [[2, 2, 6, 6]], "labels": [0], "masks": truth}])
    >>> result = meter.compute()
    >>> round(result["mask_map50"], 4), round(result["mask_map"], 4), round(result["box_map"], 4)
    (1.0, 0.6, 0.6)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnnlab.errors import ConfigError, DataError
from cnnlab.tasks.detection.metrics import DetectionMeter

_BIT_COUNTS = np.array([bin(value).count("1") for value in range(256)], np.int64)
_HEADLINES = ("map", "map50", "map75", "mar")


class InstanceMeter(DetectionMeter):
    """`DetectionMeter` whose images also carry "masks" (k, H, W) (booleans, or 0/1) for every
    prediction and every true object, in the order of their boxes. `compute()` gives both scores:
    "mask_map", "mask_map50", "mask_map75", "mask_mar" and "box_map"... with "per_class" holding
    {"mask_ap", "mask_ap50", "box_ap", ...} per class, plus the detection meter's counts, the mask
    precision-recall curves and the boxes' confusion matrix."""

    def __init__(self, class_names: Sequence[str], **settings: Any):
        super().__init__(class_names, **settings)
        self._masks: list[np.ndarray] = []  # per image: its detections' packed masks (k, bytes)
        self._truth_masks: list[np.ndarray] = []
        self._sizes: list[tuple[int, int]] = []  # per image: (H, W) of its masks

    def update(self, predictions: Sequence[Any], ground_truth: Sequence[Any]) -> None:
        packed, truth_packed, sizes = [], [], []
        for number, (prediction, truth) in enumerate(zip(predictions, ground_truth)):
            masks, truth_masks = _masks(prediction, "prediction"), _masks(truth, "ground truth")
            if masks.shape[1:] != truth_masks.shape[1:] and len(masks) and len(truth_masks):
                raise DataError(f"image {number} of the batch: predicted masks of {masks.shape[1:]} pixels against "
                                f"true masks of {truth_masks.shape[1:]}; give both at the same size")
            sizes.append(tuple(truth_masks.shape[1:]) if len(truth_masks) else tuple(masks.shape[1:]))
            packed.append(_pack(masks))
            truth_packed.append(_pack(truth_masks))
        super().update(predictions, ground_truth)  # checks the boxes, labels and counts
        for index, (masks, truth_masks) in enumerate(zip(packed, truth_packed)):
            boxes_given = (len(_field_length(predictions[index], "scores")),
                           len(_field_length(ground_truth[index], "labels")))
            if (len(masks), len(truth_masks)) != boxes_given:
                raise DataError(f"image {index} of the batch: {len(masks)} predicted masks for {boxes_given[0]} boxes, "
                                f"{len(truth_masks)} true masks for {boxes_given[1]} objects; give one mask per box")
        self._masks += packed
        self._truth_masks += truth_packed
        self._sizes += sizes

    # ---- merging across processes ------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {**super().state(), "masks": list(self._masks), "truth_masks": list(self._truth_masks),
                "sizes": list(self._sizes)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "InstanceMeter":
        base = DetectionMeter.from_state(state)
        meter = cls(base.class_names, iou_thresholds=base.iou_thresholds, max_detections=base.max_detections,
                    confusion_iou=base.confusion_iou, confusion_score=base.confusion_score)
        meter._parts = base._parts
        meter._masks, meter._truth_masks = list(state["masks"]), list(state["truth_masks"])
        meter._sizes = [tuple(size) for size in state["sizes"]]
        return meter

    def merge(self, other: "DetectionMeter | Mapping[str, Any]") -> "InstanceMeter":
        if isinstance(other, Mapping):
            other = InstanceMeter.from_state(other)
        if not isinstance(other, InstanceMeter):
            raise ConfigError("an instance meter merges only with another instance meter (it needs the masks)")
        super().merge(other)
        self._masks += other._masks
        self._truth_masks += other._truth_masks
        self._sizes += other._sizes
        return self

    # ---- results -----------------------------------------------------------------------------

    def mask_iou(self, data: dict[str, np.ndarray], detections: np.ndarray, truths: np.ndarray,
                 crowd: np.ndarray) -> np.ndarray:
        """The masks' IoU of (kept detection, true object) index pairs (see the module docstring)."""
        found, truth = _rows(self._masks), _rows(self._truth_masks)
        found = found[data["index"][detections]]
        truth = truth[truths]
        intersection = _bit_count(found & truth)
        area, truth_area = _bit_count(found), _bit_count(truth)
        union = np.where(crowd, area, area + truth_area - intersection)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(intersection > 0, intersection / np.maximum(union, 1), 0.0).astype(np.float64)

    def compute(self, pair_iou: Any = None) -> dict[str, Any]:
        """Mask and box scores (see the class docstring); `pair_iou` is the meter's own."""
        masks = super().compute(self.mask_iou)
        boxes = super().compute()
        result = {key: value for key, value in masks.items() if key not in (*_HEADLINES, "per_class")}
        for kind, values in (("mask", masks), ("box", boxes)):
            result.update({f"{kind}_{key}": values[key] for key in _HEADLINES})
        result["per_class"] = {
            name: {"gt": values["gt"], "gt_ignored": values["gt_ignored"], "detections": values["detections"],
                   **{f"mask_{key}": values[key] for key in ("ap", "ap50", "ap75")},
                   **{f"box_{key}": boxes["per_class"][name][key] for key in ("ap", "ap50", "ap75")}}
            for name, values in masks["per_class"].items()}
        result["mask_area_pixels"] = int(sum(_bit_count(rows).sum() for rows in self._truth_masks))
        return result


def _field_length(item: Any, name: str) -> np.ndarray:
    value = item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value if value is not None else []).reshape(-1)


def _masks(item: Any, kind: str) -> np.ndarray:
    value = item.get("masks") if isinstance(item, Mapping) else getattr(item, "masks", None)
    if value is None:
        raise DataError(f"a {kind} has no 'masks'; the instance meter needs one (H, W) mask per box")
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    masks = np.asarray(value)
    if masks.size == 0:
        return np.zeros((0, *(masks.shape[1:] if masks.ndim == 3 else (0, 0))), bool)
    if masks.ndim != 3:
        raise DataError(f"{kind} masks have shape {masks.shape}; expected (k, H, W)")
    return masks > 0.5 if masks.dtype.kind == "f" else masks.astype(bool)


def _pack(masks: np.ndarray) -> np.ndarray:
    """(k, H, W) booleans → (k, ceil(H·W / 8)) bytes."""
    pixels = int(np.prod(masks.shape[1:]))
    return np.packbits(masks.reshape(len(masks), pixels), axis=1).reshape(len(masks), (pixels + 7) // 8)


def _rows(packed: list[np.ndarray]) -> np.ndarray:
    """Every image's packed masks as one (masks, bytes) array, shorter rows padded with zero bits."""
    width = max((rows.shape[1] for rows in packed), default=0)
    return np.concatenate([np.zeros((0, width), np.uint8),
                           *(np.pad(rows, ((0, 0), (0, width - rows.shape[1]))) for rows in packed)])


def _bit_count(rows: np.ndarray) -> np.ndarray:
    return _BIT_COUNTS[rows].sum(axis=1) if rows.size else np.zeros(len(rows), np.int64)
