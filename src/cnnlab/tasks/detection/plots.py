"""Detection evaluation pictures: precision–recall curves per class, and the confusion matrix with a
background row (false detections) and column (missed objects)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnlab.plotting import new_figure, save_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

MAX_CURVES = 10  # more coloured lines than this on one plot cannot be told apart


def precision_recall_curves(meter_or_curves: Any) -> dict[str, Any]:
    """The "precision_recall" entry of `DetectionMeter.compute()`, from a meter, from compute()'s
    result, or as it is: {"iou", "recall": [101 points], "precision": {class: [101] or None}}."""
    if hasattr(meter_or_curves, "compute"):
        meter_or_curves = meter_or_curves.compute()
    if isinstance(meter_or_curves, Mapping) and "precision_recall" in meter_or_curves:
        meter_or_curves = meter_or_curves["precision_recall"]
    if not isinstance(meter_or_curves, Mapping) or not {"recall", "precision"} <= set(meter_or_curves):
        raise TypeError("expected a DetectionMeter, its compute() result or its 'precision_recall' entry")
    return dict(meter_or_curves)


def draw_precision_recall(meter_or_curves: Any) -> "Figure":
    """One curve per class (COCO's interpolated precision at its 101 recall points, the values AP
    averages) and their mean. With more than `MAX_CURVES` classes, the lowest-AP ones are coloured
    and named, the others drawn in grey."""
    curves = precision_recall_curves(meter_or_curves)
    recall = np.asarray(curves["recall"], dtype=float)
    defined = {name: np.asarray(values, dtype=float) for name, values in curves["precision"].items()
               if values is not None}
    iou = curves.get("iou", 0.5)
    figure = new_figure(7.0, 5.5)
    axes = figure.add_subplot()
    named = sorted(defined, key=lambda name: defined[name].mean())[:MAX_CURVES]
    others = [name for name in defined if name not in named]
    for index, name in enumerate(others):
        axes.plot(*_up_to_last_recall(recall, defined[name]), color="0.75", linewidth=0.8,
                  label=f"the {len(others)} other classes" if index == 0 else None)
    for index, name in enumerate(name for name in defined if name in named):
        axes.plot(*_up_to_last_recall(recall, defined[name]), color=f"C{index % 10}", linewidth=1.4,
                  label=f"{name} (AP {defined[name].mean():.3f})")
    if defined:
        mean = np.mean(list(defined.values()), axis=0)
        axes.plot(recall, mean, color="black", linewidth=2.5, label=f"all classes (mAP {mean.mean():.3f})")
    axes.set_xlabel("recall (share of the objects found)")
    axes.set_ylabel("precision (share of the detections that are right)")
    title = f"precision-recall at IoU ≥ {iou:.2f}"
    if others:
        title += f"; coloured: the {len(named)} classes with the lowest AP"
    missing = len(curves["precision"]) - len(defined)
    if missing:
        title += f"\n{missing} class{'es' if missing > 1 else ''} without ground truth (no AP) not drawn"
    axes.set_title(title, fontsize=9)
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.grid(alpha=0.3)
    if defined:
        axes.legend(loc="lower left", fontsize=7)
    return figure


def _up_to_last_recall(recall: np.ndarray, precision: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The curve up to its drop to 0 where the class's recall ends (not along the axis after it)."""
    reached = np.flatnonzero(precision > 0)
    end = min(int(reached[-1]) + 2, len(recall)) if len(reached) else len(recall)
    return recall[:end], precision[:end]


def plot_precision_recall(meter_or_curves: Any, path: Path) -> Path:
    """Write `draw_precision_recall` as a PNG (770 × 605 pixels)."""
    return save_figure(draw_precision_recall(meter_or_curves), path)


def draw_detection_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], *,
                                    title: str = "Detection confusion matrix") -> "Figure":
    """Rows are true classes, columns predicted ones, background last in both (given or added to
    `labels`). Each cell shows its count; colour is its share of the row, blue for classes and
    orange for the background row (false detections: which classes they were given) and column
    (missed objects: each class's miss rate). The background-background cell means nothing."""
    from matplotlib.patches import Rectangle

    counts = np.asarray(matrix, dtype=np.int64)
    size = len(counts)
    labels = list(labels) if len(labels) == size else [*labels, "background"]
    if counts.shape != (size, size) or len(labels) != size:
        raise ValueError(f"a {counts.shape} matrix needs {size} labels (background last) or {size - 1}")
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    background = np.zeros((size, size), dtype=bool)
    background[-1, :] = background[:, -1] = True
    side = min(4.0 + 0.5 * size, 16.0)
    figure = new_figure(side + 1.2, side)
    axes = figure.add_subplot()
    image = axes.imshow(np.ma.masked_array(shares, background), cmap="Blues", vmin=0.0, vmax=1.0)
    axes.imshow(np.ma.masked_array(shares, ~background), cmap="Oranges", vmin=0.0, vmax=1.0)
    axes.add_patch(Rectangle((size - 1.5, size - 1.5), 1, 1, facecolor="0.85", edgecolor="none"))
    axes.axhline(size - 1.5, color="black", linewidth=1.5)
    axes.axvline(size - 1.5, color="black", linewidth=1.5)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the row (orange: background)")
    ticks = np.arange(size)
    axes.set_xticks(ticks, labels=labels, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=labels)
    for tick in (axes.get_xticklabels()[-1], axes.get_yticklabels()[-1]):
        tick.set_fontstyle("italic")
    axes.set_xlabel("predicted class (background: a true object missed)")
    axes.set_ylabel("true class (background: a detection of nothing)")
    axes.set_title(title)
    if size <= 31:
        for row in range(size):
            for column in range(size):
                if row == column == size - 1:
                    continue
                colour = "white" if shares[row, column] > 0.5 else "black"
                axes.text(column, row, f"{counts[row, column]:,}", ha="center", va="center", color=colour,
                          fontsize=8 if size <= 13 else 6)
    return figure


def plot_detection_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path, *,
                                    title: str = "Detection confusion matrix") -> Path:
    """Write `draw_detection_confusion_matrix` as a PNG: (side + 1.2) × side inches at 110 dpi,
    side = min(4 + 0.5 × (classes + 1), 16)."""
    return save_figure(draw_detection_confusion_matrix(matrix, labels, title=title), path)
