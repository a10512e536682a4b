"""Segmentation evaluation pictures: IoU and Dice per class, and the pixel confusion matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.plotting import new_figure, save_figure


def plot_iou_per_class(metrics: dict[str, Any], path: Path) -> Path:
    """Horizontal bars: each class's IoU and Dice, with the mIoU as a line."""
    per_class = metrics.get("per_class") or {}
    names = list(per_class)
    iou = np.array([per_class[n].get("iou") or 0.0 for n in names])
    dice = np.array([per_class[n].get("dice") or 0.0 for n in names])
    figure = new_figure(7.0, 1.2 + 0.35 * max(len(names), 2))
    axes = figure.add_subplot()
    rows = np.arange(len(names))
    axes.barh(rows - 0.2, iou, height=0.4, label="IoU", color="#4a78b8")
    axes.barh(rows + 0.2, dice, height=0.4, label="Dice", color="#e0a030")
    if metrics.get("miou") is not None:
        axes.axvline(metrics["miou"], color="black", linestyle="--", linewidth=1, label=f"mIoU {metrics['miou']:.3f}")
    axes.set_yticks(rows, labels=names)
    axes.invert_yaxis()
    axes.set_xlim(0, 1)
    axes.set_xlabel("score (pixels of the whole set)")
    axes.legend(loc="lower right", fontsize=8)
    axes.set_title("IoU and Dice per class")
    return save_figure(figure, path)
