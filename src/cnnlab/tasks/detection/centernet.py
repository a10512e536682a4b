"""The detection head's one tensor: what it should hold (encode), how wrong it is (loss), what it says (decode).

The model's output is one dense tensor (N, C + 4, h, w) at a fixed stride s (h = H/s, w = W/s):

    channels 0..C−1   class heatmap logits: sigmoid(·) is how likely an object of that class is
                      centred in the cell
    channels C..C+3   the box seen from the cell: log distances (l, t, r, b) from the cell's centre
                      ((j + ½)·s, (i + ½)·s) to the box's left, top, right and bottom sides, in
                      model-input pixels, as distance = s · exp(channel)

Why this design (CenterNet, Zhou et al. 2019, as TTFNet, Liu et al. 2020, trains it):
- One tensor at one stride, no anchors: the training loop, DDP, batch threads, Grad-CAM and feature
  maps see an ordinary conv output. Objects in cnnlab's images (small canvases, tens of pixels) all
  fit one scale; stride 4 separates objects whose centres are 4 px apart.
- Heatmap targets are Gaussians around each object's centre cell (TTFNet's elliptical kernel:
  σx = α·w/6, σy = α·h/6 in cells, α = 0.54), the maximum where objects of a class overlap, and
  exactly 1 at the centre cell. The loss is CenterNet's penalty-reduced focal loss: the centre cell
  is the positive, and cells near it are penalised less for firing, by (1 − heat)⁴; it is divided
  by the number of objects (at least 1, so an all-background batch gives a finite loss).
- Boxes are regressed from every cell of the Gaussian's central area (the box shrunk by β = 0.54
  about the centre cell), not only from the centre cell as CenterNet does: TTFNet's point is that
  this gives many more box samples per image, which is what lets it train in few epochs. A cell
  that lies in several objects' areas regresses the one whose Gaussian is highest there, so an
  object's centre cell always regresses its own box. Each sample is weighted by its Gaussian value,
  normalised per object and scaled by log(1 + area) (TTFNet), so a large object counts for more
  than a small one but not by its pixel count. The loss is GIoU (torchvision.ops), scale-free and
  well defined for boxes that do not overlap, times 5 (TTFNet's weight).
- ltrb distances as s·exp(·): positive by construction (GIoU needs x2 > x1), and a step in the
  channel moves a box side by a fraction of its own length whatever the box's size. A box narrower
  than the stride may not contain its centre cell's centre; such a box is learnt as closely as
  positive distances allow.
- Crowd (COCO iscrowd) and difficult (VOC) boxes are ignored regions: no positive, and the negative
  loss of their class is switched off for cells whose centre lies inside them, so the model is
  neither taught to find them nor punished for finding them.
- Decoding: a cell is a detection when its score is the highest of its 3×3 neighbourhood (a
  max-pool replaces NMS for one object's cells), then top-k, a score threshold, and class-wise NMS
  (torchvision's batched_nms) for overlapping peaks of one object.

Everything runs on whole batches on the model's device; `encode` holds (N, M, h, w) values for a
batch of N images with up to M boxes, e.g. 64 × 20 × 24 × 24 floats = 3 MB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.ops import batched_nms, box_iou, generalized_box_iou_loss

from cnnlab.tasks.detection.boxes import NORMAL

GAUSSIAN_ALPHA = 0.54  # heatmap Gaussian radius as a fraction of the box (TTFNet's α)
BOX_AREA_BETA = 0.54  # the regression area: the box shrunk by this about its centre (TTFNet's β)
BOX_LOSS_WEIGHT = 5.0  # GIoU loss weight (TTFNet)
# CenterNet's focal loss exponents are α = 2 and β = 4 (written out as squares in `_focal_loss`)
MIN_SIGMA = 0.1  # cells: keeps a one-pixel box's Gaussian finite (its centre cell is still 1)
MAX_LOG_DISTANCE = 10.0  # s·e¹⁰ ≈ 22,000 s: far beyond any image, and exp() stays finite


@dataclass
class Encoded:
    """What the head should output for a batch of targets, and how much each part counts."""

    heatmap: Tensor  # (N, C, h, w) Gaussian peaks, exactly 1 at each object's centre cell
    positive: Tensor  # (N, C, h, w) bool: the centre cells
    ignore: Tensor  # (N, C, h, w) bool: inside a crowd/difficult box of that class (no negative loss)
    boxes: Tensor  # (N, 4, h, w) the box (x1, y1, x2, y2) each cell regresses; 0 where none
    box_weights: Tensor  # (N, h, w) the weight of each cell's box loss; 0 where none
    num_objects: Tensor  # () how many positive objects the batch holds


def cell_centres(out_size: tuple[int, int], stride: int, device: torch.device | str = "cpu",
                 ) -> tuple[Tensor, Tensor]:
    """x (w,) and y (h,) of the cells' centres in model-input pixels."""
    height, width = out_size
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    return xs, ys


def boxes_from_channels(box_channels: Tensor, stride: int) -> Tensor:
    """The 4 box channels (N, 4, h, w) -> the box (x1, y1, x2, y2) each cell sees, (N, 4, h, w)."""
    xs, ys = cell_centres(box_channels.shape[-2:], stride, box_channels.device)
    distances = stride * torch.exp(box_channels.float().clamp(-MAX_LOG_DISTANCE, MAX_LOG_DISTANCE))
    left, top, right, bottom = distances.unbind(1)
    return torch.stack([xs - left, ys[:, None] - top, xs + right, ys[:, None] + bottom], 1)


def channels_from_boxes(boxes: Tensor, stride: int) -> Tensor:
    """The inverse: boxes per cell (N, 4, h, w) -> the box channels that decode to them (distances
    below 1e-3 px, from a box that does not contain the cell's centre, are raised to it)."""
    xs, ys = cell_centres(boxes.shape[-2:], stride, boxes.device)
    x1, y1, x2, y2 = boxes.float().unbind(1)
    distances = torch.stack([xs - x1, ys[:, None] - y1, x2 - xs, y2 - ys[:, None]], 1)
    return torch.log(distances.clamp(min=1e-3) / stride)


# --- encoding targets -----------------------------------------------------------------------------


def _centre_cells(xyxy: Tensor, out_size: tuple[int, int], stride: int) -> tuple[Tensor, Tensor]:
    """Column and row (N, M) of the cell holding each box's centre, kept inside the map."""
    height, width = out_size
    column = torch.floor((xyxy[..., 0] + xyxy[..., 2]) * (0.5 / stride)).clamp(0, width - 1)
    row = torch.floor((xyxy[..., 1] + xyxy[..., 3]) * (0.5 / stride)).clamp(0, height - 1)
    return column, row


def _gaussians(xyxy: Tensor, column: Tensor, row: Tensor, out_size: tuple[int, int], stride: int
               ) -> tuple[Tensor, Tensor]:
    """Each box's Gaussian over the cells (N, M, h, w), 1 at its centre cell, and the mask of its
    regression area (N, M, h, w). Separable: a row profile times a column profile."""
    height, width = out_size
    sides = (xyxy[..., 2:] - xyxy[..., :2]).clamp(min=0) / stride  # (N, M, 2) in cells
    sigma = (GAUSSIAN_ALPHA / 6.0 * sides).clamp(min=MIN_SIGMA)
    dx = torch.arange(width, device=xyxy.device, dtype=torch.float32) - column[..., None]  # (N, M, w)
    dy = torch.arange(height, device=xyxy.device, dtype=torch.float32) - row[..., None]  # (N, M, h)
    gauss_x = torch.exp(-dx.square() / (2 * sigma[..., 0:1].square()))
    gauss_y = torch.exp(-dy.square() / (2 * sigma[..., 1:2].square()))
    # The regression area: within β·side/2 of the centre cell (the centre cell always counts).
    inside_x = dx.abs() <= (BOX_AREA_BETA * sides[..., 0:1] / 2).clamp(min=0.5)
    inside_y = dy.abs() <= (BOX_AREA_BETA * sides[..., 1:2] / 2).clamp(min=0.5)
    gaussian = gauss_y[..., :, None] * gauss_x[..., None, :]
    area = inside_y[..., :, None] & inside_x[..., None, :]
    return gaussian, area


def _inside_boxes(xyxy: Tensor, out_size: tuple[int, int], stride: int) -> Tensor:
    """(N, M, h, w) bool: the cell's centre lies inside the box."""
    xs, ys = cell_centres(out_size, stride, xyxy.device)
    inside_x = (xs >= xyxy[..., 0:1]) & (xs <= xyxy[..., 2:3])  # (N, M, w)
    inside_y = (ys >= xyxy[..., 1:2]) & (ys <= xyxy[..., 3:4])  # (N, M, h)
    return inside_y[..., :, None] & inside_x[..., None, :]


def _per_class(values: Tensor, classes: Tensor, num_classes: int) -> Tensor:
    """(N, M, h, w) per box -> (N, C, h, w), the maximum over the boxes of each class."""
    count, boxes, height, width = values.shape
    flat = values.reshape(count, boxes, height * width)
    index = classes[..., None].expand(-1, -1, height * width)
    result = torch.zeros(count, num_classes, height * width, device=values.device, dtype=values.dtype)
    return result.scatter_reduce_(1, index, flat, reduce="amax").view(count, num_classes, height, width)


def encode(targets: Tensor, num_classes: int, out_size: tuple[int, int], stride: int) -> Encoded:
    """Targets (N, M, 6) -> what the head should output at `out_size` (h, w) and `stride`.

    >>> targets = torch.tensor([[[1.0, 8, 8, 24, 24, 0], [-1, 0, 0, 0, 0, 0]]])
    >>> encoded = encode(targets, num_classes=2, out_size=(8, 8), stride=4)
    >>> encoded.heatmap[0, 1, 4, 4].item(), encoded.positive.sum().item(), encoded.num_objects.item()
    (1.0, 1, 1)
    >>> encoded.boxes[0, :, 4, 4].tolist()
    [8.0, 8.0, 24.0, 24.0]
    """
    targets = targets.float()
    count, rows, _ = targets.shape
    if rows == 0:  # (N, 0, 6): no objects anywhere; one padding row keeps the shapes below simple
        targets = torch.cat([torch.full((count, 1, 1), -1.0, device=targets.device),
                             targets.new_zeros(count, 1, 5)], -1)
    height, width = out_size
    classes, xyxy, flags = targets[..., 0], targets[..., 1:5], targets[..., 5]
    valid = classes >= 0
    positive = valid & (flags == NORMAL)
    safe_classes = classes.clamp(min=0).long()  # padding rows scatter zeros into class 0: no effect

    column, row = _centre_cells(xyxy, out_size, stride)
    gaussian, area = _gaussians(xyxy, column, row, out_size, stride)
    gaussian = gaussian * positive[..., None, None]
    heatmap = _per_class(gaussian, safe_classes, num_classes)
    centre = torch.zeros_like(gaussian)
    centre.view(count, -1, height * width).scatter_(2, (row * width + column).long()[..., None], 1.0)
    positive_cells = _per_class(centre * positive[..., None, None], safe_classes, num_classes) > 0
    ignored = valid & (flags != NORMAL)
    ignore = _per_class(_inside_boxes(xyxy, out_size, stride).float() * ignored[..., None, None],
                        safe_classes, num_classes) > 0

    boxes, box_weights = _regression_targets(xyxy, gaussian * area)
    return Encoded(heatmap, positive_cells, ignore, boxes, box_weights, positive.sum())


def _regression_targets(xyxy: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """Per cell, the box of the object whose (area-masked) Gaussian is highest there, and its
    weight: the Gaussian over the object's total, times log(1 + the object's area in pixels)."""
    count, _, height, width = weights.shape
    best_weight, best = weights.max(dim=1)  # (N, h, w): an object's centre cell is its own (1.0)
    boxes = torch.gather(xyxy, 1, best.view(count, -1, 1).expand(-1, -1, 4))  # (N, h·w, 4)
    boxes = boxes.view(count, height, width, 4).permute(0, 3, 1, 2)
    totals = weights.sum(dim=(2, 3)).clamp(min=1e-12)  # (N, M)
    pixel_area = (xyxy[..., 2:] - xyxy[..., :2]).clamp(min=0).prod(-1)
    scale = torch.log1p(pixel_area) / totals  # (N, M)
    cell_weights = best_weight * torch.gather(scale, 1, best.view(count, -1)).view(count, height, width)
    has_box = best_weight > 0
    return boxes * has_box[:, None], torch.where(has_box, cell_weights, torch.zeros_like(cell_weights))


# --- the loss --------------------------------------------------------------------------------------


def _focal_loss(logits: Tensor, encoded: Encoded) -> Tensor:
    """CenterNet's penalty-reduced focal loss, summed. In log-sigmoids (no log(0) however sure the
    model is), with the few positive cells gathered rather than masked: this runs over every cell
    of every class each step, so it is kept to a handful of passes over the logits."""
    log_p = F.logsigmoid(logits)
    log_not_p = log_p - logits  # log(1 − σ(x)) = log σ(x) − x
    with torch.no_grad():
        # (1 − heat)⁴ as two squares: Tensor.pow with a float exponent calls pow() per value, 5× slower
        negative_weight = (1 - encoded.heatmap).square_().square_()
        negative_weight.masked_fill_(encoded.positive | encoded.ignore, 0)
    negative_loss = (negative_weight * log_p.exp().square() * log_not_p).sum()  # p^α, α = 2
    positive_logits = logits[encoded.positive]
    positive_loss = ((1 - torch.sigmoid(positive_logits)).square() * F.logsigmoid(positive_logits)).sum()
    return -(positive_loss + negative_loss)


def _box_loss(box_channels: Tensor, encoded: Encoded, stride: int) -> Tensor:
    """GIoU loss of the cells that regress a box, weighted; 0 (still part of the graph) without any."""
    count, _, height, width = box_channels.shape
    weights = encoded.box_weights.reshape(-1)
    cells = weights.nonzero().squeeze(1)  # one nonzero(), then index_select: the cheap way to gather
    predicted = boxes_from_channels(box_channels, stride).permute(0, 2, 3, 1).reshape(-1, 4).index_select(0, cells)
    wanted = encoded.boxes.permute(0, 2, 3, 1).reshape(-1, 4).index_select(0, cells)
    losses = generalized_box_iou_loss(predicted, wanted, reduction="none")
    return (losses * weights.index_select(0, cells)).sum() / (weights.sum() + 1e-4) + 0.0 * box_channels.sum()


def detection_loss(outputs: Tensor, targets: Tensor, num_classes: int, stride: int
                   ) -> tuple[Tensor, dict[str, Tensor]]:
    """(total, {"class": ..., "box": ...}) for the head's outputs (N, C + 4, h, w) and the targets
    (N, M, 6); "box" is already weighted, so the parts add up to the total. Computed in float32
    even under autocast, and finite for empty images, padding-only batches and tiny boxes.

    >>> outputs = torch.zeros(2, 3 + 4, 8, 8, requires_grad=True)
    >>> total, parts = detection_loss(outputs, torch.full((2, 1, 6), -1.0), num_classes=3, stride=4)
    >>> round(total.item(), 3), round(parts["box"].item(), 3)
    (66.542, 0.0)
    """
    with torch.autocast(outputs.device.type, enabled=False):
        outputs = outputs.float()
        encoded = encode(targets.to(outputs.device), num_classes, tuple(outputs.shape[-2:]), stride)
        class_loss = _focal_loss(outputs[:, :num_classes], encoded) / encoded.num_objects.clamp(min=1)
        box_loss = BOX_LOSS_WEIGHT * _box_loss(outputs[:, num_classes:num_classes + 4], encoded, stride)
    return class_loss + box_loss, {"class": class_loss.detach(), "box": box_loss.detach()}


# --- decoding --------------------------------------------------------------------------------------


def _peaks(logits: Tensor) -> Tensor:
    """Sigmoid scores (N, C, h, w), zero except where a cell beats or ties its 3×3 neighbourhood."""
    scores = torch.sigmoid(logits)
    return scores * (scores == F.max_pool2d(scores, 3, stride=1, padding=1))


CANDIDATES_PER_DETECTION = 4  # peaks considered before NMS, per detection kept


@torch.no_grad()
def decode(outputs: Tensor, num_classes: int, stride: int, *, conf: float = 0.25, iou: float = 0.6,
           max_detections: int = 100) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Outputs (N, C + 4, h, w) -> per image (boxes (k, 4), scores (k,), labels (k,) int64), best
    first, boxes in model-input pixels clipped to the image: heatmap peaks scoring at least `conf`,
    class-wise NMS at IoU `iou`, at most `max_detections` per image.

    >>> outputs = torch.full((1, 2 + 4, 8, 8), -9.0)
    >>> outputs[0, 1, 4, 4], outputs[0, 2:, 4, 4] = 3.0, 0.0  # class 1 at cell (4, 4), sides 4 px away
    >>> [value.tolist() for value in decode(outputs, num_classes=2, stride=4)[0]]
    [[[14.0, 14.0, 22.0, 22.0]], [0.9525741338729858], [1]]
    """
    outputs = outputs.detach().float()
    count, _, height, width = outputs.shape
    scores = _peaks(outputs[:, :num_classes]).reshape(count, -1)
    candidates = min(scores.shape[1], CANDIDATES_PER_DETECTION * max_detections)
    top_scores, top_index = scores.topk(candidates, dim=1)  # (N, K)
    labels, cells = top_index // (height * width), top_index % (height * width)
    boxes = boxes_from_channels(outputs[:, num_classes:num_classes + 4], stride).reshape(count, 4, -1)
    top_boxes = torch.gather(boxes, 2, cells[:, None].expand(-1, 4, -1)).transpose(1, 2)  # (N, K, 4)
    top_boxes[..., 0::2] = top_boxes[..., 0::2].clamp(0, width * stride)
    top_boxes[..., 1::2] = top_boxes[..., 1::2].clamp(0, height * stride)

    confident = top_scores >= conf
    results = []
    for image in range(count):
        # NMS image by image: over a whole batch torchvision's CPU kernel would compare every pair of
        # the batch's boxes (256 images × 400 candidates: 5·10⁹ pairs; minutes at conf 0.001).
        mine = confident[image]
        boxes_kept, scores_kept, labels_kept = top_boxes[image][mine], top_scores[image][mine], labels[image][mine]
        kept = batched_nms(boxes_kept, scores_kept, labels_kept, iou)[:max_detections]  # sorted by score
        results.append((boxes_kept[kept], scores_kept[kept], labels_kept[kept]))
    return results


# --- test-time flips and explanations ---------------------------------------------------------------


def unflip(outputs: Tensor) -> Tensor:
    """The outputs for a left-right mirrored image, in the original image's frame: the maps
    mirrored back, and the left and right distances swapped. (Needs W a multiple of the stride,
    which the detectors require.) Average with the plain outputs for test-time flip augmentation.

    >>> outputs = torch.arange(2 * 5 * 1 * 2.0).view(2, 5, 1, 2)  # 1 class + l, t, r, b
    >>> unflip(outputs)[0, :, 0, 0].tolist()  # cell 0 comes from the mirror's cell 1, l ↔ r
    [1.0, 7.0, 5.0, 3.0, 9.0]
    """
    channels = outputs.shape[1]
    left, right = channels - 4, channels - 2
    order = list(range(channels))
    order[left], order[right] = right, left
    return outputs.flip(-1)[:, order]


def box_score(outputs: Tensor, box: Tensor, label: int, stride: int) -> Tensor:
    """The score Grad-CAM explains for one detected box: the class logit at the cell that
    predicted it (of all cells, the one whose decoded box overlaps `box` most; ties go to the higher
    logit). `outputs` is (1, C + 4, h, w) with its graph; the result is a differentiable scalar.

    >>> outputs = torch.full((1, 1 + 4, 4, 4), -5.0, requires_grad=True)
    >>> box_score(outputs, torch.tensor([0.0, 0.0, 8.0, 8.0]), 0, stride=4)  # doctest: +ELLIPSIS
    tensor(-5., grad_fn=<SelectBackward0>)
    """
    channels, height, width = outputs.shape[1:]
    logits = outputs[0, label].reshape(-1)
    with torch.no_grad():
        boxes = boxes_from_channels(outputs[:, channels - 4:].detach(), stride)[0].reshape(4, -1).T
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width * stride)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height * stride)
        overlap = box_iou(box.detach().float().view(1, 4).to(boxes.device), boxes)[0]
        close = overlap >= overlap.max() - 1e-4
        cell = logits.detach().float().masked_fill(~close, -math.inf).argmax()
    return logits[cell]
