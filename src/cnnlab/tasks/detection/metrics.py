"""Detection metrics: COCO's mAP, computed exactly as pycocotools' COCOeval does for boxes, streaming.

`DetectionMeter` takes predictions and ground truth image by image, matches them at once and keeps
only what the average precision needs per detection (its score, its class, and at each IoU threshold
whether it found an object or is ignored), so nothing of the images or the network's outputs is held.
`compute()` then gives mAP@[.5:.95], mAP@.5, mAP@.75 and AP per class with the numbers pycocotools'
`COCOeval(iouType="bbox")` gives for the area range "all" and 100 detections per image, rule by rule:

* per image and class, detections are sorted by score with a stable sort (ties keep their input
  order) and only the first `max_detections` are kept;
* ground-truth boxes are sorted with the ignored ones (crowd, difficult) last; each detection in turn
  takes, at each IoU threshold, the free box of its class with the highest IoU ≥ the threshold (on an
  equal IoU the later box wins), preferring any normal box to an ignored one; a detection on an
  ignored box is neither a true nor a false positive;
* a crowd region (flag 1, COCO's iscrowd) may take any number of detections, and its IoU is the
  intersection over the detection's own area; a difficult box (flag 2, Pascal VOC) is ignored in the
  same way, so duplicates on it are not counted either (as the VOC devkit does), but with plain IoU;
* across images (in the order they were given) each class's detections are sorted by score, stably;
  precision is made non-increasing from the right, and read at the 101 recall points 0, .01 … 1 at
  the first detection whose recall reaches each point (`searchsorted(side="left")`), 0 past the end;
* a class without normal ground-truth boxes has no AP (None) and is left out of every mean.

Boxes arrive as x1, y1, x2, y2 in continuous pixel coordinates and are turned into x, y, w, h as
pycocotools holds them; areas and IoUs are computed from those with the same floating-point steps
(w × h, no "+1" as the VOC devkit adds for integer pixel indices), so the results match to the bit.

Ties in score across images are broken by image order, which is why `merge` appends: the numbers
can differ from a one-process run only where two images' detections have exactly equal scores.

    >>> meter = DetectionMeter(["cat", "dog"])
    >>> meter.update([{"boxes": [[10, 10, 50, 50]], "scores": [0.9], "labels": [0]}],
    ...              [{"boxes": [[12, 10, 50, 52]], "labels": [0]}])
    >>> result = meter.compute()
    >>> round(result["map50"], 6), result["per_class"]["dog"]["ap"]  # precision 1 / (1 + ε), as COCO's
    (1.0, None)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cnnlab.errors import ConfigError, DataError

NORMAL, CROWD, DIFFICULT = 0, 1, 2  # ground-truth flags
# pycocotools' grids, built as it builds them (np.arange would drift off .75 and 1.0).
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
_AREA_ALL = (0.0, 1e5 ** 2)  # COCO's area range "all": only absurd boxes fall outside it
_CURVE_IOU = 0.5  # the precision-recall curves kept for the plots


class DetectionMeter:
    """Streams predictions and ground truth; `compute()` gives COCO's numbers (see the module's doc).

    Each image is a mapping (or an object with attributes): predictions have "boxes" (k, 4) x1 y1 x2 y2,
    "scores" (k,) and "labels" (k,); ground truth has "boxes", "labels" and optionally "flags" (k,)
    (0 normal, 1 crowd, 2 difficult). Labels are contiguous class indices. NumPy arrays, torch
    tensors (on any device) and nested lists are all accepted.

    The confusion matrix counts, per image, the detections the AP sees that score at least
    `confusion_score`: detection and normal ground-truth box pairs with IoU ≥ `confusion_iou`,
    whatever their classes, are taken one to one, highest IoU first (ties: the higher-scored
    detection first); a taken pair counts at (true class, predicted class); a box left over was
    missed (true class, background); a detection left over is a false positive (background,
    predicted class) unless it lies on a crowd or difficult box at that IoU, which ignores it.
    """

    def __init__(self, class_names: Sequence[str], *, iou_thresholds: Sequence[float] = COCO_IOU_THRESHOLDS,
                 max_detections: int = 100, confusion_iou: float = 0.5, confusion_score: float = 0.25):
        self.class_names = [str(name) for name in class_names]
        self.iou_thresholds = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
        self.max_detections = int(max_detections)
        self.confusion_iou = float(confusion_iou)
        self.confusion_score = float(confusion_score)
        if not self.class_names:
            raise ConfigError("DetectionMeter needs at least one class name")
        if not len(self.iou_thresholds) or not np.all((self.iou_thresholds > 0) & (self.iou_thresholds <= 1)):
            raise ConfigError(f"iou_thresholds must be values in (0, 1]; got {self.iou_thresholds.tolist()}")
        if self.max_detections < 1:
            raise ConfigError(f"max_detections must be at least 1; got {max_detections}")
        classes = len(self.class_names)
        self.images = 0
        self.objects = 0
        self.truths = np.zeros(classes, dtype=np.int64)  # normal boxes per class: recall's denominator
        self.ignored_truths = np.zeros(classes, dtype=np.int64)  # crowd and difficult boxes
        self.confusion_matrix = np.zeros((classes + 1, classes + 1), dtype=np.int64)
        # One entry per update: the evaluated detections, each image's in score order, images in order.
        self._scores: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._matched: list[np.ndarray] = []  # (n, thresholds): took a ground-truth box
        self._ignored: list[np.ndarray] = []  # (n, thresholds): that box was crowd or difficult

    # ---- feeding -----------------------------------------------------------------------------

    def update(self, predictions: Sequence[Any], ground_truth: Sequence[Any]) -> None:
        """Add a batch: one prediction and one ground truth per image, in the same order."""
        if len(predictions) != len(ground_truth):
            raise DataError(f"DetectionMeter.update got {len(predictions)} predictions for "
                            f"{len(ground_truth)} ground truths; give one of each per image")
        results = [self._evaluate_image(*_read_prediction(prediction, len(self.class_names)),
                                        *_read_truth(truth, len(self.class_names)))
                   for prediction, truth in zip(predictions, ground_truth)]
        if results:
            for store, part in zip((self._scores, self._labels, self._matched, self._ignored), zip(*results)):
                store.append(np.concatenate(part))

    def _evaluate_image(self, boxes, scores, labels, truth_boxes, truth_labels, flags):
        classes = len(self.class_names)
        order = np.argsort(-scores, kind="mergesort")  # as pycocotools: ties keep their input order
        boxes, scores, labels = boxes[order], scores[order], labels[order]
        kept = _first_per_class(labels, self.max_detections)
        boxes, scores, labels = boxes[kept], scores[kept], labels[kept]

        truth_ignored = (flags != NORMAL) | _outside_area(truth_boxes)
        truth_order = np.argsort(truth_ignored, kind="mergesort")  # ignored boxes last
        truth_boxes, truth_labels = truth_boxes[truth_order], truth_labels[truth_order]
        flags, truth_ignored = flags[truth_order], truth_ignored[truth_order]

        iou = coco_iou(boxes, truth_boxes, crowd=flags == CROWD)
        iou[labels[:, None] != truth_labels[None, :]] = -1.0  # only boxes of the same class can match
        matched, on_ignored = match_detections(iou, self.iou_thresholds, truth_ignored, reusable=flags != NORMAL)
        ignored = on_ignored | (~matched & _outside_area(boxes)[:, None])

        self.images += 1
        self.objects += len(truth_labels)
        self.truths += np.bincount(truth_labels[~truth_ignored], minlength=classes)
        self.ignored_truths += np.bincount(truth_labels[truth_ignored], minlength=classes)
        self.confusion_matrix += detection_confusion(
            boxes, scores, labels, truth_boxes, truth_labels, flags, classes,
            iou_threshold=self.confusion_iou, score_threshold=self.confusion_score)
        return scores, labels, matched, ignored

    # ---- DDP: state, rebuild, merge ----------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Everything the meter holds, as plain Python and NumPy (picklable: all_gather_object it)."""
        scores, labels, matched, ignored = self._detections()
        return {"class_names": list(self.class_names), "iou_thresholds": self.iou_thresholds.copy(),
                "max_detections": self.max_detections, "confusion_iou": self.confusion_iou,
                "confusion_score": self.confusion_score, "images": self.images, "objects": self.objects,
                "truths": self.truths.copy(), "ignored_truths": self.ignored_truths.copy(),
                "confusion_matrix": self.confusion_matrix.copy(), "scores": scores, "labels": labels,
                "matched": matched, "ignored": ignored}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "DetectionMeter":
        meter = cls(state["class_names"], iou_thresholds=state["iou_thresholds"],
                    max_detections=state["max_detections"], confusion_iou=state["confusion_iou"],
                    confusion_score=state["confusion_score"])
        meter.images, meter.objects = int(state["images"]), int(state["objects"])
        meter.truths = np.array(state["truths"], dtype=np.int64)
        meter.ignored_truths = np.array(state["ignored_truths"], dtype=np.int64)
        meter.confusion_matrix = np.array(state["confusion_matrix"], dtype=np.int64)
        meter._scores = [np.array(state["scores"], dtype=np.float64)]
        meter._labels = [np.array(state["labels"], dtype=np.int64)]
        thresholds = len(meter.iou_thresholds)
        meter._matched = [np.array(state["matched"], dtype=bool).reshape(-1, thresholds)]
        meter._ignored = [np.array(state["ignored"], dtype=bool).reshape(-1, thresholds)]
        return meter

    def merge(self, other: "DetectionMeter | Mapping[str, Any]") -> "DetectionMeter":
        """Add another meter's images after this one's (another DDP rank's, or its `state()`)."""
        if isinstance(other, Mapping):
            other = DetectionMeter.from_state(other)
        mine = (self.class_names, self.iou_thresholds.tolist(), self.max_detections, self.confusion_iou,
                self.confusion_score)
        theirs = (other.class_names, other.iou_thresholds.tolist(), other.max_detections, other.confusion_iou,
                  other.confusion_score)
        if mine != theirs:
            raise ConfigError(f"cannot merge detection meters with different settings: {mine} and {theirs}")
        self.images += other.images
        self.objects += other.objects
        self.truths += other.truths
        self.ignored_truths += other.ignored_truths
        self.confusion_matrix += other.confusion_matrix
        for store, part in zip((self._scores, self._labels, self._matched, self._ignored), other._detections()):
            store.append(part)
        return self

    def _detections(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        thresholds = len(self.iou_thresholds)
        return (np.concatenate([np.zeros(0, np.float64), *self._scores]),
                np.concatenate([np.zeros(0, np.int64), *self._labels]),
                np.concatenate([np.zeros((0, thresholds), bool), *self._matched]),
                np.concatenate([np.zeros((0, thresholds), bool), *self._ignored]))

    # ---- results -----------------------------------------------------------------------------

    def precision_table(self) -> tuple[np.ndarray, np.ndarray]:
        """COCOeval's `eval["precision"]` (thresholds, 101 recall points, classes) and
        `eval["recall"]` (thresholds, classes) for area "all" at `max_detections`; -1 where a class
        has no normal ground truth."""
        scores, labels, matched, ignored = self._detections()
        thresholds, classes = len(self.iou_thresholds), len(self.class_names)
        precision = -np.ones((thresholds, len(RECALL_POINTS), classes))
        recall = -np.ones((thresholds, classes))
        for index in np.flatnonzero(self.truths):
            mine = labels == index
            precision[:, :, index], recall[:, index] = class_precision(
                scores[mine], matched[mine], ignored[mine], int(self.truths[index]))
        return precision, recall

    def compute(self) -> dict[str, Any]:
        """The metrics as JSON-ready values (see the report's layout in the module's tests)."""
        precision, recall = self.precision_table()
        at_50, at_75 = self._threshold_index(0.5), self._threshold_index(0.75)
        curve_index = at_50 if at_50 is not None else 0
        detections = np.bincount(np.concatenate([np.zeros(0, np.int64), *self._labels]),
                                 minlength=len(self.class_names))
        per_class = {}
        for index, name in enumerate(self.class_names):
            table = precision[:, :, index]
            per_class[name] = {
                "ap": _mean_defined(table),
                "ap50": None if at_50 is None else _mean_defined(table[at_50]),
                "ap75": None if at_75 is None else _mean_defined(table[at_75]),
                "gt": int(self.truths[index]), "gt_ignored": int(self.ignored_truths[index]),
                "detections": int(detections[index])}
        return {
            "map": _mean_defined(precision),
            "map50": None if at_50 is None else _mean_defined(precision[at_50]),
            "map75": None if at_75 is None else _mean_defined(precision[at_75]),
            "mar": _mean_defined(recall),
            "per_class": per_class,
            "images": self.images, "objects": self.objects, "detections": int(detections.sum()),
            "iou_thresholds": self.iou_thresholds.tolist(), "max_detections": self.max_detections,
            "precision_recall": {
                "iou": float(self.iou_thresholds[curve_index]), "recall": RECALL_POINTS.tolist(),
                "precision": {name: (precision[curve_index, :, index].tolist() if self.truths[index] else None)
                              for index, name in enumerate(self.class_names)}},
            "confusion_matrix": {"labels": [*self.class_names, "background"],
                                 "counts": self.confusion_matrix.tolist(),
                                 "iou": self.confusion_iou, "score": self.confusion_score},
        }

    def _threshold_index(self, iou: float) -> int | None:
        found = np.flatnonzero(np.isclose(self.iou_thresholds, iou, rtol=0.0, atol=1e-9))
        return int(found[0]) if len(found) else None


# ---- one image ---------------------------------------------------------------------------------

def coco_iou(boxes: np.ndarray, truth_boxes: np.ndarray, *, crowd: np.ndarray) -> np.ndarray:
    """IoU (detections, truths) of x, y, w, h boxes, with pycocotools' arithmetic (its C `bbIou`):
    against a crowd region the union is the detection's own area."""
    x, y, w, h = (boxes[:, i, None] for i in range(4))
    tx, ty, tw, th = (truth_boxes[None, :, i] for i in range(4))
    overlap_w = np.minimum(x + w, tx + tw) - np.maximum(x, tx)
    overlap_h = np.minimum(y + h, ty + th) - np.maximum(y, ty)
    intersection = overlap_w * overlap_h
    area = w * h
    union = np.where(crowd[None, :], area, area + tw * th - intersection)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((overlap_w > 0) & (overlap_h > 0), intersection / union, 0.0)


def match_detections(iou: np.ndarray, thresholds: np.ndarray, truth_ignored: np.ndarray, *,
                     reusable: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.evaluateImg's greedy matching, all IoU thresholds at once.

    `iou` is (detections in score order, truths with the ignored ones last), -1 where the classes
    differ. Returns (matched, on_ignored), each (detections, thresholds)."""
    count, thresholds_count = len(iou), len(thresholds)
    matched = np.zeros((count, thresholds_count), dtype=bool)
    on_ignored = np.zeros((count, thresholds_count), dtype=bool)
    if iou.size == 0:
        return matched, on_ignored
    floors = np.minimum(thresholds, 1 - 1e-10)[:, None]  # pycocotools caps them below 1
    taken = np.zeros((thresholds_count, iou.shape[1]), dtype=bool)
    last = iou.shape[1] - 1
    for detection in np.flatnonzero((iou >= floors.min()).any(axis=1)):  # the others match nothing
        candidates = (iou[detection] >= floors) & ~taken  # (thresholds, truths)
        normal = candidates & ~truth_ignored
        # A normal box, if any qualifies, wins over every ignored one (pycocotools stops at them).
        pool = np.where(normal.any(axis=1, keepdims=True), normal, candidates)
        found = np.flatnonzero(pool.any(axis=1))
        # The highest IoU; on a tie the later box, as pycocotools' `if iou < best: continue` does.
        best = last - np.argmax(np.where(pool, iou[detection], -np.inf)[:, ::-1], axis=1)
        chosen = best[found]
        taken[found, chosen] = ~reusable[chosen]  # crowd and difficult boxes take any number
        matched[detection, found] = True
        on_ignored[detection, found] = truth_ignored[chosen]
    return matched, on_ignored


def detection_confusion(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, truth_boxes: np.ndarray,
                        truth_labels: np.ndarray, flags: np.ndarray, classes: int, *, iou_threshold: float,
                        score_threshold: float) -> np.ndarray:
    """One image's (classes + 1) × (classes + 1) counts, background last (rule: `DetectionMeter`'s doc)."""
    matrix = np.zeros((classes + 1, classes + 1), dtype=np.int64)
    confident = scores >= score_threshold
    boxes, labels = boxes[confident], labels[confident]
    normal = flags == NORMAL
    truth_labels_normal = truth_labels[normal]
    iou = coco_iou(boxes, truth_boxes[normal], crowd=np.zeros(int(normal.sum()), dtype=bool))
    detection_of, truth_of = np.nonzero(iou >= iou_threshold)
    order = np.argsort(-iou[detection_of, truth_of], kind="stable")
    detection_taken, truth_taken = np.zeros(len(boxes), bool), np.zeros(len(truth_labels_normal), bool)
    for detection, truth in zip(detection_of[order], truth_of[order]):
        if not detection_taken[detection] and not truth_taken[truth]:
            detection_taken[detection] = truth_taken[truth] = True
            matrix[truth_labels_normal[truth], labels[detection]] += 1
    np.add.at(matrix, (truth_labels_normal[~truth_taken], classes), 1)
    on_ignored = (coco_iou(boxes, truth_boxes[~normal], crowd=flags[~normal] == CROWD) >= iou_threshold).any(axis=1)
    np.add.at(matrix, (classes, labels[~detection_taken & ~on_ignored]), 1)
    return matrix


def _first_per_class(labels: np.ndarray, limit: int) -> np.ndarray:
    """Mask of the detections kept: the first `limit` of each class (they come in score order)."""
    kept = np.ones(len(labels), dtype=bool)
    counts = np.bincount(labels) if len(labels) else np.zeros(0, np.int64)
    for label in np.flatnonzero(counts > limit):
        kept[np.flatnonzero(labels == label)[limit:]] = False
    return kept


def _outside_area(boxes: np.ndarray) -> np.ndarray:
    area = boxes[:, 2] * boxes[:, 3]
    return (area < _AREA_ALL[0]) | (area > _AREA_ALL[1])


# ---- all images ----------------------------------------------------------------------------------

def class_precision(scores: np.ndarray, matched: np.ndarray, ignored: np.ndarray,
                    truths: int) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate for one class: (precision at the 101 recall points per threshold,
    final recall per threshold), from its detections over all images and its normal box count."""
    order = np.argsort(-scores, kind="mergesort")
    matched, ignored = matched[order].T, ignored[order].T  # (thresholds, detections)
    true_positives = np.cumsum(matched & ~ignored, axis=1).astype(float)
    false_positives = np.cumsum(~matched & ~ignored, axis=1).astype(float)
    recall = true_positives / truths
    precision = true_positives / (false_positives + true_positives + np.spacing(1))
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # non-increasing
    sampled = np.zeros((len(recall), len(RECALL_POINTS)))
    for threshold, (reached, best) in enumerate(zip(recall, envelope)):
        at = np.searchsorted(reached, RECALL_POINTS, side="left")
        inside = at < len(reached)  # recall never gets there: precision 0
        sampled[threshold, inside] = best[at[inside]]
    final_recall = recall[:, -1] if recall.shape[1] else np.zeros(len(recall))
    return sampled, final_recall


def _mean_defined(values: np.ndarray) -> float | None:
    """pycocotools' summary: the mean of the entries that are not -1 (-1: no ground truth)."""
    values = np.asarray(values)
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else None


# ---- reading inputs ------------------------------------------------------------------------------

def _read_prediction(item: Any, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = _boxes(_field(item, "boxes", "prediction"), "prediction")
    scores = _array(_field(item, "scores", "prediction"), np.float64).reshape(-1)
    labels = _labels(_field(item, "labels", "prediction"), classes, "prediction")
    if not len(boxes) == len(scores) == len(labels):
        raise DataError(f"a prediction has {len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels; "
                        "give one score and one label per box")
    if not np.isfinite(scores).all():
        raise DataError("a prediction has a score that is not a finite number (NaN or infinity)")
    return boxes, scores, labels


def _read_truth(item: Any, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = _boxes(_field(item, "boxes", "ground truth"), "ground truth")
    labels = _labels(_field(item, "labels", "ground truth"), classes, "ground truth")
    raw_flags = _field(item, "flags", "ground truth", required=False)
    flags = np.zeros(len(boxes), np.int64) if raw_flags is None else _array(raw_flags, np.int64).reshape(-1)
    if not len(boxes) == len(labels) == len(flags):
        raise DataError(f"a ground truth has {len(boxes)} boxes, {len(labels)} labels and {len(flags)} flags; "
                        "give one label and one flag per box")
    if np.any((flags < NORMAL) | (flags > DIFFICULT)):
        raise DataError(f"ground-truth flags must be 0 (normal), 1 (crowd) or 2 (difficult); got "
                        f"{sorted(set(flags.tolist()))}")
    return boxes, labels, flags


def _field(item: Any, name: str, kind: str, *, required: bool = True) -> Any:
    value = item.get(name) if isinstance(item, Mapping) else getattr(item, name, None)
    if value is None and required:
        raise DataError(f"a {kind} has no {name!r}; expected boxes, labels and "
                        f"{'scores' if kind == 'prediction' else 'optionally flags'}")
    return value


def _array(value: Any, dtype: type) -> np.ndarray:
    """NumPy from a NumPy array, a list or a torch tensor (without importing torch here)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu()
        if value.is_floating_point() and value.element_size() < 4:  # half, bfloat16: NumPy has no bfloat16
            value = value.float()
        value = value.numpy()
    return np.asarray(value, dtype=dtype)


def _boxes(value: Any, kind: str) -> np.ndarray:
    """x1, y1, x2, y2 → x, y, w, h as float64: pycocotools' own representation."""
    boxes = _array(value, np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise DataError(f"{kind} boxes have shape {tuple(boxes.shape)}; expected (k, 4): x1, y1, x2, y2")
    return np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)


def _labels(value: Any, classes: int, kind: str) -> np.ndarray:
    labels = _array(value, np.int64).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise DataError(f"{kind} labels must be class indices 0 to {classes - 1}; got "
                        f"{labels.min()} to {labels.max()}")
    return labels
