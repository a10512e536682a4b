"""Evaluation pictures: the confusion matrix and predicted-vs-true scatter plots."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from cnnlab.plotting import new_figure, save_figure


def plot_confusion_matrix(matrix: Sequence[Sequence[int]], labels: Sequence[str], path: Path,
                          *, title: str = "Confusion matrix") -> Path:
    """Rows are true classes, columns predicted ones; colour is the share of each true class
    (so the diagonal reads as per-class recall) and each cell shows its count."""
    counts = np.asarray(matrix, dtype=np.int64)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = min(4.0 + 0.5 * len(labels), 16.0)
    figure = new_figure(size + 1.2, size)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = np.arange(len(labels))
    axes.set_xticks(ticks, labels=labels, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=labels)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    axes.set_title(title)
    if len(labels) <= 30:
        for row in range(len(labels)):
            for column in range(len(labels)):
                colour = "white" if shares[row, column] > 0.5 else "black"
                axes.text(column, row, f"{counts[row, column]:,}", ha="center", va="center",
                          color=colour, fontsize=8 if len(labels) <= 12 else 6)
    return save_figure(figure, path)


def plot_regression_scatter(true: np.ndarray, predicted: np.ndarray, target_names: Sequence[str],
                            scores: dict, path: Path) -> Path:
    """One panel per target: predicted against true values, with the ideal y = x line."""
    true = np.asarray(true).reshape(len(true), -1)
    predicted = np.asarray(predicted).reshape(len(predicted), -1)
    columns = len(target_names)
    figure = new_figure(4.5 * columns, 4.5)
    for column, name in enumerate(target_names):
        axes = figure.add_subplot(1, columns, column + 1)
        axes.scatter(true[:, column], predicted[:, column], s=6, alpha=0.4, edgecolors="none")
        low = float(min(true[:, column].min(), predicted[:, column].min()))
        high = float(max(true[:, column].max(), predicted[:, column].max()))
        axes.plot([low, high], [low, high], color="crimson", linewidth=1, label="perfect prediction")
        score = scores.get(name, {})
        axes.set_title(f"{name}: MAE {score.get('mae', float('nan')):.3g}, R² {score.get('r2', float('nan')):.3f}")
        axes.set_xlabel(f"true {name}")
        axes.set_ylabel(f"predicted {name}")
        axes.legend(loc="upper left")
    return save_figure(figure, path)


MAX_CURVES = 10  # more lines than this on one plot cannot be told apart


def plot_ranking_curves(curves: dict, operating: dict[str, tuple[float, float, float]], path: Path, *,
                        binary: bool = False) -> Path:
    """ROC curves (left) and precision-recall curves (right), each class against the rest, with a
    dot where the model's own answers (its most probable class) sit on each curve. With two
    classes both are drawn: their ROC curves mirror each other (same AUC), but which one is the
    "positive" finding is the user's to say, and its precision-recall curve differs. With more than
    `MAX_CURVES` classes, the ones with the lowest ROC AUC are drawn."""
    shown = curves
    if len(shown) > MAX_CURVES:
        hardest = sorted(shown, key=lambda name: shown[name].roc_auc())[:MAX_CURVES]
        shown = {name: shown[name] for name in hardest}
    figure = new_figure(11.0, 5.0)
    roc_axes, pr_axes = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    for index, (name, curve) in enumerate(shown.items()):
        colour = f"C{index % 10}"
        fpr, tpr = curve.roc()
        recall, precision = curve.precision_recall()
        roc_axes.plot(fpr, tpr, color=colour, linewidth=1.4, label=f"{name} (AUC {curve.roc_auc():.3f})")
        pr_axes.step(np.concatenate([[0.0], recall]), np.concatenate([[precision[0]], precision]), where="post",
                     color=colour, linewidth=1.4, label=f"{name} (AP {curve.average_precision():.3f})")
        false_rate, true_rate, precision_here = operating[name]
        roc_axes.plot([false_rate], [true_rate], "o", color=colour, markersize=6, markeredgecolor="black")
        pr_axes.plot([true_rate], [precision_here], "o", color=colour, markersize=6, markeredgecolor="black")
    roc_axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="guessing (AUC 0.5)")
    roc_axes.set_xlabel("false-positive rate (1 − specificity)")
    roc_axes.set_ylabel("true-positive rate (sensitivity, recall)")
    pr_axes.set_xlabel("recall (sensitivity)")
    pr_axes.set_ylabel("precision")
    against = "against the other" if binary else "against the rest"
    roc_axes.set_title(f"ROC: each threshold on the class's probability, {against}", fontsize=9)
    pr_axes.set_title("precision-recall; dots: the model's own answers (most probable class)", fontsize=9)
    if len(shown) < len(curves):
        figure.suptitle(f"the {len(shown)} classes with the lowest ROC AUC, of {len(curves)}")
    for axes in (roc_axes, pr_axes):
        axes.set_xlim(-0.01, 1.01)
        axes.set_ylim(-0.01, 1.01)
        axes.grid(alpha=0.3)
        axes.legend(loc="lower right" if axes is roc_axes else "lower left", fontsize=7)
    return save_figure(figure, path)
