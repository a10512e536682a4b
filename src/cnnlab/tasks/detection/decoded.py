"""Detection outputs that are already boxes: models that decode themselves (torchvision's detectors).

Such a model (`cnnlab.models.torchvision_detectors.TorchvisionDetector`) outputs, in eval mode, one
dense tensor (N, D, 6) of rows [x1, y1, x2, y2, score, class] in model-input pixels, padded with
class −1, and computes its own loss from the targets. What the detection task does with them:

    forward_loss   the model's loss parts for the batch (`model(inputs, targets)`); in validation
                   also the detections the meter scores
    decode         the rows above --conf, class-wise NMS at --iou (the model's own NMS is looser), at
                   most `max_detections`, as `centernet.decode` gives them for heatmaps
    unflip         the rows for a mirrored image, mirrored back (test-time flip)
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn


def forward_loss(model: nn.Module, inputs: Tensor, targets: Tensor, autocast: Callable[[], Any]
                 ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """(outputs, loss, parts). In training the outputs are an empty (N, 0) tensor (the loop only needs
    them for a per-image headline, which mAP is not); in validation they are the detections."""
    with autocast():
        if model.training:
            outputs = inputs.new_zeros(len(inputs), 0)
        else:
            outputs = model(inputs)
        losses = model(inputs, targets)
    parts = {name: value.float() for name, value in losses.items()}
    loss = torch.stack(list(parts.values())).sum()
    return outputs, loss, {name: value.detach() for name, value in parts.items()}


@torch.no_grad()
def decode(outputs: Tensor, *, conf: float, iou: float, max_detections: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Rows (N, D, 6) → per image (boxes (k, 4), scores (k,), labels (k,) int64), best first.

    >>> rows = torch.tensor([[[0, 0, 10, 10, 0.9, 1], [1, 1, 10, 10, 0.8, 1], [0, 0, 5, 5, 0.1, 0],
    ...                       [0, 0, 0, 0, 0, -1]]])
    >>> [value.tolist() for value in decode(rows, conf=0.25, iou=0.6, max_detections=100)[0]]
    [[[0.0, 0.0, 10.0, 10.0]], [0.8999999761581299], [1]]
    """
    from torchvision.ops import batched_nms

    results = []
    for rows in outputs.detach().float():
        rows = rows[(rows[:, 5] >= 0) & (rows[:, 4] >= conf)]
        labels = rows[:, 5].long()
        kept = batched_nms(rows[:, :4], rows[:, 4], labels, iou)[:max_detections]  # sorted by score
        results.append((rows[kept, :4], rows[kept, 4], labels[kept]))
    return results


def unflip(outputs: Tensor, width: int) -> Tensor:
    """Rows found in a left-right mirrored image, in the original image's frame.

    >>> unflip(torch.tensor([[[1.0, 2, 4, 5, 0.5, 0]]]), width=10)[0, 0].tolist()
    [6.0, 2.0, 9.0, 5.0, 0.5, 0.0]
    """
    flipped = outputs.clone()
    flipped[..., 0], flipped[..., 2] = width - outputs[..., 2], width - outputs[..., 0]
    return flipped
