"""training_curves.png: how loss and accuracy (or MAE) moved, epoch by epoch.

Train and validation side by side is how over-fitting shows: the training loss keeps falling
while the validation loss turns back up.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from cnnlab.plotting import new_figure, save_figure


def plot_training_curves(history: list[dict[str, Any]], headline: str, path: Path, *, best_epoch: int = 0,
                         loss_name: str = "") -> Path:
    return save_figure(training_curves_figure(history, headline, best_epoch=best_epoch, loss_name=loss_name), path)


def training_curves_figure(history: list[dict[str, Any]], headline: str, *, best_epoch: int = 0,
                           loss_name: str = ""):
    """Loss and `headline` per epoch, side by side. `loss_name` ("cross-entropy", ...) labels the
    loss axis: which loss it is decides what its numbers mean."""
    epochs = [row["epoch"] for row in history]
    figure = new_figure(10, 4)
    panels = (("loss", "loss", f"loss ({loss_name})" if loss_name else "loss"),
              (headline, headline.upper() if headline == "mae" else headline, None))
    for position, (metric, label, axis_label) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, 2, position)
        for split, style in (("train", "-o"), ("val", "-s")):
            values = [row.get(f"{split}_{metric}", math.nan) for row in history]
            if not all(math.isnan(v) for v in values):
                axes.plot(epochs, values, style, markersize=4, label="validation" if split == "val" else split)
        if best_epoch:
            axes.axvline(best_epoch, color="grey", linestyle=":", linewidth=1, label=f"best (epoch {best_epoch})")
        axes.set_xlabel("epoch")
        axes.set_ylabel(axis_label or label)
        axes.set_title(f"{label} per epoch")
        axes.grid(alpha=0.3)
        axes.legend()
        if len(epochs) <= 20:
            axes.set_xticks(epochs)
    return figure
