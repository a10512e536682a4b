"""A detection Source's targets: each image's boxes, as read, until they are fitted to the model.

Boxes are read in each image's own pixels (`formats`); the model sees every image fitted to its
input size (squashed, cropped or padded), so the boxes are fitted with it when a batch's dense
targets are made: (N, M, 6) rows of [class, x1, y1, x2, y2, flag], padded with class −1 to the
most boxes any image of the dataset has (`max_objects`), so every batch has the same M and the
loader can index-select, slice and stack them like labels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cnnlab.tasks.detection.formats_base import BoxReport, ImageBoxes

if TYPE_CHECKING:
    import torch

    from cnnlab.data.prepare import Geometry

MIN_FITTED_SIDE = 1.0  # px: a box that fitting (a crop) leaves thinner than this is no longer an object


class BoxTargets:
    """One `ImageBoxes` per image (a target container, see cnnlab.data.targets)."""

    def __init__(self, annotations: Sequence[ImageBoxes], *, max_objects: int | None = None,
                 category_ids: Sequence[int] = (), report: BoxReport | None = None, resampler: str = "pillow"):
        self.annotations = list(annotations)
        self.max_objects = max(max_objects or max((len(a) for a in self.annotations), default=0), 1)
        self.category_ids = list(category_ids)
        self.report = report
        self.resampler = resampler  # which pixel path fits the images: "pillow" (files), "torchvision" (arrays)

    def __len__(self) -> int:
        return len(self.annotations)

    def __getitem__(self, index: Any) -> "BoxTargets":
        chosen = [self.annotations[int(i)] for i in np.asarray(index).reshape(-1)]
        return BoxTargets(chosen, max_objects=self.max_objects, category_ids=self.category_ids,
                          report=self.report, resampler=self.resampler)

    def dense(self, origins: Sequence[tuple[int, int]], geometry: "Geometry") -> "torch.Tensor":
        from cnnlab.tasks.detection.boxes import fit_boxes, pad_boxes

        items = []
        for annotation, origin in zip(self.annotations, origins):
            fitted = fit_boxes(annotation.boxes, tuple(origin), geometry.size, geometry.fit, resampler=self.resampler)
            sides = fitted[:, 2:] - fitted[:, :2]
            kept = (sides >= MIN_FITTED_SIDE).all(axis=1)
            items.append((fitted[kept], annotation.labels[kept], annotation.flags[kept]))
        return pad_boxes(items, self.max_objects)

    def relabelled(self, mapping: np.ndarray) -> "BoxTargets":
        """The same boxes with each label l replaced by mapping[l] (another class list's order)."""
        annotations = [ImageBoxes(a.boxes, mapping[a.labels].astype(np.int64), a.flags) for a in self.annotations]
        return BoxTargets(annotations, max_objects=self.max_objects, category_ids=self.category_ids,
                          report=self.report, resampler=self.resampler)

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Boxes per class (crowd and difficult boxes left out)."""
        labels = [a.labels[a.flags == 0] for a in self.annotations]
        every = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        return np.bincount(every, minlength=num_classes)[:num_classes]

    def objects(self) -> int:
        return sum(len(a) for a in self.annotations)

    def summary(self) -> dict[str, Any]:
        """What data.json records about the boxes: how many, and what reading them fixed or dropped."""
        values: dict[str, Any] = {"boxes": self.objects(), "max_per_image": self.max_objects,
                                  "images_without_boxes": sum(1 for a in self.annotations if not len(a))}
        if self.report is not None:
            values["read"] = self.report.to_json()
        return values
