"""Metric-learning losses in plain torch: ArcFace, CosFace and the batch-hard triplet loss.

ArcFace (Deng et al., 2019) and CosFace (Wang et al., 2018) keep one weight vector per training
identity; the cosine between an image's embedding and its identity's weight is pushed up by a margin
before a softmax over the identities: cos(θ + m) for ArcFace (an angle added), cos θ − m for CosFace,
both times a scale s (the logits of unit vectors are too small for a softmax to be sure of anything).
The triplet loss (Schroff et al., 2015, FaceNet; batch-hard mining from Hermans et al., 2017) needs no
weights: for every image in the batch, its farthest same-identity image should be nearer than its
nearest other-identity image by at least the margin.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

DEFAULT_MARGINS = {"arcface": 0.5, "cosface": 0.35, "triplet": 0.2}


def margin_logits(cosines: Tensor, targets: Tensor, *, kind: str, margin: float, scale: float) -> Tensor:
    """The scaled logits (N, identities) with the margin applied to each image's own identity."""
    cosines = cosines.float().clamp(-1.0, 1.0)
    own = cosines.gather(1, targets[:, None])
    if kind == "arcface":
        sine = (1.0 - own * own).clamp_min(1e-7).sqrt()
        shifted = own * math.cos(margin) - sine * math.sin(margin)  # cos(θ + m)
        # Beyond θ = π − m, cos(θ + m) would rise again: there the margin becomes a plain CosFace-like
        # penalty instead (insightface's `th`/`mm`), so the loss keeps falling as θ shrinks.
        shifted = torch.where(own > math.cos(math.pi - margin), shifted,
                              own - math.sin(math.pi - margin) * margin)
    elif kind == "cosface":
        shifted = own - margin
    else:
        raise ValueError(f"no margin softmax called {kind!r}")
    return scale * cosines.scatter(1, targets[:, None], shifted)


def margin_softmax_loss(cosines: Tensor, targets: Tensor, *, kind: str, margin: float, scale: float) -> Tensor:
    return F.cross_entropy(margin_logits(cosines, targets, kind=kind, margin=margin, scale=scale), targets)


def batch_hard_triplet_loss(embeddings: Tensor, targets: Tensor, *, margin: float) -> Tensor:
    """Mean over the anchors that have a positive and a negative in the batch of
    relu(d(anchor, hardest positive) − d(anchor, hardest negative) + margin), d Euclidean."""
    embeddings = embeddings.float()
    squared = (embeddings[:, None, :] - embeddings[None, :, :]).pow(2).sum(-1)
    distances = squared.clamp_min(1e-12).sqrt()  # the clamp keeps the gradient at d = 0 finite
    same = targets[:, None] == targets[None, :]
    itself = torch.eye(len(targets), dtype=torch.bool, device=targets.device)
    positives = same & ~itself
    hardest_positive = torch.where(positives, distances, torch.zeros_like(distances)).amax(dim=1)
    hardest_negative = torch.where(~same, distances, torch.full_like(distances, math.inf)).amin(dim=1)
    usable = positives.any(dim=1) & (~same).any(dim=1)
    if not usable.any():  # a batch of one identity (or singletons) teaches nothing, and must not be nan
        return embeddings.sum() * 0.0
    return F.relu(hardest_positive - hardest_negative + margin)[usable].mean()


def instance_contrastive_loss(first: Tensor, second: Tensor, *, temperature: float) -> Tensor:
    """NT-Xent (Chen et al., 2020, SimCLR) over two views of each image: each embedding should find its
    own image's other view among the 2N − 1 others in the batch. It keeps apart images of one identity,
    which the margin losses gather, so the embedding keeps what tells images apart beyond the training
    identities. A high temperature (2, against SimCLR's 0.1–0.5) makes it a gentle spreading term
    next to the margin loss rather than a rival to it (docs/embeddings.md §5)."""
    embeddings = torch.cat([first.float(), second.float()])
    count = len(first)
    similarities = embeddings @ embeddings.T / temperature
    itself = torch.eye(2 * count, dtype=torch.bool, device=embeddings.device)
    similarities = similarities.masked_fill(itself, -math.inf)
    other_view = torch.cat([torch.arange(count, 2 * count), torch.arange(count)]).to(embeddings.device)
    return F.cross_entropy(similarities, other_view)
