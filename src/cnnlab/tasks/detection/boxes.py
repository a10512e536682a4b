"""Box geometry: boxes that follow their image when it is fitted, flipped, zoomed or shifted.

Boxes are (x1, y1, x2, y2) in continuous pixel coordinates: pixel column i spans x = i..i+1, so a
box covering columns 0..9 has x1 = 0, x2 = 10. A batch's targets are one dense float32 tensor
(N, M, 6), one row per object and padding rows after them:

    [class, x1, y1, x2, y2, flag]    class −1 marks a padding row; flag 0 normal, 1 crowd, 2 difficult

Dense and padded, they index-select, slice, `.to()` and concatenate like the images they belong to.
IoU, NMS, clipping and the GIoU loss come from torchvision.ops; this module only holds what
torchvision does not: how cnnlab's own resampling moves a box.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from cnnlab.data.images import check_fit

COLUMNS = 6  # class, x1, y1, x2, y2, flag
PADDING = -1.0  # the class of a padding row (and of a box dropped by `move_boxes`)
NORMAL, CROWD, DIFFICULT = 0, 1, 2  # flags: crowd (COCO iscrowd) and difficult (VOC) boxes are not learned
RESAMPLERS = ("pillow", "torchvision")


# --- fitting an image to the model's size -------------------------------------------------------


def _pillow_crop(origin: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """ImageOps.fit's geometry (bleed 0, centred): a crop box of the output's aspect ratio, in
    fractional pixels, resized to the output."""
    width, height = origin
    out_height, out_width = size
    live_ratio, output_ratio = width / height, out_width / out_height
    if live_ratio == output_ratio:
        crop_width, crop_height = float(width), float(height)
    elif live_ratio >= output_ratio:
        crop_width, crop_height = output_ratio * height, float(height)
    else:
        crop_width, crop_height = float(width), width / output_ratio
    left, top = (width - crop_width) * 0.5, (height - crop_height) * 0.5
    scale_x, scale_y = out_width / crop_width, out_height / crop_height
    return scale_x, scale_y, -left * scale_x, -top * scale_y


def _torchvision_crop(origin: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """prepare._fit_tensor's geometry: resize to a rounded size that covers the output, then
    torchvision's center_crop, which starts at a whole pixel."""
    width, height = origin
    out_height, out_width = size
    scale = max(out_height / height, out_width / width)
    inner_height = max(out_height, max(1, round(height * scale)))
    inner_width = max(out_width, max(1, round(width * scale)))
    top, left = int(round((inner_height - out_height) / 2.0)), int(round((inner_width - out_width) / 2.0))
    return inner_width / width, inner_height / height, float(-left), float(-top)


def _pad(origin: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Both pad paths: scale to fit inside, rounded inner size, black borders (W − inner) // 2."""
    width, height = origin
    out_height, out_width = size
    scale = min(out_width / width, out_height / height)
    inner_width = max(1, min(out_width, round(width * scale)))
    inner_height = max(1, min(out_height, round(height * scale)))
    return (inner_width / width, inner_height / height,
            float((out_width - inner_width) // 2), float((out_height - inner_height) // 2))


def fit_geometry(origin: tuple[int, int], size: tuple[int, int], fit: str, *,
                 resampler: str = "pillow") -> tuple[float, float, float, float]:
    """(scale_x, scale_y, offset_x, offset_y): where a point x of an image of `origin` (width,
    height) lands, x·scale + offset, once the image is fitted to `size` (H, W) by `fit`.

    `resampler` says which of cnnlab's two pixel paths fitted the image: "pillow" for files
    (`images.fit_image`), "torchvision" for in-memory arrays (`prepare._fit_tensor`). They differ
    only for crop, by up to about half a pixel: Pillow crops at a fractional position, torchvision
    resizes to a whole number of pixels and crops at a whole pixel.

    >>> fit_geometry((200, 100), (50, 50), "pad")
    (0.25, 0.25, 0.0, 12.0)
    """
    check_fit(fit)
    if resampler not in RESAMPLERS:
        raise ValueError(f"resampler must be one of {', '.join(RESAMPLERS)} (got {resampler!r})")
    width, height = origin
    out_height, out_width = size
    if (width, height) == (out_width, out_height):
        return 1.0, 1.0, 0.0, 0.0  # both paths leave an image of the right size alone
    if fit == "squash":
        return out_width / width, out_height / height, 0.0, 0.0
    if fit == "pad":
        return _pad(origin, size)
    return (_pillow_crop if resampler == "pillow" else _torchvision_crop)(origin, size)


def fit_boxes(boxes: np.ndarray, origin: tuple[int, int], size: tuple[int, int], fit: str, *,
              resampler: str = "pillow") -> np.ndarray:
    """Boxes (k, 4) in an image of `origin` (width, height) -> the same boxes once the image is
    fitted to `size` (H, W) by `fit` (squash, crop or pad), clipped to the fitted image.

    A box that crop cuts off entirely comes back with zero width or height: dropping it, and
    counting it, is the caller's business.

    >>> fit_boxes(np.array([[0, 0, 200, 100]], np.float32), (200, 100), (50, 50), "pad")
    array([[ 0., 12., 50., 37.]], dtype=float32)
    """
    scale_x, scale_y, offset_x, offset_y = fit_geometry(origin, size, fit, resampler=resampler)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scale = np.array([scale_x, scale_y, scale_x, scale_y])
    offset = np.array([offset_x, offset_y, offset_x, offset_y])
    out_height, out_width = size
    fitted = boxes * scale + offset
    fitted[:, 0::2] = fitted[:, 0::2].clip(0, out_width)
    fitted[:, 1::2] = fitted[:, 1::2].clip(0, out_height)
    return fitted.astype(np.float32)


# --- moving boxes with the pixels of an augmentation ---------------------------------------------


def _to_normalised(values: Tensor, extent: int) -> Tensor:
    # align_corners=False: −1 and +1 are the outer edges of the first and last pixel, x = 0 and x = W
    return values * (2.0 / extent) - 1.0


def _to_pixels(values: Tensor, extent: int) -> Tensor:
    return (values + 1.0) * (extent / 2.0)


def _corners(xyxy: Tensor) -> tuple[Tensor, Tensor]:
    """(…, 4) boxes -> x and y of their four corners, each (…, 4)."""
    x1, y1, x2, y2 = xyxy.unbind(-1)
    return torch.stack([x1, x2, x2, x1], -1), torch.stack([y1, y1, y2, y2], -1)


def move_boxes(targets: Tensor, theta: Tensor, size: tuple[int, int], *, min_size: float = 2.0,
               min_visible: float = 0.3) -> Tensor:
    """Targets (N, M, 6) -> where their boxes are after the images were resampled with `theta`.

    `theta` (N, 2, 3) is what `F.affine_grid(theta, (N, C, H, W), align_corners=False)` takes: it
    maps the OUTPUT's normalised coordinates to the INPUT's. A box therefore moves by its inverse.
    The four corners are mapped and the box around them taken, so any affine works (flips are a
    −1 in x; cnnlab's presets never rotate). Boxes are then clipped to the H×W image, and a box
    left less than `min_size` pixels on a side, or with less than `min_visible` of its moved area
    inside the image, becomes a padding row (class −1, zeros), as do padding rows.

    >>> flip = torch.tensor([[[-1.0, 0, 0], [0, 1, 0]]])
    >>> move_boxes(torch.tensor([[[3.0, 10, 20, 30, 40, 0]]]), flip, (64, 64))
    tensor([[[ 3., 34., 20., 54., 40.,  0.]]])
    """
    height, width = size
    theta = theta.to(device=targets.device, dtype=torch.float32)
    linear, shift = theta[:, :, :2], theta[:, :, 2]  # input = linear @ output + shift
    inverse = torch.linalg.inv(linear)  # (N, 2, 2)
    corner_x, corner_y = _corners(targets[..., 1:5].float())  # (N, M, 4) each, pixels of the input
    points = torch.stack([_to_normalised(corner_x, width), _to_normalised(corner_y, height)], -1)
    points = points - shift[:, None, None, :]
    moved = torch.einsum("nij,nmkj->nmki", inverse, points)  # (N, M, 4 corners, 2)
    xs, ys = _to_pixels(moved[..., 0], width), _to_pixels(moved[..., 1], height)
    unclipped = torch.stack([xs.amin(-1), ys.amin(-1), xs.amax(-1), ys.amax(-1)], -1)
    clipped = torch.stack([unclipped[..., 0].clamp(0, width), unclipped[..., 1].clamp(0, height),
                           unclipped[..., 2].clamp(0, width), unclipped[..., 3].clamp(0, height)], -1)
    keep = (targets[..., 0] >= 0) & _visible_enough(unclipped, clipped, min_size, min_visible)
    moved_targets = torch.cat([targets[..., :1], clipped.to(targets.dtype), targets[..., 5:]], -1)
    return torch.where(keep[..., None], moved_targets, _padding_row(targets))


def _visible_enough(unclipped: Tensor, clipped: Tensor, min_size: float, min_visible: float) -> Tensor:
    sides = clipped[..., 2:] - clipped[..., :2]
    area = (unclipped[..., 2:] - unclipped[..., :2]).prod(-1)
    visible = sides.prod(-1) / area.clamp(min=1e-6)
    return (sides >= min_size).all(-1) & (visible >= min_visible)


def _padding_row(like: Tensor) -> Tensor:
    row = torch.zeros(COLUMNS, dtype=like.dtype, device=like.device)
    row[0] = PADDING
    return row


# --- lists of boxes <-> one padded tensor ----------------------------------------------------------


def pad_boxes(items: Sequence[tuple[object, object, object]], max_objects: int | None = None) -> Tensor:
    """[(boxes (k, 4), labels (k,), flags (k,)), ...] for N images -> targets (N, M, 6), float32.

    M is `max_objects`, or the most boxes any image has (at least 1) when it is None; an image with
    more boxes than `max_objects` raises ValueError (cutting objects silently would teach the
    model that they are background).

    >>> pad_boxes([([[0, 0, 4, 4]], [2], [0]), (np.zeros((0, 4)), [], [])])
    tensor([[[ 2.,  0.,  0.,  4.,  4.,  0.]],
    <BLANKLINE>
            [[-1.,  0.,  0.,  0.,  0.,  0.]]])
    """
    counts = [len(labels) for _, labels, _ in items]  # type: ignore[arg-type]
    rows = max(max(counts, default=0), 1) if max_objects is None else max_objects
    if counts and max(counts) > rows:
        image = counts.index(max(counts))
        raise ValueError(f"image {image} has {max(counts)} boxes, more than max_objects={rows}")
    targets = torch.zeros(len(items), rows, COLUMNS, dtype=torch.float32)
    targets[..., 0] = PADDING
    for index, (boxes, labels, flags) in enumerate(items):
        count = counts[index]
        if count:
            targets[index, :count, 0] = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
            targets[index, :count, 1:5] = torch.as_tensor(np.asarray(boxes), dtype=torch.float32).view(-1, 4)
            targets[index, :count, 5] = torch.as_tensor(np.asarray(flags), dtype=torch.float32)
    return targets


def unpad(targets: Tensor) -> list[tuple[Tensor, Tensor, Tensor]]:
    """targets (N, M, 6) -> per image (boxes (k, 4) float, labels (k,) int64, flags (k,) int64),
    the rows that are not padding, in their order.

    >>> boxes, labels, flags = unpad(pad_boxes([([[0, 0, 4, 4]], [2], [1])]))[0]
    >>> boxes.tolist(), labels.tolist(), flags.tolist()
    ([[0.0, 0.0, 4.0, 4.0]], [2], [1])
    """
    result = []
    for rows in targets:
        kept = rows[rows[:, 0] >= 0]
        result.append((kept[:, 1:5], kept[:, 0].long(), kept[:, 5].long()))
    return result


def box_sizes(targets: Tensor) -> Tensor:
    """(N, M, 6) -> (N, M, 2) width and height of each box (zero for padding rows)."""
    sides = (targets[..., 3:5] - targets[..., 1:3]).clamp(min=0)
    return torch.where(targets[..., :1] >= 0, sides, torch.zeros_like(sides))


def horizontal_flip_theta(count: int, device: torch.device | str = "cpu") -> Tensor:
    """(count, 2, 3) thetas that mirror images left-right (what `BatchRandomHorizontalFlip` does)."""
    theta = torch.zeros(count, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 1, 1] = -1.0, 1.0
    return theta

