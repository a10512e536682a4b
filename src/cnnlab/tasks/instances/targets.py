"""An instance-segmentation Source's targets: each image's objects, a class and a mask each.

Objects are kept as read (polygons in the image's own pixels, COCO RLE, or a mask) and rasterised
when needed: `masks(i)` gives image i's masks (k, h, w) at its own size, which is what the COCO and
YOLO-seg readers are compared by. Batches carry them as ONE uint8 tensor (N, 2, H, W) at the model's
input, so the loader, augmentation and DDP treat them as any dense target:

    plane 0   the instance id of each pixel: 0 none, 1..k the image's objects in reading order
    plane 1   the class + 1 of each pixel: 0 background

A pixel with a class and no instance belongs to a crowd region (COCO's iscrowd): it is not learned,
and scoring ignores detections on it, as COCO evaluation does. Where two objects overlap, the
smaller one is painted last and keeps the pixels (a small object on a large one stays whole). Both
planes are fitted like the image (`--fit`) and moved by augmentation by nearest neighbour
(segmentation's `fit_mask`/`move_masks`): ids and classes never blend; what comes from outside the
image is background. At most 254 objects per image and 254 classes (one byte per plane).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from cnnlab.errors import DataError

if TYPE_CHECKING:
    import torch

    from cnnlab.data.prepare import Geometry

MAX_IDS = 254  # one byte per plane, 255 being the fitted mask's padding
NORMAL, CROWD = 0, 1


@dataclass
class ImageInstances:
    """The objects of one image: `shapes[j]` is object j's outline (a list of polygons [x1, y1, ...] in
    pixels, a COCO RLE dict, or a (h, w) array), `labels` class indices, `flags` 0 normal / 1 crowd."""

    size: tuple[int, int]  # the image's own (width, height)
    labels: np.ndarray
    flags: np.ndarray
    shapes: list[Any] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # per object, where it was read (errors name it)

    def __len__(self) -> int:
        return len(self.labels)

    def masks(self) -> np.ndarray:
        """(k, h, w) uint8 0/1, in the image's own pixels."""
        width, height = self.size
        return np.stack([rasterise(shape, height, width, where) for shape, where in
                         zip(self.shapes, self.where or [""] * len(self.shapes))]) if len(self) else \
            np.zeros((0, height, width), np.uint8)


def rasterise(shape: Any, height: int, width: int, where: str = "") -> np.ndarray:
    """One object's outline → uint8 (h, w) 0/1 (polygons by segmentation's rasteriser, pixel centres
    inside, even-odd; COCO RLE decoded exactly)."""
    from cnnlab.tasks.segmentation.rle import coco_rle_to_mask, polygon_to_mask

    if isinstance(shape, np.ndarray):
        return (shape > 0).astype(np.uint8)
    if isinstance(shape, dict):
        return coco_rle_to_mask(shape["counts"], height, width, where)
    mask = np.zeros((height, width), np.uint8)
    for polygon in shape:
        mask |= polygon_to_mask(polygon, height, width)
    return mask


def paint(masks: np.ndarray, labels: np.ndarray, flags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(k, h, w) masks → (instance ids, classes + 1), each uint8 (h, w): larger objects first, crowd
    regions in the class plane only (see the module docstring)."""
    if len(masks) > MAX_IDS:
        raise DataError(f"an image has {len(masks)} objects; instance segmentation takes at most {MAX_IDS} per image")
    ids = np.zeros(masks.shape[1:], np.uint8)
    classes = np.zeros(masks.shape[1:], np.uint8)
    order = np.argsort(-masks.sum(axis=(1, 2), dtype=np.int64), kind="stable")
    for number, index in enumerate(order, start=1):
        region = masks[index] > 0
        classes[region] = labels[index] + 1
        ids[region] = 0 if flags[index] == CROWD else number
    return ids, classes


class InstanceTargets:
    """One `ImageInstances` per image (a target container, see cnnlab.data.targets)."""

    def __init__(self, images: Sequence[ImageInstances], *, category_ids: Sequence[int] = ()):
        self.images = list(images)
        self.category_ids = list(category_ids)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: Any) -> "InstanceTargets":
        return InstanceTargets([self.images[int(i)] for i in np.asarray(index).reshape(-1)],
                               category_ids=self.category_ids)

    def masks(self, position: int) -> np.ndarray:
        return self.images[position].masks()

    def dense(self, origins: Sequence[tuple[int, int]], geometry: "Geometry") -> "torch.Tensor":
        import torch

        from cnnlab.tasks.segmentation.targets import fit_mask

        planes = np.zeros((len(self.images), 2, *geometry.size), np.uint8)
        for position, (image, origin) in enumerate(zip(self.images, origins)):
            if tuple(origin) != tuple(image.size):
                raise DataError(f"{image.where[0] if image.where else f'image {position}'}: the annotations are for a "
                                f"{image.size[0]}×{image.size[1]} image, the file is {origin[0]}×{origin[1]}")
            ids, classes = paint(image.masks(), image.labels, image.flags)
            for plane, values in enumerate((ids, classes)):
                fitted = fit_mask(values, geometry.size, geometry.fit)
                planes[position, plane] = np.where(fitted == 255, 0, fitted)  # padding: background
        return torch.from_numpy(planes)

    def class_counts(self, num_classes: int) -> np.ndarray:
        """Objects per class (crowd regions left out)."""
        labels = [image.labels[image.flags == NORMAL] for image in self.images]
        every = np.concatenate(labels) if labels else np.zeros(0, np.int64)
        return np.bincount(every.astype(np.int64), minlength=num_classes)[:num_classes]

    def objects(self) -> int:
        return sum(len(image) for image in self.images)

    def summary(self) -> dict[str, Any]:
        return {"objects": self.objects(), "max_per_image": max((len(i) for i in self.images), default=0),
                "images_without_objects": sum(1 for image in self.images if not len(image))}


def move_instances(targets: "torch.Tensor", theta: "torch.Tensor", size: tuple[int, int]) -> "torch.Tensor":
    """Both planes (N, 2, H, W) resampled through `theta` by nearest neighbour, as the pixels were;
    what comes from outside the image is background."""
    import torch

    from cnnlab.tasks.segmentation.masks import VOID
    from cnnlab.tasks.segmentation.targets import move_masks

    count = len(targets)
    moved = move_masks(targets.reshape(count * 2, *targets.shape[2:]).long(), theta.repeat_interleave(2, dim=0), size)
    moved = torch.where(moved == VOID, torch.zeros_like(moved), moved)
    return moved.reshape(count, 2, *moved.shape[1:]).to(targets.dtype)


def unpack(targets: "torch.Tensor") -> list[tuple["torch.Tensor", "torch.Tensor", "torch.Tensor", "torch.Tensor"]]:
    """Dense targets (N, 2, H, W) → per image (masks (k, H, W) bool, boxes (k, 4), labels (k,), flags (k,)):
    the objects present, then one crowd region per class that has crowd pixels (flag 1)."""
    import torch

    result = []
    for ids, classes in targets.long():
        present = torch.unique(ids)
        present = present[present > 0]
        masks = ids.unsqueeze(0) == present.view(-1, 1, 1)
        labels = [int(classes[mask].max()) - 1 for mask in masks]
        crowd = (ids == 0) & (classes > 0)
        crowd_classes = torch.unique(classes[crowd]).tolist()
        masks = torch.cat([masks, *((crowd & (classes == value)).unsqueeze(0) for value in crowd_classes)])
        labels += [value - 1 for value in crowd_classes]
        flags = [NORMAL] * len(present) + [CROWD] * len(crowd_classes)
        result.append((masks, mask_boxes(masks), torch.tensor(labels, dtype=torch.long),
                       torch.tensor(flags, dtype=torch.long)))
    return result


def mask_boxes(masks: "torch.Tensor") -> "torch.Tensor":
    """(k, H, W) masks → (k, 4) tight boxes x1, y1, x2, y2 (x2, y2 one past the last pixel); zeros for
    an empty mask."""
    import torch
    from torchvision.ops import masks_to_boxes

    boxes = torch.zeros(len(masks), 4)
    present = masks.flatten(1).any(dim=1)
    if present.any():  # torchvision's boxes end at the last pixel; cnnlab's one past it
        boxes[present] = masks_to_boxes(masks[present]).float().cpu() + torch.tensor([0.0, 0.0, 1.0, 1.0])
    return boxes.to(masks.device)
