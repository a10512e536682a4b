"""Classification: one label per image, softmax over the classes, cross-entropy loss."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from cnnlab.config import parse_class_weights
from cnnlab.errors import ConfigError
from cnnlab.tasks.base import Task
from cnnlab.tasks.ranking import Curve, one_vs_rest, ranking_metrics


class Classification(Task):
    name = "classification"
    headline_name = "accuracy"
    headline_higher_is_better = True
    loss_name = "cross-entropy"

    def __init__(self, class_names: list[str], *, label_smoothing: float = 0.0,
                 class_weights: list[float] | None = None, weighting: str = "none"):
        self.class_names = list(class_names)
        self.label_smoothing = label_smoothing
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]
        self.weighting = weighting if class_weights is not None else "none"  # the --class-weights it came from
        self._weight_tensor: Tensor | None = None
        # (class index, probability): answer that class whenever its probability reaches this. A choice
        # made when the model is used (`--threshold`), not saved with it.
        self.threshold: tuple[int, float] | None = None

    def set_threshold(self, spec: str | None) -> None:
        """`--threshold NAME=P`: answer NAME whenever its probability is at least P, otherwise the most
        probable other class; None goes back to the most probable class."""
        if spec is None:
            self.threshold = None
            return
        name, equals, value = spec.rpartition("=")
        try:
            probability = float(value)
        except ValueError:
            probability = float("nan")
        if not equals or not 0.0 < probability < 1.0:
            raise ConfigError(f"--threshold must be CLASS=PROBABILITY with the probability between 0 and 1, "
                              f"e.g. {self.class_names[-1]}=0.3 (got {spec!r})")
        if name.strip() not in self.class_names:
            raise ConfigError(f"--threshold {spec}: there is no class {name.strip()!r}; the classes are "
                              f"{', '.join(self.class_names)}")
        self.threshold = (self.class_names.index(name.strip()), probability)

    def decide(self, outputs: Tensor) -> Tensor:
        """The class each image is given: the most probable one, or the `threshold` class once its
        probability reaches the threshold (then the most probable of the others below it)."""
        if self.threshold is None:
            return outputs.argmax(dim=1)
        index, probability = self.threshold
        probabilities = torch.softmax(outputs.float(), dim=1)
        others = probabilities.clone()
        others[:, index] = -1.0
        return torch.where(probabilities[:, index] >= probability, index, others.argmax(dim=1))

    @classmethod
    def for_training(cls, source: Any, *, label_smoothing: float = 0.0,
                     class_weights: str = "none") -> "Classification":
        if source.class_names is None:
            raise ConfigError(f"{source.description} has numeric targets; use --task regression")
        weights = weights_for_classes(class_weights, source.class_counts())
        return cls(source.class_names, label_smoothing=label_smoothing, class_weights=weights,
                   weighting=class_weights)

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    def loss(self, outputs: Tensor, targets: Tensor) -> Tensor:
        # cross_entropy = log-softmax + negative log-likelihood: the softmax layer of the guide
        # lives here, applied to the raw scores (logits) for numerical stability.
        weights = self._weights_on(outputs.device)
        if weights is None:
            return F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)
        # Each image's loss times its class's weight, over the sum of the weights: PyTorch's own
        # `weight=` computes the same without label smoothing, but with it, it also weighs the
        # smoothing term of every image by every class's weight, so a rare class weighted 10×
        # drags every other image towards itself (measured: T-shirts against 20× fewer shirts,
        # recall of T-shirts fell to 15-37%).
        per_image = F.cross_entropy(outputs, targets, reduction="none", label_smoothing=self.label_smoothing)
        image_weights = weights[targets]
        return (per_image * image_weights).sum() / image_weights.sum().clamp_min(1e-12)

    def loss_share(self, targets: Tensor) -> Tensor:
        weights = self._weights_on(targets.device)
        return super().loss_share(targets) if weights is None else weights[targets].sum()

    def _weights_on(self, device: torch.device) -> Tensor | None:
        """The class weights as a tensor on `device`, made once (not a host-to-device copy per step)."""
        if self.class_weights is None:
            return None
        if self._weight_tensor is None or self._weight_tensor.device != device:
            self._weight_tensor = torch.tensor(self.class_weights, dtype=torch.float32, device=device)
        return self._weight_tensor

    def describe_loss(self) -> str:
        smoothing = (f", label smoothing {self.label_smoothing:g}, so it cannot reach 0"
                     if self.label_smoothing else "")
        return f"loss: cross-entropy of the softmax over {self.num_outputs} classes{smoothing}{self._describe_weights()}"

    def _describe_weights(self) -> str:
        if self.class_weights is None:
            return ""
        shown = [f"{name} {weight:.3g}" for name, weight in zip(self.class_names, self.class_weights)]
        listed = ", ".join(shown[:8]) + (f", … ({len(shown) - 8} more)" if len(shown) > 8 else "")
        why = (" (balanced: inversely to their numbers of training images)" if self.weighting == "balanced"
               else "")
        return f"; an image's loss is weighted by its class{why}: {listed}"

    def combine_views(self, outputs: list[Tensor]) -> Tensor:
        # Average the probabilities, not the logits; returned as log-probabilities, whose softmax
        # is that average.
        probabilities = torch.stack([torch.softmax(o.float(), dim=1) for o in outputs]).mean(dim=0)
        return probabilities.clamp_min(1e-12).log()

    def headline_sum(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs.argmax(dim=1) == targets).sum()

    def evaluate(self, outputs: Tensor, targets: Tensor) -> dict[str, Any]:
        outputs, targets = outputs.float().cpu(), targets.long().cpu()
        count = len(targets)
        predicted = self.decide(outputs)
        matrix = confusion_matrix(targets, predicted, self.num_outputs)
        metrics: dict[str, Any] = {
            "images": count,
            "loss": float(F.cross_entropy(outputs, targets)) if count else float("nan"),
            "accuracy": float((predicted == targets).float().mean()) if count else float("nan"),
        }
        if self.num_outputs > 5:
            metrics["top5_accuracy"] = top_k_accuracy(outputs, targets, 5)
        metrics.update(per_class_scores(matrix, self.class_names))
        if count:
            metrics.update(ranking_metrics(self._curves(outputs, targets)))
        if self.threshold is not None:
            metrics["threshold"] = {"class": self.class_names[self.threshold[0]], "probability": self.threshold[1]}
        metrics["confusion_matrix"] = {"labels": self.class_names, "matrix": matrix.tolist(),
                                       "rows": "true class", "columns": "predicted class"}
        return metrics

    def _curves(self, outputs: Tensor, targets: Tensor) -> dict[str, Curve]:
        """One-vs-rest ranking curves of each class's probability (outputs may be logits or, after
        test-time augmentation, log-probabilities: softmax gives the probabilities either way)."""
        probabilities = torch.softmax(outputs.float(), dim=1).cpu().numpy()
        return one_vs_rest(probabilities, targets.cpu().numpy(), self.class_names)

    def plots(self, metrics: dict[str, Any], outputs: Tensor, targets: Tensor, folder: Path) -> list[Path]:
        from cnnlab.evaluate.plots import plot_confusion_matrix, plot_ranking_curves

        path = folder / "confusion_matrix.png"
        matrix = metrics["confusion_matrix"]
        plot_confusion_matrix(matrix["matrix"], matrix["labels"], path,
                              title=f"Confusion matrix — accuracy {metrics['accuracy']:.2%}")
        paths = [path]
        curves = {name: curve for name, curve in self._curves(outputs, targets).items() if curve.defined}
        if curves:
            paths.append(plot_ranking_curves(curves, operating_points(matrix["matrix"], self.class_names),
                                             folder / "roc_curves.png", binary=self.num_outputs == 2))
        return paths

    def predictions(self, outputs: Tensor, top_k: int = 1) -> list[dict[str, Any]]:
        """Per image: the answer (the most probable class, unless `threshold` says otherwise) with its
        probability, and `top_k` classes: the answer first, then the most probable others."""
        probabilities = torch.softmax(outputs.float(), dim=1).cpu()
        k = min(top_k, self.num_outputs)
        decided = self.decide(outputs.cpu())
        ranked = probabilities.argsort(dim=1, descending=True)
        rows = []
        for answer, order, row in zip(decided.tolist(), ranked.tolist(), probabilities.tolist()):
            classes = [answer] + [index for index in order if index != answer][: k - 1]
            rows.append({
                "label": self.class_names[answer],
                "confidence": row[answer],
                "top_k": [{"label": self.class_names[i], "confidence": row[i]} for i in classes],
            })
        return rows

    def prediction_table(self, outputs: Tensor, targets: Tensor) -> tuple[list[str], list[list[str]]]:
        header = ["true_label", "predicted_label", "confidence", "correct"]
        rows = []
        for target, prediction in zip(targets.tolist(), self.predictions(outputs)):
            truth = self.class_names[int(target)]
            rows.append([truth, prediction["label"], f"{prediction['confidence']:.6f}",
                         str(int(truth == prediction["label"]))])
        return header, rows

    def to_json(self) -> dict[str, Any]:
        values = {"name": self.name, "class_names": self.class_names, "label_smoothing": self.label_smoothing}
        if self.class_weights is not None:
            values.update(class_weights=self.class_weights, weighting=self.weighting)
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Classification":
        return cls(values["class_names"], label_smoothing=float(values.get("label_smoothing", 0.0)),
                   class_weights=values.get("class_weights"), weighting=str(values.get("weighting", "none")))


def weights_for_classes(spec: str, counts: dict[str, int]) -> list[float] | None:
    """`--class-weights` for classes with these numbers of training images: None for "none";
    "balanced" weighs class c by n / (classes × n_c), so every class adds the same total to the
    loss (scikit-learn's `compute_class_weight("balanced")`, what Keras users pass as
    `class_weight`); "NAME=W,NAME=W" sets some (the others weigh 1)."""
    spec = spec.strip()
    if spec == "none":
        return None
    if spec == "balanced":
        total, present = sum(counts.values()), sum(1 for count in counts.values() if count)
        # A class without images is never a target: its weight is never used.
        return [total / (present * count) if count else 1.0 for count in counts.values()]
    weights = dict.fromkeys(counts, 1.0)
    for name, weight in parse_class_weights(spec).items():
        if name not in weights:
            raise ConfigError(f"--class-weights {spec}: there is no class {name!r}; the classes are "
                              f"{', '.join(counts)}")
        weights[name] = weight
    return list(weights.values())


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
