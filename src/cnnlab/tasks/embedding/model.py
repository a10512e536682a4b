"""The embedding network: a registry backbone whose classifier becomes the embedding layer, its output
normalised to unit length, plus — while training with ArcFace or CosFace — the margin layer's weights.

The margin layer is a submodule (`margin`), so the optimiser trains it, checkpoints save it, `--resume`
restores it and DistributedDataParallel synchronises its gradients. It is a training-only branch: in
training mode the network returns [embedding | cosines to each training identity] (N, D + identities),
in evaluation mode the embedding alone (N, D), which is what `embed`, `verify` and an export use.

Two choices that decide how well the embedding serves identities never seen in training
(docs/embeddings.md §5 has the measurements):

* `head="features"` (the default): the embedding layer reads the network's convolution features
  directly; the hidden dense layers a classifier keeps between them and its output (guide-cnn's
  64-unit layer, VGG's 4096s) are dropped. Trained on a handful of identities, such a narrow layer
  keeps little but what tells those identities apart. `head="penultimate"`: the classifier's last
  dense layer resized to D, the others kept (runs saved before the choice existed).
* `views=True` (`--contrastive` above 0): in training mode the network also embeds a second, shifted
  and possibly mirrored copy of every image, and returns [embedding | cosines | second embedding],
  for the loss's instance term (`losses.instance_contrastive_loss`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from cnnlab.models.build import Architecture

EMBEDDING_HEADS = ("features", "penultimate")
# How far (a fraction of each side) the views move: 3 pixels at 28. Measured on the open-set test's
# protocol, TAR at FAR 1e-2 over 8 seeds × 2 precisions: 2 px 17.4% mean, 3 px 20.5%, 4 px 19.4%,
# 6 px 15.7% (raw pixels 15.0%); without mirroring, 11% (docs/embeddings.md §5).
VIEW_SHIFT = 3 / 28


class MarginWeights(nn.Module):
    """One weight vector per training identity; outputs the cosine of each embedding to each of them."""

    def __init__(self, identities: int, dimensions: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(identities, dimensions))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embeddings: Tensor) -> Tensor:
        return F.linear(embeddings, F.normalize(self.weight.float(), dim=1))


class EmbeddingNet(nn.Module):
    """backbone (ending in a dense layer of D outputs) → L2 normalisation; `margin` and, with `views`,
    a second view of each image while training."""

    def __init__(self, backbone: nn.Module, margin: MarginWeights | None, *, first_conv_path: str,
                 classifier_path: str, views: bool = False):
        super().__init__()
        self.backbone = backbone
        self.margin = margin
        self.views = views
        # `cnnlab.models.parts` reads these where no registry entry says where the parts are
        self.first_conv_path = first_conv_path
        self.classifier_path = classifier_path

    def forward(self, images: Tensor) -> Tensor:
        if not self.training:
            return self._embed(images)  # (N, D), unit length
        if not self.views:
            embeddings = self._embed(images)
            return self._with_cosines(embeddings)
        # Both views are shifted copies (as the contrastive loss was measured), embedded in one pass.
        both = self._embed(torch.cat([shifted_view(images), shifted_view(images)]))
        first, second = both.chunk(2)
        return torch.cat([self._with_cosines(first), second], dim=1)

    def _embed(self, images: Tensor) -> Tensor:
        return F.normalize(self.backbone(images).float(), dim=1)

    def _with_cosines(self, embeddings: Tensor) -> Tensor:
        if self.margin is None:
            return embeddings
        return torch.cat([embeddings, self.margin(embeddings)], dim=1)


def shifted_view(images: Tensor) -> Tensor:
    """Each image moved by its own random offset (up to VIEW_SHIFT of each side, the uncovered border
    repeating the image's edge) and mirrored left-right with probability 1/2."""
    count, _, height, width = images.shape
    pad_y, pad_x = (max(1, round(side * VIEW_SHIFT)) for side in (height, width))
    padded = F.pad(images, (pad_x, pad_x, pad_y, pad_y), mode="replicate")
    device = images.device
    top = torch.randint(0, 2 * pad_y + 1, (count, 1, 1), device=device)
    left = torch.randint(0, 2 * pad_x + 1, (count, 1, 1), device=device)
    rows = (top + torch.arange(height, device=device)[None, :, None]).expand(count, height, width)
    columns = (left + torch.arange(width, device=device)[None, None, :]).expand(count, height, width)
    mirrored = torch.rand(count, 1, 1, device=device) < 0.5
    columns = torch.where(mirrored, left + (width - 1 - torch.arange(width, device=device))[None, None, :],
                          columns)
    batch = torch.arange(count, device=device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, columns].permute(0, 3, 1, 2)


def embedding_net(architecture: "Architecture", *, in_channels: int, image_size: tuple[int, int],
                  dimensions: int, identities: int | None, head: str = "features",
                  views: bool = False) -> EmbeddingNet:
    """Any registry network or YAML net made to output `dimensions` values (by `head`, see the module's
    docstring); `identities`: how many margin weights to keep (None: no margin layer, as for the triplet
    loss); `views`: a second view of each image while training."""
    from cnnlab.models.build import YAML_ARCHITECTURE, build_model
    from cnnlab.models.parts import classifier_path, first_conv_path

    if head not in EMBEDDING_HEADS:
        raise ValueError(f"no embedding head called {head!r}")
    backbone = build_model(architecture, in_channels=in_channels, num_outputs=dimensions, image_size=image_size)
    entry = None if architecture.name == YAML_ARCHITECTURE else architecture.name
    embedding_layer = classifier_path(backbone, entry)
    if head == "features":
        embedding_layer = read_features_directly(backbone, embedding_layer, dimensions)
    margin = MarginWeights(identities, dimensions) if identities else None
    return EmbeddingNet(backbone, margin, first_conv_path=f"backbone.{first_conv_path(backbone, entry)}",
                        classifier_path=f"backbone.{embedding_layer}", views=views)


def read_features_directly(backbone: nn.Module, classifier: str, dimensions: int) -> str:
    """Make the first dense layer of the classifier's block the embedding layer (its inputs → `dimensions`)
    and drop what follows it in that block (hidden activations, dropout, the classifier); returns that
    layer's path. A block whose only dense layer is the classifier (ResNet, EfficientNet) is unchanged."""
    parent_path, _, _ = classifier.rpartition(".")
    parent = backbone.get_submodule(parent_path) if parent_path else backbone
    if not isinstance(parent, nn.Sequential):
        return classifier
    names = [name for name, _ in parent.named_children()]
    first = next(name for name in names if isinstance(getattr(parent, name), nn.Linear))
    prefix = f"{parent_path}." if parent_path else ""
    if f"{prefix}{first}" == classifier:
        return classifier
    old = getattr(parent, first)
    setattr(parent, first, nn.Linear(old.in_features, dimensions, bias=old.bias is not None))
    for name in names[names.index(first) + 1:]:
        setattr(parent, name, nn.Identity())
    return f"{prefix}{first}"
