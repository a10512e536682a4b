"""Ranking metrics: how well a classifier's scores put the images of one class above the rest, at
every threshold rather than only at the argmax.

A diagnosis model is used with a threshold chosen for its purpose (catch nearly every positive
scan, accept more false alarms), so accuracy at one operating point is not enough:

* the ROC curve plots, for every threshold, the true-positive rate (sensitivity, recall) against
  the false-positive rate (1 − specificity); the area under it (ROC AUC) is the chance that a
  random positive image scores above a random negative one — 0.5 is guessing, 1 is perfect;
* the precision-recall curve plots precision against recall; its summary, average precision,
  matters when positives are rare, where a ROC curve can look good while most alarms are false.

Computed as scikit-learn does (tied scores form one threshold; average precision is the sum of
precision × recall gained, without interpolation) and checked against it in the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Curve:
    """True and false positives counted at each distinct score, highest first."""

    thresholds: np.ndarray
    true_positives: np.ndarray
    false_positives: np.ndarray

    @property
    def positives(self) -> int:
        return int(self.true_positives[-1])

    @property
    def negatives(self) -> int:
        return int(self.false_positives[-1])

    @property
    def defined(self) -> bool:
        """Both kinds of image are present: with only one, no ranking can be scored."""
        return self.positives > 0 and self.negatives > 0

    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(false-positive rate, true-positive rate), from (0, 0) to (1, 1)."""
        fpr = np.concatenate([[0.0], self.false_positives / max(self.negatives, 1)])
        tpr = np.concatenate([[0.0], self.true_positives / max(self.positives, 1)])
        return fpr, tpr

    def roc_auc(self) -> float | None:
        if not self.defined:
            return None
        fpr, tpr = self.roc()
        return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))  # trapezoids

    def precision_recall(self) -> tuple[np.ndarray, np.ndarray]:
        """(recall, precision) at each threshold, highest threshold first, up to the first that
        finds every positive (lower ones only add false positives: precision falls to the share of
        positives, recall stays 1)."""
        last = int(np.searchsorted(self.true_positives, self.true_positives[-1])) + 1
        true_positives, false_positives = self.true_positives[:last], self.false_positives[:last]
        recall = true_positives / max(self.positives, 1)
        precision = true_positives / (true_positives + false_positives)
        return recall, precision

    def average_precision(self) -> float | None:
        if not self.defined:
            return None
        recall, precision = self.precision_recall()
        return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def ranking_curve(scores: np.ndarray, is_positive: np.ndarray) -> Curve:
    """The curve of `scores` (higher = more likely positive) for the images where `is_positive`."""
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="stable")
    ranked, hits = scores[order], np.asarray(is_positive, dtype=bool)[order]
    # The last image of each run of tied scores: a threshold cannot separate tied images.
    ends = np.concatenate([np.flatnonzero(np.diff(ranked)), [len(ranked) - 1]]) if len(ranked) else np.array([], int)
    true_positives = np.cumsum(hits)[ends].astype(np.float64)
    false_positives = (ends + 1) - true_positives
    return Curve(ranked[ends], true_positives, false_positives)


def one_vs_rest(probabilities: np.ndarray, targets: np.ndarray, class_names: list[str]) -> dict[str, Curve]:
    """Each class against all the others, scored by its predicted probability."""
    return {name: ranking_curve(probabilities[:, index], targets == index) for index, name in enumerate(class_names)}


def ranking_metrics(curves: dict[str, Curve]) -> dict[str, dict]:
    """ROC AUC and average precision per class, and their means over the classes where defined."""
    result = {}
    for key, score in (("roc_auc", Curve.roc_auc), ("average_precision", Curve.average_precision)):
        per_class = {name: score(curve) for name, curve in curves.items()}
        defined = [value for value in per_class.values() if value is not None]
        result[key] = {"per_class": per_class, "macro": float(np.mean(defined)) if defined else None}
    return result
