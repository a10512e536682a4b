"""Pixel losses: cross-entropy, soft Dice, or both (`--loss ce|dice|ce+dice`); void pixels (255) ignored.

Background usually covers most pixels, so a network can score a low cross-entropy by calling
everything background. Two remedies, which combine:
  * class weights (`--class-weights balanced`: inversely to each class's training pixels) on the
    cross-entropy;
  * the Dice loss, 1 − the soft Dice of each class over the batch, averaged over the classes: a
    small class counts as much as the background whatever its pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from cnnlab.tasks.segmentation.masks import VOID

LOSSES = ("ce", "dice", "ce+dice")
DICE_SMOOTHING = 1.0  # keeps a class absent from the batch (and not predicted) at a Dice of 1, not 0/0


def cross_entropy(logits: Tensor, masks: Tensor, weights: Tensor | None = None) -> Tensor:
    """Mean cross-entropy over the labelled pixels (weighted by their classes' weights, if given)."""
    if not (masks != VOID).any():
        return logits.sum() * 0.0  # a batch of void only: no gradient, and not NaN
    return F.cross_entropy(logits, masks, weight=weights, ignore_index=VOID)


def dice_loss(logits: Tensor, masks: Tensor, weights: Tensor | None = None) -> Tensor:
    """1 − soft Dice per class over the batch's labelled pixels, averaged over the classes (weighted)."""
    classes = logits.shape[1]
    labelled = (masks != VOID).unsqueeze(1).to(logits.dtype)  # (N, 1, H, W)
    probabilities = logits.softmax(dim=1) * labelled
    one_hot = F.one_hot(masks.clamp(max=classes - 1) * (masks != VOID), classes).permute(0, 3, 1, 2)
    one_hot = one_hot.to(logits.dtype) * labelled
    dims = (0, 2, 3)
    overlap = (probabilities * one_hot).sum(dims)
    sizes = probabilities.sum(dims) + one_hot.sum(dims)
    dice = (2 * overlap + DICE_SMOOTHING) / (sizes + DICE_SMOOTHING)
    if weights is None:
        return 1.0 - dice.mean()
    return 1.0 - (dice * weights).sum() / weights.sum()


def segmentation_loss(logits: Tensor, masks: Tensor, kind: str, weights: Tensor | None = None
                      ) -> tuple[Tensor, dict[str, Tensor]]:
    """(the loss `kind` names, its parts detached for metrics.csv)."""
    parts: dict[str, Tensor] = {}
    total = logits.new_zeros(())
    if "ce" in kind.split("+"):
        parts["ce"] = cross_entropy(logits, masks, weights)
        total = total + parts["ce"]
    if "dice" in kind.split("+"):
        parts["dice"] = dice_loss(logits, masks, weights)
        total = total + parts["dice"]
    return total, ({name: value.detach() for name, value in parts.items()} if len(parts) > 1 else {})


def class_weight_tensor(weights: list[float] | None, device: torch.device) -> Tensor | None:
    return None if weights is None else torch.tensor(weights, dtype=torch.float32, device=device)
