"""Detection metrics: COCO's mAP, computed exactly as pycocotools' COCOeval does for boxes, streaming.

`DetectionMeter` takes predictions and ground truth a batch at a time and keeps, per image, only the
detected boxes with their scores and classes and the true boxes with their classes and flags (not
the images, not the network's outputs). `compute()` evaluates them all at once, vectorised, and
gives mAP@[.5:.95], mAP@.5, mAP@.75 and AP per class with the numbers of pycocotools'
`COCOeval(iouType="bbox")` for the area range "all" and 100 detections per image, rule by rule:

* per image and class, detections are sorted by score with a stable sort (ties keep their input
  order) and only the first `max_detections` are kept;
* each detection in turn takes, at each IoU threshold, the free true box of its class with the
  highest IoU ≥ the threshold (on an equal IoU the later box wins), preferring any normal box to an
  ignored one (crowd, difficult); a detection on an ignored box is neither a true nor a false positive;
* a crowd region (flag 1, COCO's iscrowd) may take any number of detections, and its IoU is the
  intersection over the detection's own area; a difficult box (flag 2, Pascal VOC) is ignored in the
  same way, so duplicates on it are not counted either (as the VOC devkit does), but with plain IoU;
* across images (in the order they were given) each class's detections are sorted by score, stably;
  precision is made non-increasing from the right, and read at the 101 recall points 0, .01 … 1 at
  the first detection whose recall reaches each point (`searchsorted(side="left")`), 0 past the end;
* a class without normal ground-truth boxes has no AP (None) and is left out of every mean.

Boxes arrive as x1, y1, x2, y2 in continuous pixel coordinates and are turned into x, y, w, h as
pycocotools holds them; areas and IoUs are computed from those with its floating-point steps
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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cnnlab.errors import ConfigError, DataError

NORMAL, CROWD, DIFFICULT = 0, 1, 2  # ground-truth flags
# pycocotools' grids, built as it builds them (np.arange would drift off .75 and 1.0).
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
_AREA_ALL = (0.0, 1e5 ** 2)  # COCO's area range "all": only absurd boxes fall outside it
_FIELDS = ("boxes", "scores", "labels", "detections_per_image", "truth_boxes", "truth_labels", "flags",
           "truths_per_image")  # what the meter keeps, flat over its images
PairIou = Callable[[dict, np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (kept data, detections, truths, crowd)
_DTYPES = {"boxes": np.float64, "scores": np.float64, "truth_boxes": np.float64}


class DetectionMeter:
    """Streams predictions and ground truth; `compute()` gives COCO's numbers (see the module's doc).

    Each image is a mapping (or an object with attributes): predictions have "boxes" (k, 4) x1 y1 x2 y2,
    "scores" (k,) and "labels" (k,); ground truth has "boxes", "labels" and optionally "flags" (k,)
    (0 normal, 1 crowd, 2 difficult). Labels are contiguous class indices. NumPy arrays, torch
    tensors (on any device) and nested lists are all accepted.

    The confusion matrix counts the detections the AP sees that score at least `confusion_score`:
    in each image, detection and normal true box pairs with IoU ≥ `confusion_iou`, whatever their
    classes, are taken one to one, highest IoU first (ties: the higher-scored detection first); a
    taken pair counts at (true class, predicted class); a box left over was missed (true class,
    background); a detection left over is a false positive (background, predicted class) unless it
    lies on a crowd or difficult box at that IoU, which ignores it as the AP does.
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
        self._parts: dict[str, list[np.ndarray]] = {field: [] for field in _FIELDS}  # one entry per update

    @property
    def images(self) -> int:
        return sum(len(part) for part in self._parts["detections_per_image"])

    # ---- feeding and merging -----------------------------------------------------------------

    def update(self, predictions: Sequence[Any], ground_truth: Sequence[Any]) -> None:
        """Add a batch: one prediction and one ground truth per image, in the same order."""
        if len(predictions) != len(ground_truth):
            raise DataError(f"DetectionMeter.update got {len(predictions)} predictions for "
                            f"{len(ground_truth)} ground truths; give one of each per image")
        classes = len(self.class_names)
        images = [(*_read_prediction(prediction, classes), *_read_truth(truth, classes))
                  for prediction, truth in zip(predictions, ground_truth)]
        if not images:
            return
        boxes, scores, labels, truth_boxes, truth_labels, flags = zip(*images)
        batch = {"boxes": boxes, "scores": scores, "labels": labels, "truth_boxes": truth_boxes,
                 "truth_labels": truth_labels, "flags": flags}
        for field, arrays in batch.items():
            self._parts[field].append(np.concatenate(arrays))
        self._parts["detections_per_image"].append(np.array([len(s) for s in scores], dtype=np.int64))
        self._parts["truths_per_image"].append(np.array([len(t) for t in truth_labels], dtype=np.int64))

    def state(self) -> dict[str, Any]:
        """Everything the meter holds, as plain Python and NumPy (picklable: all_gather_object it).
        Its boxes are x, y, w, h (COCO's), not the x1, y1, x2, y2 that `update` takes."""
        return {"class_names": list(self.class_names), "iou_thresholds": self.iou_thresholds.copy(),
                "max_detections": self.max_detections, "confusion_iou": self.confusion_iou,
                "confusion_score": self.confusion_score, **self._gathered()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "DetectionMeter":
        meter = cls(state["class_names"], iou_thresholds=state["iou_thresholds"],
                    max_detections=state["max_detections"], confusion_iou=state["confusion_iou"],
                    confusion_score=state["confusion_score"])
        for field in _FIELDS:
            meter._parts[field].append(np.array(state[field], dtype=_DTYPES.get(field, np.int64)))
        meter._parts["boxes"][0] = meter._parts["boxes"][0].reshape(-1, 4)
        meter._parts["truth_boxes"][0] = meter._parts["truth_boxes"][0].reshape(-1, 4)
        return meter

    def merge(self, other: "DetectionMeter | Mapping[str, Any]") -> "DetectionMeter":
        """Add another meter's images after this one's (another DDP rank's, or its `state()`)."""
        if isinstance(other, Mapping):
            other = DetectionMeter.from_state(other)
        mine, theirs = self._settings(), other._settings()
        if mine != theirs:
            raise ConfigError(f"cannot merge detection meters with different settings: {mine} and {theirs}")
        for field, values in other._gathered().items():
            self._parts[field].append(values)
        return self

    def _settings(self) -> tuple:
        return (self.class_names, self.iou_thresholds.tolist(), self.max_detections, self.confusion_iou,
                self.confusion_score)

    def _gathered(self) -> dict[str, np.ndarray]:
        gathered = {}
        for field in _FIELDS:
            empty = np.zeros((0, 4) if field.endswith("boxes") else 0, dtype=_DTYPES.get(field, np.int64))
            gathered[field] = np.concatenate([empty, *self._parts[field]])
        return gathered

    # ---- results -----------------------------------------------------------------------------

    def evaluated(self, pair_iou: PairIou | None = None) -> dict[str, np.ndarray]:
        """The matching, as COCOeval.evaluateImg leaves it: the detections kept (each image's in
        score order), their "scores", "labels", and at each IoU threshold whether each was
        "matched" and whether that was to an "ignored" box; and per class the count of normal
        "truths" and of "ignored_truths". `pair_iou(data, detections, truths, crowd)` gives the IoU of
        index pairs into `_kept()`'s data where it is not the boxes' (masks: tasks/instances/metrics.py)."""
        data, classes = self._kept(), len(self.class_names)
        boxes, labels, truth_labels = data["boxes"], data["labels"], data["truth_labels"]
        truth_ignored = (data["flags"] != NORMAL) | _outside_area(data["truth_boxes"])
        groups, truth_groups = data["image"] * classes + labels, data["truth_image"] * classes + truth_labels
        matched, on_ignored = match_detections(
            boxes, groups, data["truth_boxes"], truth_groups, self.iou_thresholds,
            crowd=data["flags"] == CROWD, ignored=truth_ignored, reusable=data["flags"] != NORMAL,
            pair_iou=None if pair_iou is None else (lambda box, truth, crowd: pair_iou(data, box, truth, crowd)))
        return {"scores": data["scores"], "labels": labels, "matched": matched,
                "ignored": on_ignored | (~matched & _outside_area(boxes)[:, None]),
                "truths": np.bincount(truth_labels[~truth_ignored], minlength=classes),
                "ignored_truths": np.bincount(truth_labels[truth_ignored], minlength=classes)}

    def _kept(self) -> dict[str, np.ndarray]:
        """All images' data with each box's "image" index, and of the detections only those COCO
        evaluates, grouped by image and class, by score within a group."""
        data = self._gathered()
        data["index"] = np.arange(len(data["scores"]))  # each kept detection's place among all of them
        data["image"] = np.repeat(np.arange(len(data["detections_per_image"])), data["detections_per_image"])
        data["truth_image"] = np.repeat(np.arange(len(data["truths_per_image"])), data["truths_per_image"])
        groups = data["image"] * len(self.class_names) + data["labels"]
        kept = _score_order_kept(groups, data["scores"], self.max_detections)
        for field in ("boxes", "scores", "labels", "image", "index"):
            data[field] = data[field][kept]
        return data

    def precision_table(self, evaluated: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """COCOeval's `eval["precision"]` (thresholds, 101 recall points, classes) and
        `eval["recall"]` (thresholds, classes) for area "all" at `max_detections`; -1 where a class
        has no normal ground truth."""
        evaluated = self.evaluated() if evaluated is None else evaluated
        thresholds, classes = len(self.iou_thresholds), len(self.class_names)
        precision = -np.ones((thresholds, len(RECALL_POINTS), classes))
        recall = -np.ones((thresholds, classes))
        for index in np.flatnonzero(evaluated["truths"]):
            mine = evaluated["labels"] == index
            precision[:, :, index], recall[:, index] = class_precision(
                evaluated["scores"][mine], evaluated["matched"][mine], evaluated["ignored"][mine],
                int(evaluated["truths"][index]))
        return precision, recall

    def confusion_matrix(self) -> np.ndarray:
        """(classes + 1) × (classes + 1) counts, rows true, columns predicted, background last."""
        data = self._kept()
        confident = data["scores"] >= self.confusion_score
        return detection_confusion(
            data["boxes"][confident], data["scores"][confident], data["labels"][confident],
            data["image"][confident], data["truth_boxes"], data["truth_labels"], data["truth_image"],
            data["flags"], len(self.class_names), iou_threshold=self.confusion_iou)

    def compute(self, pair_iou: PairIou | None = None) -> dict[str, Any]:
        """The metrics, JSON-ready: "map", "map50", "map75", "mar" (COCO's AR@max_detections),
        "per_class" {name: {"ap", "ap50", "ap75", "gt", "gt_ignored", "detections"}}, "images",
        "objects", "detections", "iou_thresholds", "max_detections", "precision_recall" (curves for
        the plots) and "confusion_matrix" {"labels", "counts", "iou", "score"}. Undefined: None.
        `pair_iou`: as for `evaluated` (the confusion matrix stays the boxes')."""
        evaluated = self.evaluated(pair_iou)
        precision, recall = self.precision_table(evaluated)
        at_50, at_75 = self._threshold_index(0.5), self._threshold_index(0.75)
        curve_index = at_50 if at_50 is not None else 0
        detections = np.bincount(evaluated["labels"], minlength=len(self.class_names))
        per_class = {}
        for index, name in enumerate(self.class_names):
            table = precision[:, :, index]
            per_class[name] = {
                "ap": _mean_defined(table),
                "ap50": None if at_50 is None else _mean_defined(table[at_50]),
                "ap75": None if at_75 is None else _mean_defined(table[at_75]),
                "gt": int(evaluated["truths"][index]), "gt_ignored": int(evaluated["ignored_truths"][index]),
                "detections": int(detections[index])}
        return {
            "map": _mean_defined(precision),
            "map50": None if at_50 is None else _mean_defined(precision[at_50]),
            "map75": None if at_75 is None else _mean_defined(precision[at_75]),
            "mar": _mean_defined(recall),
            "per_class": per_class,
            "images": self.images,
            "objects": int(evaluated["truths"].sum() + evaluated["ignored_truths"].sum()),
            "detections": int(detections.sum()),
            "iou_thresholds": self.iou_thresholds.tolist(), "max_detections": self.max_detections,
            "precision_recall": {
                "iou": float(self.iou_thresholds[curve_index]), "recall": RECALL_POINTS.tolist(),
                "precision": {name: (precision[curve_index, :, index].tolist() if evaluated["truths"][index]
                                     else None) for index, name in enumerate(self.class_names)}},
            "confusion_matrix": {"labels": [*self.class_names, "background"],
                                 "counts": self.confusion_matrix().tolist(),
                                 "iou": self.confusion_iou, "score": self.confusion_score},
        }

    def _threshold_index(self, iou: float) -> int | None:
        found = np.flatnonzero(np.isclose(self.iou_thresholds, iou, rtol=0.0, atol=1e-9))
        return int(found[0]) if len(found) else None


# ---- matching ------------------------------------------------------------------------------------

def coco_iou(boxes: np.ndarray, truth_boxes: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of x, y, w, h boxes, element by element (broadcasting), with pycocotools' arithmetic (its
    C `bbIou`): against a crowd region the union is the detection's own area."""
    x, y, w, h = (boxes[..., i] for i in range(4))
    tx, ty, tw, th = (truth_boxes[..., i] for i in range(4))
    overlap_w = np.minimum(x + w, tx + tw) - np.maximum(x, tx)
    overlap_h = np.minimum(y + h, ty + th) - np.maximum(y, ty)
    intersection = overlap_w * overlap_h
    area = w * h
    union = np.where(crowd, area, area + tw * th - intersection)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where((overlap_w > 0) & (overlap_h > 0), intersection / union, 0.0)


def match_detections(boxes: np.ndarray, groups: np.ndarray, truth_boxes: np.ndarray, truth_groups: np.ndarray,
                     thresholds: np.ndarray, *, crowd: np.ndarray, ignored: np.ndarray,
                     reusable: np.ndarray,
                     pair_iou: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.evaluateImg's greedy matching for every (image, class) group at once.

    Detections come grouped, each group's in score order; a detection can only take a true box of
    its own group. `pair_iou(detections, truths, crowd)` gives the IoU of index pairs where it is not
    the boxes' `coco_iou` (masks). Returns (matched, on_ignored), each (detections, thresholds)."""
    matched = np.zeros((len(boxes), len(thresholds)), dtype=bool)
    on_ignored = np.zeros_like(matched)
    floors = np.minimum(thresholds, 1 - 1e-10)  # pycocotools caps the thresholds below 1
    pair_box, pair_truth = _same_group_pairs(groups, truth_groups)
    if pair_iou is None:
        iou = coco_iou(boxes[pair_box], truth_boxes[pair_truth], crowd[pair_truth])
    else:
        iou = pair_iou(pair_box, pair_truth, crowd[pair_truth])
    possible = iou >= floors.min()
    pair_box, pair_truth, iou = pair_box[possible], pair_truth[possible], iou[possible]
    # A detection's rank in its group is its turn. Within a turn, its candidates by rising IoU, then
    # by box order: the last one allowed wins, as pycocotools' `if iou < best: continue` lets an
    # equal IoU later in the list take over.
    first_of_group = np.searchsorted(groups, groups, side="left")  # groups are contiguous
    turn = (np.arange(len(groups)) - first_of_group)[pair_box]
    order = np.lexsort((pair_truth, iou, pair_box, turn))
    pair_box, pair_truth, iou, turn = pair_box[order], pair_truth[order], iou[order], turn[order]
    taken = np.zeros((len(truth_boxes), len(thresholds)), dtype=bool)
    turn_starts = np.flatnonzero(np.r_[True, turn[1:] != turn[:-1]]) if len(turn) else np.zeros(0, int)
    for start, end in zip(turn_starts, np.r_[turn_starts[1:], len(turn)]):
        box, truth = pair_box[start:end], pair_truth[start:end]  # one detection per group at most
        candidates = (iou[start:end, None] >= floors) & ~taken[truth]  # (pairs, thresholds)
        normal = candidates & ~ignored[truth, None]
        firsts = np.flatnonzero(np.r_[True, box[1:] != box[:-1]])
        sizes = np.diff(np.r_[firsts, len(box)])
        # A normal box, if one qualifies, wins over every ignored box (pycocotools stops at them).
        has_normal = np.repeat(np.logical_or.reduceat(normal, firsts, axis=0), sizes, axis=0)
        pool = np.where(has_normal, normal, candidates)
        best = np.maximum.reduceat(np.where(pool, np.arange(len(box))[:, None], -1), firsts, axis=0)
        which, threshold = np.nonzero(best >= 0)
        chosen = truth[best[which, threshold]]
        taken[chosen, threshold] = ~reusable[chosen]  # crowd and difficult boxes take any number
        matched[box[firsts[which]], threshold] = True
        on_ignored[box[firsts[which]], threshold] = ignored[chosen]
    return matched, on_ignored


def detection_confusion(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, images: np.ndarray,
                        truth_boxes: np.ndarray, truth_labels: np.ndarray, truth_images: np.ndarray,
                        flags: np.ndarray, classes: int, *, iou_threshold: float) -> np.ndarray:
    """Confusion counts with background, of detections and true boxes in any number of images (the
    rule: `DetectionMeter`'s doc)."""
    matrix = np.zeros((classes + 1, classes + 1), dtype=np.int64)
    normal = np.flatnonzero(flags == NORMAL)
    pair_box, pair_truth = _same_group_pairs(images, truth_images[normal])
    pair_truth = normal[pair_truth]
    iou = coco_iou(boxes[pair_box], truth_boxes[pair_truth], np.zeros(len(pair_truth), bool))
    close = iou >= iou_threshold
    pair_box, pair_truth, iou = pair_box[close], pair_truth[close], iou[close]
    order = np.lexsort((pair_truth, pair_box, -scores[pair_box], -iou))  # highest IoU, then score first
    box_taken, truth_taken = _greedy_one_to_one(pair_box[order], pair_truth[order],
                                                len(boxes), len(truth_boxes))
    np.add.at(matrix, (truth_labels[truth_taken], labels[box_taken]), 1)
    missed = np.ones(len(truth_boxes), bool)
    missed[truth_taken] = False
    np.add.at(matrix, (truth_labels[missed & (flags == NORMAL)], classes), 1)
    # Detections left over on a crowd or difficult box are ignored, as the AP ignores them.
    unmatched = np.ones(len(boxes), bool)
    unmatched[box_taken] = False
    special = np.flatnonzero(flags != NORMAL)
    pair_box, pair_truth = _same_group_pairs(images, truth_images[special])
    pair_truth = special[pair_truth]
    on_ignored = coco_iou(boxes[pair_box], truth_boxes[pair_truth], flags[pair_truth] == CROWD)
    unmatched[pair_box[on_ignored >= iou_threshold]] = False
    np.add.at(matrix, (classes, labels[unmatched]), 1)
    return matrix


def _greedy_one_to_one(box: np.ndarray, truth: np.ndarray, boxes: int,
                       truths: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs taken going down the list and keeping each one whose two ends are still free.
    Done in rounds: a pair that comes first for both its ends is one the walk would keep."""
    alive = np.ones(len(box), dtype=bool)
    box_free, truth_free = np.ones(boxes, bool), np.ones(truths, bool)
    taken_box, taken_truth = [], []
    while alive.any():
        live = np.flatnonzero(alive)
        first_for_box = live[np.unique(box[live], return_index=True)[1]]
        first_for_truth = live[np.unique(truth[live], return_index=True)[1]]
        keep = np.intersect1d(first_for_box, first_for_truth)
        taken_box.append(box[keep])
        taken_truth.append(truth[keep])
        box_free[box[keep]] = truth_free[truth[keep]] = False
        alive &= box_free[box] & truth_free[truth]
    return (np.concatenate([np.zeros(0, np.int64), *taken_box]),
            np.concatenate([np.zeros(0, np.int64), *taken_truth]))


def _same_group_pairs(groups: np.ndarray, truth_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every (detection, true box) index pair with equal group keys, by detection then box order."""
    order = np.argsort(truth_groups, kind="stable")
    ordered = truth_groups[order]
    low, high = np.searchsorted(ordered, groups, side="left"), np.searchsorted(ordered, groups, side="right")
    counts = high - low
    pair_box = np.repeat(np.arange(len(groups)), counts)
    within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    return pair_box, order[np.repeat(low, counts) + within]


def _score_order_kept(groups: np.ndarray, scores: np.ndarray, limit: int) -> np.ndarray:
    """Indices of the detections evaluated: grouped, by score within a group (stable: ties keep
    their input order), the first `limit` of each group."""
    order = np.argsort(-scores, kind="mergesort")
    order = order[np.argsort(groups[order], kind="stable")]
    ordered = groups[order]
    rank = np.arange(len(order)) - np.searchsorted(ordered, ordered, side="left")
    return order[rank < limit]


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
        raise DataError(f"a prediction has {len(boxes)} boxes, {len(scores)} scores and {len(labels)} "
                        "labels; give one score and one label per box")
    if not np.isfinite(scores).all():
        raise DataError("a prediction has a score that is not a finite number (NaN or infinity)")
    return boxes, scores, labels


def _read_truth(item: Any, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    boxes = _boxes(_field(item, "boxes", "ground truth"), "ground truth")
    labels = _labels(_field(item, "labels", "ground truth"), classes, "ground truth")
    raw_flags = _field(item, "flags", "ground truth", required=False)
    flags = np.zeros(len(boxes), np.int64) if raw_flags is None else _array(raw_flags, np.int64).reshape(-1)
    if not len(boxes) == len(labels) == len(flags):
        raise DataError(f"a ground truth has {len(boxes)} boxes, {len(labels)} labels and {len(flags)} "
                        "flags; give one label and one flag per box")
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
