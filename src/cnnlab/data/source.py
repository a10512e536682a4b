"""`Source`: a dataset as found on disk — which images, which targets — before any resizing.

Every way of pointing cnnlab at data (a named dataset, a folder of class sub-folders, a CSV, IDX
files) ends as a `Source`. Pixels are either already in memory as a uint8 array (IDX files,
CIFAR-10, scikit-learn's digits) or are files that are decoded later.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Source:
    """Images and their targets.

    names:        one display name per image: the file path, or `<dataset>/<split>/<index>`.
    targets:      int64 class indices, shape (N,), for classification;
                  float32 values, shape (N, T), for regression;
                  a target container (`cnnlab.data.targets`) for boxes or masks.
    class_names:  the classes, index order (classification, detection); None for regression.
    target_names: the numeric targets' column names (regression); None for classification.
    pixels:       uint8 array (N, H, W) or (N, H, W, C) when the images are already in memory.
    paths:        image files, one per name, when they are decoded on demand.
    """

    description: str
    names: Sequence[str]
    targets: np.ndarray
    class_names: list[str] | None = None
    target_names: list[str] | None = None
    pixels: np.ndarray | None = None
    paths: Sequence[Path] | None = None

    def __post_init__(self) -> None:
        if (self.pixels is None) == (self.paths is None):
            raise ValueError("a Source holds either pixels or paths")
        count = len(self.pixels) if self.pixels is not None else len(self.paths or ())
        if not (len(self.names) == len(self.targets) == count):
            raise ValueError(
                f"{self.description}: {len(self.names)} names, {len(self.targets)} targets and "
                f"{count} images; they must match"
            )

    def __len__(self) -> int:
        return len(self.targets)

    @property
    def stratify_labels(self) -> np.ndarray | None:
        """One class per image to stratify splits by (each class keeps its share), or None where an
        image has no single class (numeric targets, several boxes)."""
        if self.class_names is None or not isinstance(self.targets, np.ndarray) or self.targets.ndim != 1:
            return None
        return self.targets

    def subset(self, indices: Sequence[int] | np.ndarray, description: str | None = None) -> "Source":
        index = np.asarray(indices, dtype=np.int64)
        return replace(
            self,
            description=description or self.description,
            names=[self.names[i] for i in index],
            targets=self.targets[index],
            pixels=None if self.pixels is None else self.pixels[index],
            paths=None if self.paths is None else [self.paths[i] for i in index],
        )

    def class_counts(self) -> dict[str, int]:
        """Images per class (objects per class for boxes)."""
        if self.class_names is None:
            return {}
        if not isinstance(self.targets, np.ndarray):  # a container: objects per class
            counts = self.targets.class_counts(len(self.class_names))
        else:
            counts = np.bincount(self.targets, minlength=len(self.class_names))
        return {name: int(count) for name, count in zip(self.class_names, counts)}
