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
