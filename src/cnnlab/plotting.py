"""Shared matplotlib set-up: figures drawn without pyplot, so no display or GUI backend is needed."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def new_figure(width: float, height: float) -> "Figure":
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def save_figure(figure: "Figure", path: Path) -> Path:
    """Save atomically as PNG (a half-written picture is never left behind)."""
    from cnnlab.io import atomic_path

    path = Path(path)
    with atomic_path(path) as temp:
        figure.savefig(temp, format="png")
    return path
