"""Segmentation scores from a streaming confusion matrix: nothing but K×K pixel counts (and four
boundary counts per class) is kept between batches, whatever the size of the dataset.

For class c, with TP, FP, FN its pixels counted in the confusion matrix (void pixels left out):
    IoU  = TP / (TP + FP + FN)          (Jaccard; mIoU is the mean over classes seen in the truth
    Dice = 2 TP / (2 TP + FP + FN)       or the predictions: a class in neither has no score)
    pixel accuracy = Σ TP / labelled pixels
Boundary F-score (BF, Csurka et al. 2013), what medical papers report beside Dice because a mask can
overlap well and still have a ragged outline: a boundary pixel of c (a pixel of c with a 4-neighbour
of another class) counts as matched when the other mask has a boundary pixel of c within `tolerance`
pixels (a square window); precision and recall are the matched shares of the predicted and the true
boundary pixels, summed over the whole set, and BF their harmonic mean. The tolerance is 0.75% of the
image diagonal, at least 1 pixel.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from cnnlab.tasks.segmentation.masks import VOID

BOUNDARY_SHARE = 0.0075  # of the image diagonal: the boundary F-score's tolerance


def confusion_counts(predicted: Tensor, masks: Tensor, classes: int) -> Tensor:
    """(K, K) int64 pixel counts, rows true class, columns predicted; void pixels left out."""
    labelled = masks != VOID
    pairs = masks[labelled] * classes + predicted[labelled]
    return torch.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def boundaries(masks: Tensor, classes: int) -> Tensor:
    """(N, K, H, W) bool: the pixels of each class with a 4-neighbour of another class (or void)."""
    one_hot = F.one_hot(masks.clamp(max=classes), classes + 1)[..., :classes].permute(0, 3, 1, 2).float()
    padded = F.pad(one_hot, (1, 1, 1, 1), mode="replicate")
    neighbours = torch.stack([padded[:, :, :-2, 1:-1], padded[:, :, 2:, 1:-1],
                              padded[:, :, 1:-1, :-2], padded[:, :, 1:-1, 2:]]).amin(0)
    return (one_hot > 0) & (neighbours == 0)


def boundary_counts(predicted: Tensor, masks: Tensor, classes: int, tolerance: int) -> Tensor:
    """(K, 4) int64 per class: matched predicted, predicted, matched true, true boundary pixels."""
    predicted = torch.where(masks == VOID, torch.full_like(predicted, VOID), predicted)  # void is no class
    found, truth = boundaries(predicted, classes), boundaries(masks, classes)
    window = 2 * tolerance + 1
    near_truth = F.max_pool2d(truth.float(), window, stride=1, padding=tolerance) > 0
    near_found = F.max_pool2d(found.float(), window, stride=1, padding=tolerance) > 0
    dims = (0, 2, 3)
    return torch.stack([(found & near_truth).sum(dims), found.sum(dims), (truth & near_found).sum(dims),
                        truth.sum(dims)], 1)


def tolerance_for(size: Sequence[int]) -> int:
    return max(1, round(BOUNDARY_SHARE * math.hypot(*size)))


class SegmentationMeter:
    """The task's meter: confusion counts (and boundary counts when `full`) on the device, summed
    across DDP processes by `compute`."""

    def __init__(self, class_names: Sequence[str], *, full: bool = True):
        self.class_names = list(class_names)
        self.full = full
        self.images = 0
        self.confusion: Tensor | None = None
        self.boundary: Tensor | None = None

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        classes = len(self.class_names)
        predicted = outputs.argmax(dim=1)
        counts = confusion_counts(predicted, targets, classes)
        self.confusion = counts if self.confusion is None else self.confusion + counts
        if self.full:
            found = boundary_counts(predicted, targets, classes, tolerance_for(targets.shape[-2:]))
            self.boundary = found if self.boundary is None else self.boundary + found
        self.images += len(targets)

    def compute(self) -> dict[str, Any]:
        from cnnlab.processes import sum_across_processes

        classes = len(self.class_names)
        confusion = self.confusion if self.confusion is not None else torch.zeros(classes, classes, dtype=torch.long)
        boundary = self.boundary if self.boundary is not None else torch.zeros(classes, 4, dtype=torch.long)
        totals = torch.cat([confusion.reshape(-1), boundary.to(confusion.device).reshape(-1),
                            torch.tensor([self.images], device=confusion.device)])
        totals = sum_across_processes(totals).cpu().numpy()
        matrix = totals[:classes * classes].reshape(classes, classes)
        scores = scores_from_confusion(matrix, self.class_names)
        scores["images"] = int(totals[-1])
        if self.full:
            add_boundary_scores(scores, totals[classes * classes:-1].reshape(classes, 4), self.class_names)
        return scores


def scores_from_confusion(matrix: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """IoU, Dice per class and their means, pixel accuracy, and the matrix itself, from (K, K) counts."""
    matrix = np.asarray(matrix, np.int64)
    hits = np.diag(matrix).astype(np.float64)
    true, predicted = matrix.sum(1).astype(np.float64), matrix.sum(0).astype(np.float64)
    union = true + predicted - hits
    seen = union > 0
    iou = np.divide(hits, union, out=np.zeros_like(hits), where=seen)
    dice = np.divide(2 * hits, true + predicted, out=np.zeros_like(hits), where=seen)
    labelled = matrix.sum()
    per_class = {name: {"iou": float(iou[c]) if seen[c] else None, "dice": float(dice[c]) if seen[c] else None,
                        "pixels": int(true[c]), "predicted": int(predicted[c])}
                 for c, name in enumerate(class_names)}
    return {"miou": float(iou[seen].mean()) if seen.any() else None,
            "mean_dice": float(dice[seen].mean()) if seen.any() else None,
            "pixel_accuracy": float(hits.sum() / labelled) if labelled else None,
            "pixels": int(labelled), "per_class": per_class,
            "confusion_matrix": {"labels": list(class_names), "counts": matrix.tolist()}}


def add_boundary_scores(scores: dict[str, Any], counts: np.ndarray, class_names: Sequence[str]) -> None:
    values = []
    for c, name in enumerate(class_names):
        matched_found, found, matched_true, true = (float(v) for v in counts[c])
        if not found and not true:
            scores["per_class"][name]["boundary_f"] = None
            continue
        precision = matched_found / found if found else 0.0
        recall = matched_true / true if true else 0.0
        score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores["per_class"][name]["boundary_f"] = score
        values.append(score)
    scores["mean_boundary_f"] = float(np.mean(values)) if values else None


def image_scores(predicted: np.ndarray, mask: np.ndarray, classes: int) -> tuple[float | None, float | None, int]:
    """(mean IoU over the classes in either, pixel accuracy, wrong pixels) of one image."""
    scores = scores_from_confusion(confusion_counts(torch.from_numpy(predicted).long(),
                                                    torch.from_numpy(mask).long(), classes).numpy(),
                                   [str(c) for c in range(classes)])
    labelled = mask != VOID
    return scores["miou"], scores["pixel_accuracy"], int(((predicted != mask) & labelled).sum())
