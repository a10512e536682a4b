"""How a Source holds its targets, and how they become one dense tensor per batch.

Classification and regression targets are plain arrays: int64 labels (N,) and float32 values
(N, T). Targets that are positions in the image (a detector's boxes, a segmentation's masks) are a
*target container*: an object with one entry per image that knows how to become a dense tensor at
the model's geometry, given each image's own size (boxes are scaled and cropped with the pixels).
Dense means one tensor whose first dimension is the images, padded where images differ (boxes
padded to the dataset's most objects), so that the loader's index-select, slicing, `.to()` and
DDP's shares work on every task alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

    from cnnlab.data.prepare import Geometry


class TargetContainer(Protocol):
    """Per-image targets that are not a plain array (see the module docstring)."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: np.ndarray) -> "TargetContainer":
        """The entries at `index` (an int64 array), in that order."""

    def dense(self, origins: Sequence[tuple[int, int]], geometry: "Geometry") -> "torch.Tensor":
        """All entries as one tensor at `geometry`; `origins[i]` is image i's own (width, height)."""

    def class_counts(self, num_classes: int) -> np.ndarray:
        """How many times each class occurs (objects, not images, for a detector)."""


def is_container(targets: Any) -> bool:
    return not isinstance(targets, np.ndarray)


def dense_targets(targets: Any, origins: Sequence[tuple[int, int]] | None, geometry: "Geometry") -> "torch.Tensor":
    """Targets of a Source (an array or a container) as the dense tensor batches carry: labels as
    int64, values as float32, containers as they say."""
    import torch

    if is_container(targets):
        if origins is None:
            raise ValueError("these targets depend on each image's own size: pass the origins")
        return targets.dense(origins, geometry)
    tensor = torch.from_numpy(np.ascontiguousarray(targets))
    return tensor.long() if np.issubdtype(targets.dtype, np.integer) else tensor.float()


def needs_origins(targets: Any) -> bool:
    """Whether the dense targets depend on each image's own size (only containers' do)."""
    return is_container(targets)
