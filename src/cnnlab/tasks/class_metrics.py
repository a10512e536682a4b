"""Scoring a classifier: the streaming meter, the confusion matrix, per-class scores, top-k.

Accuracy, the confusion matrix, top-5 and the loss are sums that could stream on their own; the
ranking curves (ROC, precision-recall) need each image's probability for each class, which is the
evidence a threshold is chosen from. So a full evaluation keeps those (N × classes floats, no
images and no activations) and computes everything from them at the end.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from cnnlab.processes import gather_across_processes
from cnnlab.tasks.ranking import Curve, one_vs_rest, ranking_metrics
from cnnlab.tasks.vector import SumMeter

if TYPE_CHECKING:
    from cnnlab.tasks.classification import Classification


class ClassificationMeter:
    """`full=False`: accuracy as two running sums; `full=True`: every metric of `evaluate`."""

    def __init__(self, task: "Classification", *, full: bool):
        self.task, self.full = task, full
        self._sums = SumMeter(["images", "correct"])
        self._log_probabilities: list[Tensor] = []
        self._targets: list[Tensor] = []
        self._kept: tuple[Tensor, Tensor] | None = None

    def update(self, outputs: Tensor, targets: Tensor) -> None:
        if not self.full:
            correct = (outputs.argmax(dim=1) == targets).sum()
            self._sums.add(torch.tensor(float(len(targets)), device=outputs.device), correct)
            return
        # Log-probabilities: softmax gives back the probabilities whatever the outputs were (logits,
        # or the log of test-time augmentation's averaged probabilities).
        self._log_probabilities.append(F.log_softmax(outputs.float(), dim=1).cpu())
        self._targets.append(targets.long().cpu())

    def kept(self) -> tuple[Tensor, Tensor]:
        """(log-probabilities (N, classes), targets (N,)) of every image scored, all processes'."""
        if self._kept is None:
            parts = gather_across_processes((self._log_probabilities, self._targets))
            outputs = [tensor for mine, _ in parts for tensor in mine]
            targets = [tensor for _, mine in parts for tensor in mine]
            classes = self.task.num_outputs
            self._kept = (torch.cat(outputs) if outputs else torch.empty(0, classes),
                          torch.cat(targets) if targets else torch.empty(0, dtype=torch.long))
        return self._kept

    def compute(self) -> dict[str, Any]:
        if not self.full:
            totals = self._sums.totals()
            images = int(totals["images"])
            return {"images": images, "accuracy": totals["correct"] / images if images else float("nan")}
        return classification_metrics(self.task, *self.kept())

    def curves(self) -> dict[str, Curve]:
        """One-vs-rest ranking curves of each class's probability."""
        outputs, targets = self.kept()
        probabilities = torch.softmax(outputs.float(), dim=1).numpy()
        return one_vs_rest(probabilities, targets.numpy(), self.task.class_names)


def classification_metrics(task: "Classification", outputs: Tensor, targets: Tensor) -> dict[str, Any]:
    """All of a classifier's metrics for `outputs` (N, classes) and `targets` (N,)."""
    count = len(targets)
    predicted = task.decide(outputs)
    matrix = confusion_matrix(targets, predicted, task.num_outputs)
    metrics: dict[str, Any] = {
        "images": count,
        "loss": float(F.cross_entropy(outputs, targets)) if count else float("nan"),
        "accuracy": float((predicted == targets).float().mean()) if count else float("nan"),
    }
    if task.num_outputs > 5:
        metrics["top5_accuracy"] = top_k_accuracy(outputs, targets, 5)
    metrics.update(per_class_scores(matrix, task.class_names))
    if count:
        probabilities = torch.softmax(outputs.float(), dim=1).numpy()
        metrics.update(ranking_metrics(one_vs_rest(probabilities, targets.numpy(), task.class_names)))
    if task.threshold is not None:
        metrics["threshold"] = {"class": task.class_names[task.threshold[0]], "probability": task.threshold[1]}
    metrics["confusion_matrix"] = {"labels": task.class_names, "matrix": matrix.tolist(),
                                   "rows": "true class", "columns": "predicted class"}
    return metrics


def operating_points(matrix: list[list[int]], class_names: list[str]) -> dict[str, tuple[float, float, float]]:
    """Where the model's own answers (the most probable class) sit on each class's curves:
    (false-positive rate, true-positive rate, precision), from the confusion matrix."""
    counts = np.asarray(matrix, dtype=np.float64)
    total, points = counts.sum(), {}
    for index, name in enumerate(class_names):
        hits, actual, predicted = counts[index, index], counts[index].sum(), counts[:, index].sum()
        negatives = total - actual
        points[name] = ((predicted - hits) / negatives if negatives else 0.0, hits / actual if actual else 0.0,
                        hits / predicted if predicted else 0.0)
    return points


def confusion_matrix(targets: Tensor, predicted: Tensor, num_classes: int) -> Tensor:
    """matrix[i, j] = number of images of true class i predicted as class j."""
    flat = targets * num_classes + predicted
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def top_k_accuracy(outputs: Tensor, targets: Tensor, k: int) -> float:
    top = outputs.topk(min(k, outputs.shape[1]), dim=1).indices
    return float((top == targets[:, None]).any(dim=1).float().mean()) if len(targets) else float("nan")


def per_class_scores(matrix: Tensor, class_names: list[str]) -> dict[str, Any]:
    """Precision, recall, F1 and support per class, with macro and weighted averages.

    A class never predicted has precision 0 (and never present: recall 0), as scikit-learn
    reports with zero_division=0.
    """
    matrix = matrix.double()
    true_positive = matrix.diag()
    predicted_count = matrix.sum(dim=0)
    support = matrix.sum(dim=1)
    precision = torch.where(predicted_count > 0, true_positive / predicted_count.clamp_min(1), 0.0)
    recall = torch.where(support > 0, true_positive / support.clamp_min(1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp_min(1e-12), 0.0)
    per_class = {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(class_names, precision, recall, f1, support)
    }
    weights = support / support.sum().clamp_min(1)

    def average(values: Tensor, weighted: bool) -> float:
        return float((values * weights).sum()) if weighted else float(values.mean())

    return {
        "per_class": per_class,
        "macro_avg": {"precision": average(precision, False), "recall": average(recall, False),
                      "f1": average(f1, False)},
        "weighted_avg": {"precision": average(precision, True), "recall": average(recall, True),
                         "f1": average(f1, True)},
    }
