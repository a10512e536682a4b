"""The embedding network: a registry backbone whose classifier becomes the embedding layer, its output
normalised to unit length, plus — while training with ArcFace or CosFace — the margin layer's weights.

The margin layer is a submodule (`margin`), so the optimiser trains it, checkpoints save it, `--resume`
restores it and DistributedDataParallel synchronises its gradients. It is a training-only branch: in
training mode the network returns [embedding | cosines to each training identity] (N, D + identities),
in evaluation mode the embedding alone (N, D), which is what `embed`, `verify` and an export use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from cnnlab.models.build import Architecture


class MarginWeights(nn.Module):
    """One weight vector per training identity; outputs the cosine of each embedding to each of them."""

    def __init__(self, identities: int, dimensions: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(identities, dimensions))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings: Tensor) -> Tensor:
        return F.linear(embeddings, F.normalize(self.weight.float(), dim=1))


class EmbeddingNet(nn.Module):
    """backbone (ending in a dense layer of D outputs) → L2 normalisation; `margin` while training."""

    def __init__(self, backbone: nn.Module, margin: MarginWeights | None, *, first_conv_path: str,
                 classifier_path: str):
        super().__init__()
        self.backbone = backbone
        self.margin = margin
        # `cnnlab.models.parts` reads these where no registry entry says where the parts are
        self.first_conv_path = first_conv_path
        self.classifier_path = classifier_path

    def forward(self, images: Tensor) -> Tensor:
        embeddings = F.normalize(self.backbone(images).float(), dim=1)  # (N, D), unit length
        if self.training and self.margin is not None:
            return torch.cat([embeddings, self.margin(embeddings)], dim=1)
        return embeddings


def embedding_net(architecture: "Architecture", *, in_channels: int, image_size: tuple[int, int],
                  dimensions: int, identities: int | None) -> EmbeddingNet:
    """Any registry network or YAML net with its last dense layer sized to `dimensions`; `identities`:
    how many margin weights to keep (None: no margin layer, as for the triplet loss)."""
    from cnnlab.models.build import YAML_ARCHITECTURE, build_model
    from cnnlab.models.parts import classifier_path, first_conv_path

    backbone = build_model(architecture, in_channels=in_channels, num_outputs=dimensions, image_size=image_size)
    entry = None if architecture.name == YAML_ARCHITECTURE else architecture.name
    margin = MarginWeights(identities, dimensions) if identities else None
    return EmbeddingNet(backbone, margin, first_conv_path=f"backbone.{first_conv_path(backbone, entry)}",
                        classifier_path=f"backbone.{classifier_path(backbone, entry)}")
