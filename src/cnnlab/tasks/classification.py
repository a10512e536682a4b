"""Classification: one label per image, softmax over the classes, cross-entropy loss."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import Tensor
from torch.nn import functional as F

from cnnlab.config import parse_class_weights
from cnnlab.errors import ConfigError
from cnnlab.tasks.base import ReportContext
from cnnlab.tasks.class_metrics import ClassificationMeter, classification_metrics, operating_points
from cnnlab.tasks.vector import VectorTask

if TYPE_CHECKING:
    from cnnlab.config import TrainConfig
    from cnnlab.data.source import Source


class Classification(VectorTask):
    name = "classification"
    description = "one label per image: softmax over the classes, cross-entropy"
    headline_name = "accuracy"
    headline_higher_is_better = True
    loss_name = "cross-entropy"
    settings = frozenset({"label_smoothing", "class_weights"})
    data_formats = ("a folder of class folders (or train/ val/ test/ of them), a CSV of file,label, IDX files, "
                    "DICOM, a named dataset")

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

    # --- data ---------------------------------------------------------------------------------

    @classmethod
    def open_data(cls, spec: str | Path, *, split: str = "train", data_dir: str | Path | None = None) -> "Source":
        from cnnlab.data.sources import open_labelled_images

        return open_labelled_images(spec, split=split, data_dir=data_dir)

    @classmethod
    def for_training(cls, source: "Source", config: "TrainConfig | None" = None) -> "Classification":
        if source.class_names is None:
            raise ConfigError(f"{source.description} has numeric targets; use --task regression")
        from cnnlab.config import TrainConfig

        config = config or TrainConfig()
        weights = weights_for_classes(config.class_weights, source.class_counts())
        return cls(source.class_names, label_smoothing=config.label_smoothing, class_weights=weights,
                   weighting=config.class_weights)

    @property
    def num_outputs(self) -> int:
        return len(self.class_names)

    @property
    def output_names(self) -> list[str]:
        return self.class_names

    def describe_outputs(self) -> str:
        return f"{self.num_outputs} classes"

    # --- deciding -----------------------------------------------------------------------------

    def configure(self, *, threshold: str | None = None, **others: Any) -> None:
        super().configure(**others)
        if threshold is not None:
            self.set_threshold(threshold)

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

    def answer(self, outputs: Tensor) -> int:
        return int(self.decide(outputs[:1])[0])

    # --- training -----------------------------------------------------------------------------

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

    def headline_sum(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return (outputs.argmax(dim=1) == targets).sum()

    def meter(self, *, full: bool = True) -> ClassificationMeter:
        return ClassificationMeter(self, full=full)

    def evaluate(self, outputs: Tensor, targets: Tensor) -> dict[str, Any]:
        """Every metric for the outputs (N, classes) and labels (N,) of a whole set at once (what the
        meter computes from the batches it was fed)."""
        return classification_metrics(self, outputs.float().cpu(), targets.long().cpu())

    # --- outputs ------------------------------------------------------------------------------

    def combine_views(self, outputs: list[Tensor]) -> Tensor:
        # Average the probabilities, not the logits; returned as log-probabilities, whose softmax
        # is that average.
        probabilities = torch.stack([torch.softmax(o.float(), dim=1) for o in outputs]).mean(dim=0)
        return probabilities.clamp_min(1e-12).log()

    def smooth(self, outputs: list[Tensor]) -> Tensor:
        # The mean of the frames' probabilities (as for a mirrored view), not of their logits: one
        # frame's very confident logit would outvote the others.
        return self.combine_views(outputs)

    def predictions(self, outputs: Tensor, *, top_k: int = 1,
                    origins: Sequence[tuple[int, int]] | None = None) -> list[dict[str, Any]]:
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

    def output_agreement(self, reference: Tensor, exported: Tensor) -> dict[str, float]:
        same = reference.float().argmax(dim=1) == exported.float().argmax(dim=1)
        return {"top-1 agreement": float(same.float().mean())}

    def table_line(self, prediction: dict[str, Any], top_k: int = 1) -> str:
        # Labels padded to the longest class name, so the confidences line up in columns.
        width = max(len(name) for name in self.class_names)
        return "  ".join(f"{entry['label']:<{width}} {entry['confidence']:6.1%}"
                         for entry in prediction["top_k"][:top_k]).rstrip()

    def caption(self, prediction: dict[str, Any]) -> str:
        return f"{prediction['label']} {prediction['confidence']:.1%}"

    def csv_columns(self, predictions: Sequence[dict[str, Any]]) -> list[str]:
        depth = max((len(row.get("top_k", [])) for row in predictions), default=1)
        columns = ["label", "confidence"]
        for rank in range(2, depth + 1):
            columns += [f"label_{rank}", f"confidence_{rank}"]
        return columns

    def csv_cells(self, prediction: dict[str, Any], columns: list[str]) -> list[str]:
        cells = []
        entries = prediction.get("top_k", [])
        for rank in range(len(columns) // 2):
            cells += ([entries[rank]["label"], f"{entries[rank]['confidence']:.6f}"] if rank < len(entries)
                      else ["", ""])
        return cells

    def prediction_table(self, outputs: Tensor, targets: Tensor,
                         origins: Sequence[tuple[int, int]] | None = None) -> tuple[list[str], list[list[list[str]]]]:
        header = ["true_label", "predicted_label", "confidence", "correct"]
        rows = []
        for target, prediction in zip(targets.tolist(), self.predictions(outputs)):
            truth = self.class_names[int(target)]
            rows.append([[truth, prediction["label"], f"{prediction['confidence']:.6f}",
                          str(int(truth == prediction["label"]))]])
        return header, rows

    # --- evaluation ---------------------------------------------------------------------------

    def plots(self, metrics: dict[str, Any], meter: ClassificationMeter, folder: Path) -> list[Path]:
        from cnnlab.evaluate.plots import plot_confusion_matrix, plot_ranking_curves

        path = folder / "confusion_matrix.png"
        matrix = metrics["confusion_matrix"]
        plot_confusion_matrix(matrix["matrix"], matrix["labels"], path,
                              title=f"Confusion matrix — accuracy {metrics['accuracy']:.2%}")
        paths = [path]
        curves = {name: curve for name, curve in meter.curves().items() if curve.defined}
        if curves:
            paths.append(plot_ranking_curves(curves, operating_points(matrix["matrix"], self.class_names),
                                             folder / "roc_curves.png", binary=self.num_outputs == 2))
        return paths

    def summary_line(self, metrics: dict[str, Any]) -> str:
        text = f"accuracy {metrics['accuracy']:.2%}"
        if "top5_accuracy" in metrics:
            text += f", top-5 {metrics['top5_accuracy']:.2%}"
        text += f", macro F1 {metrics['macro_avg']['f1']:.4f}"
        if "threshold" in metrics:
            chosen = metrics["threshold"]
            text += f" (answering {chosen['class']} at probability ≥ {chosen['probability']:g})"
        if (metrics.get("roc_auc") or {}).get("macro") is not None:
            text += f", ROC AUC {metrics['roc_auc']['macro']:.4f}"
        return text + f" on {_images(metrics['images'])}"

    def metric_lines(self, metrics: dict[str, Any]) -> list[str]:
        return class_table(metrics)

    def report_sections(self, context: ReportContext) -> list[Any]:
        from cnnlab.report.sections import classification_sections

        return classification_sections(self, context)

    def example_rows(self, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        return [row for row in rows if row.get("correct", "1") == "1"]

    def example_target(self, row: dict[str, str]) -> str | None:
        return row.get("true_label")

    # --- saved with the model -----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        values = {"name": self.name, "class_names": self.class_names, "label_smoothing": self.label_smoothing}
        if self.class_weights is not None:
            values.update(class_weights=self.class_weights, weighting=self.weighting)
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "Classification":
        return cls(values["class_names"], label_smoothing=float(values.get("label_smoothing", 0.0)),
                   class_weights=values.get("class_weights"), weighting=str(values.get("weighting", "none")))


def _images(count: int) -> str:
    return f"{count:,} image" if count == 1 else f"{count:,} images"


MAX_TABLE_CLASSES = 30  # beyond this the terminal table is too long to read; metrics.json has them all


def class_table(metrics: dict[str, Any]) -> list[str]:
    """Per-class precision, recall, F1, ROC AUC and image count as aligned text lines (up to
    `MAX_TABLE_CLASSES` classes): on imbalanced data, the numbers that accuracy hides."""
    per_class = metrics.get("per_class")
    if not per_class or len(per_class) > MAX_TABLE_CLASSES:
        return []
    auc = (metrics.get("roc_auc") or {}).get("per_class", {})
    rows = [["class", "precision", "recall", "F1", "ROC AUC", "images"]]
    for name, scores in per_class.items():
        value = auc.get(name)
        rows.append([name, f"{scores['precision']:.3f}", f"{scores['recall']:.3f}", f"{scores['f1']:.3f}",
                     "–" if value is None else f"{value:.3f}", f"{scores['support']:,}"])
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) if column == 0 else cell.rjust(width)
                      for column, (cell, width) in enumerate(zip(row, widths))).rstrip() for row in rows]


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


