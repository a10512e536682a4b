"""Detectors: a backbone's feature maps → a small top-down neck → one dense head at a fixed stride.

    Detector(images (N, C_in, H, W)) -> (N, classes + 4, H/stride, W/stride)

The output is the one tensor `cnnlab.tasks.detection.centernet` reads (class heatmap logits, then
4 box channels) in train and eval mode alike, so the training loop, DDP, batch threads, Grad-CAM
and feature maps treat a detector like any other CNN.

- `cnnlab-det`: a from-scratch detector for small images (CPU minutes): a fast-cnn style backbone
  (conv → max-pool → batch norm → ReLU, widths 16-32-64-128-128, strides 2-4-8-16) and a U-shaped
  neck back to stride 4.
- `detector_on_backbone(name, ...)`: the same neck and head over ANY registry model or YAML
  network. The classification model is built, its layers after the last stage the neck needs are
  removed, and the rest is kept as `backbone` with its own module names (`backbone.layer1.0.conv1`,
  `backbone.features.conv2`), so classification weights (ImageNet, a cnnlab run) load by name.

How a backbone is read: like `cnnlab.explain.feature_maps.find_stages`, step down from the model
while a module has exactly one child that holds convolutions (guide-cnn → `features`; ResNet and
YAML networks stay at the top). That module's children run in order (they do in every cnnlab and
torchvision CNN up to its global pool); each child's output is a feature map at some stride, found
by running one blank image through it. The neck taps, per stride from the head's up to
`max_stride`, the last child at that stride: the most processed map there (ResNet's layer1..4;
in fast-cnn, where a pool follows each convolution, the convolution that runs at that stride).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cnnlab.errors import ConfigError
from cnnlab.models.build import Architecture
from cnnlab.models.registry import check_input_size, register_model

PRIOR_PROBABILITY = 0.01  # the head's initial heatmap: 1% everywhere (RetinaNet's π)


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        bn=nn.BatchNorm2d(out_channels),
        relu=nn.ReLU(inplace=True),
    ))


class Neck(nn.Module):
    """Top-down merge of feature maps (finest first) into one map at the finest one's size.

    Each map is projected by a 1×1 conv to its level's width (`channels`, finest first). From the
    deepest map down: a 3×3 conv mixes the merged map and narrows it to the next finer level's
    width, it is upsampled to that level's size, and that level's projection is added (FPN's
    top-down path; U-Net concatenates instead). Deep maps know what an object is, fine maps where
    its edges are. The 3×3 conv runs before the upsampling, at a quarter of the positions; the
    head's own 3×3 conv mixes the last sum.
    """

    def __init__(self, in_channels: Sequence[int], channels: Sequence[int]):
        super().__init__()
        if len(channels) != len(in_channels):
            raise ValueError(f"one width per level: {len(in_channels)} inputs, {len(channels)} widths")
        self.lateral = nn.ModuleList(conv_bn_relu(width, out, 1) for width, out in zip(in_channels, channels))
        self.reduce = nn.ModuleList(conv_bn_relu(channels[level + 1], channels[level], 3)
                                    for level in range(len(channels) - 1))
        self.out_channels = channels[0]

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        merged = self.lateral[-1](features[-1])
        for level in range(len(features) - 2, -1, -1):
            finer = features[level]
            merged = F.interpolate(self.reduce[level](merged), size=finer.shape[-2:], mode="nearest")
            merged = merged + self.lateral[level](finer)
        return merged


def _branch(in_channels: int, channels: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(in_channels, channels, 3, padding=1),
        relu=nn.ReLU(inplace=True),
        out=nn.Conv2d(channels, outputs, 1),
    ))


class DetectionHead(nn.Module):
    """Two branches of 3×3 conv, ReLU, 1×1 conv: `heatmap` to one logit map per class, `box` to the
    4 box channels; their outputs concatenated, classes first.

    Two branches rather than one shared 3×3 conv: each learns its own features, which found and
    named more objects for little more time per step (docs/speed.md, "Detection"). The box branch
    does not depend on the classes, so a detector fine-tuned to new classes replaces only
    `heatmap.out`.
    """

    def __init__(self, in_channels: int, num_classes: int, channels: int | None = None):
        super().__init__()
        channels = channels or in_channels
        self.heatmap = _branch(in_channels, channels, num_classes)
        self.box = _branch(in_channels, channels, 4)
        # Start every cell at π = 1%: a start at 50% would make the first steps' loss all false
        # alarms, as many as there are cells (RetinaNet, CenterNet). Box channels start at 0: each
        # side one stride from the cell's centre.
        for out in (self.heatmap.out, self.box.out):
            nn.init.normal_(out.weight, std=0.01)
            nn.init.zeros_(out.bias)
        nn.init.constant_(self.heatmap.out.bias, -math.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))

    def forward(self, features: Tensor) -> Tensor:
        return torch.cat([self.heatmap(features), self.box(features)], 1)


class Detector(nn.Module):
    """backbone → neck → head; outputs (N, num_classes + 4, H/stride, W/stride).

    `backbone` is a module whose sub-module at `trunk` (a dotted path, "" for itself) has children
    that run in order; the outputs of the children named in `taps` (finest first) feed the neck.
    """

    def __init__(self, backbone: nn.Module, *, trunk: str, taps: Sequence[str], neck: Neck,
                 head: DetectionHead, stride: int, num_classes: int, first_conv_path: str):
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.trunk, self.taps = trunk, tuple(taps)
        self.stride, self.num_classes = stride, num_classes
        # `cnnlab.models.parts` reads these where no registry entry says where the parts are
        self.first_conv_path = first_conv_path
        self.classifier_path = "head.heatmap.out"

    def forward_features(self, images: Tensor) -> Tensor:
        """The neck's map (N, channels, H/stride, W/stride): what the head sees."""
        height, width = images.shape[-2:]
        taps, features, hidden = set(self.taps), [], images
        for name, layer in self.backbone.get_submodule(self.trunk).named_children():
            hidden = layer(hidden)
            if name in taps:
                features.append(hidden)
                if len(features) == len(self.taps):
                    break
        merged = self.neck(features)
        size = (height // self.stride, width // self.stride)
        if tuple(merged.shape[-2:]) != size:  # 'valid' convolutions, or a backbone coarser than the head
            merged = F.interpolate(merged, size=size, mode="bilinear", align_corners=False)
        return merged

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))


# --- cnnlab-det ---------------------------------------------------------------------------------------

# (output channels, followed by a 2×2 max-pool?) per convolution: strides 2, 4, 8, 16, 16
CNNLAB_DET_LAYOUT = ((16, True), (32, True), (64, True), (128, True), (128, False))
CNNLAB_DET_TAPS = ("relu2", "relu3", "relu5")  # strides 4, 8, 16
CNNLAB_DET_NECK = (48, 64, 96)  # the neck's widths at strides 4, 8, 16
CNNLAB_DET_MULTIPLE = 16


def _fast_backbone(in_channels: int, layout: Sequence[tuple[int, bool]]) -> nn.Sequential:
    layers: list[tuple[str, nn.Module]] = []
    channels = in_channels
    for index, (width, pool) in enumerate(layout, start=1):
        layers.append((f"conv{index}", nn.Conv2d(channels, width, 3, padding=1, bias=False)))
        if pool:  # pooling before batch norm and ReLU runs them on a quarter of the values (fast.py)
            layers.append((f"pool{index}", nn.MaxPool2d(2)))
        layers += [(f"bn{index}", nn.BatchNorm2d(width)), (f"relu{index}", nn.ReLU(inplace=True))]
        channels = width
    return nn.Sequential(OrderedDict(layers))


def check_multiple(name: str, image_size: tuple[int, int], multiple: int) -> None:
    height, width = image_size
    if height % multiple or width % multiple:
        def nearest(side: int) -> int:
            return max(multiple, round(side / multiple) * multiple)

        raise ConfigError(
            f"model {name!r} needs an image height and width that are multiples of {multiple}, but the "
            f"images are {height}×{width}: pass --image-size {nearest(height)} "
            f"(or {nearest(height)},{nearest(width)})")


@register_model(
    "cnnlab-det",
    description="from-scratch detector for small images: 5 conv (16-32-64-128-128) + U-neck to stride 4 + "
                "CenterNet/TTFNet heatmap and box heads (0.39M params, 70.6M mult-adds at 96×96, 10 classes)",
    family="detection",
    first_conv="backbone.conv1",
    classifier="head.heatmap.out",
    min_size=32,
    task="detection",
    stride=4,
)
def cnnlab_det(*, in_channels: int, num_outputs: int, image_size: tuple[int, int]) -> Detector:
    """`num_outputs` is the number of classes; the output has num_outputs + 4 channels.
    Height and width must be multiples of 16 (four 2×2 poolings, undone by the neck)."""
    check_input_size("cnnlab-det", image_size, 32)
    check_multiple("cnnlab-det", image_size, CNNLAB_DET_MULTIPLE)
    backbone = _fast_backbone(in_channels, CNNLAB_DET_LAYOUT)
    widths = {f"relu{index}": width for index, (width, _) in enumerate(CNNLAB_DET_LAYOUT, start=1)}
    neck = Neck([widths[tap] for tap in CNNLAB_DET_TAPS], CNNLAB_DET_NECK)
    head = DetectionHead(neck.out_channels, num_outputs)
    return Detector(backbone, trunk="", taps=CNNLAB_DET_TAPS, neck=neck, head=head, stride=4,
                    num_classes=num_outputs, first_conv_path="backbone.conv1")


# --- any registry model as the backbone ----------------------------------------------------------------

_HEAD_LAYERS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten, nn.Linear)


def _holds_conv(module: nn.Module) -> bool:
    return any(isinstance(child, nn.Conv2d) for child in module.modules())


def _trunk_path(model: nn.Module) -> str:
    """Step down while exactly one child holds convolutions (find_stages' rule 1)."""
    container, path = model, ""
    while True:
        holders = [(name, child) for name, child in container.named_children() if _holds_conv(child)]
        if len(holders) != 1 or isinstance(holders[0][1], nn.Conv2d):
            return path
        name, container = holders[0]
        path = f"{path}.{name}" if path else name


@torch.no_grad()
def _probe(trunk: nn.Module, in_channels: int, image_size: tuple[int, int]) -> list[tuple[str, int, int]]:
    """(name, channels, height) of each child's output for one blank image, up to the head."""
    shapes, hidden = [], torch.zeros(1, in_channels, *image_size)
    for name, layer in trunk.named_children():
        if isinstance(layer, _HEAD_LAYERS):
            break
        hidden = layer(hidden)
        if hidden.dim() != 4:
            break
        shapes.append((name, hidden.shape[1], hidden.shape[2]))
    return shapes


def _choose_taps(shapes: list[tuple[str, int, int]], image_height: int, stride: int, max_stride: int
                 ) -> list[tuple[str, int]]:
    """(name, channels) of the last child at each power-of-two stride from `stride` to `max_stride`."""
    last_at_level: dict[int, tuple[int, str, int]] = {}
    for index, (name, channels, height) in enumerate(shapes):
        level = round(math.log2(image_height / height))
        last_at_level[level] = (index, name, channels)
    low, high = round(math.log2(stride)), round(math.log2(max_stride))
    chosen = sorted(entry for level, entry in last_at_level.items() if low <= level <= high)
    if not chosen:  # the backbone never gets as coarse as the head: use its coarsest map
        chosen = [last_at_level[max(last_at_level)]]
    return [(name, channels) for _, name, channels in chosen]


def _trim(model: nn.Module, trunk: str, last_tap: str) -> None:
    """Remove what the detector does not run: the trunk's children after `last_tap`, and the
    siblings of the trunk's ancestors (a classifier head beside `features`). Names stay as they were."""
    trunk_module = model.get_submodule(trunk)
    names = [name for name, _ in trunk_module.named_children()]
    for name in names[names.index(last_tap) + 1:]:
        delattr(trunk_module, name)
    parent, parts = model, trunk.split(".") if trunk else []
    for part in parts:
        for name, _ in list(parent.named_children()):
            if name != part:
                delattr(parent, name)
        parent = getattr(parent, part)


def detector_on_backbone(architecture_name: "str | Architecture", *, in_channels: int, num_classes: int,
                         image_size: tuple[int, int], stride: int = 4, channels: int = 64,
                         max_stride: int = 32) -> Detector:
    """A detector over any registry model or YAML network (`guide-cnn`, `resnet18`, `net.yaml`).

    The backbone keeps the classification model's module names (prefixed `backbone.`). Its maps at
    strides `stride`..`max_stride` feed the neck; a backbone with 'valid' convolutions (guide-cnn),
    whose maps are a few pixels short of H/stride, has the neck's map resized to exactly that.
    H and W must be multiples of `stride`.

    >>> net = detector_on_backbone("resnet18", in_channels=3, num_classes=5, image_size=(64, 64))
    >>> net.taps, tuple(net(torch.zeros(1, 3, 64, 64)).shape)
    (('layer1', 'layer2', 'layer3', 'layer4'), (1, 9, 16, 16))
    """
    from cnnlab.models.build import build_model, resolve_architecture
    from cnnlab.models.parts import first_conv_path

    if stride < 1 or stride & (stride - 1):
        raise ConfigError(f"a detector's stride must be a power of two (got {stride})")
    # A name or a YAML file, or the Architecture a checkpoint recorded (its YAML layers kept inside).
    architecture = (architecture_name if isinstance(architecture_name, Architecture)
                    else resolve_architecture(architecture_name))
    architecture_name = architecture.label or architecture.name
    check_multiple(architecture.short_name + " as a detector", image_size, stride)
    model = build_model(architecture, in_channels=in_channels, num_outputs=num_classes, image_size=image_size)
    entry = architecture.name if architecture.name != "yaml" else None
    first_conv = first_conv_path(model, entry)
    trunk = _trunk_path(model)
    training = model.training
    model.eval()  # one blank image: batch norm must use its running statistics
    shapes = _probe(model.get_submodule(trunk), in_channels, image_size)
    model.train(training)
    if not shapes:
        raise ConfigError(f"{architecture_name}: no feature maps to detect from (its first layer is "
                          f"already the classifier)")
    taps = _choose_taps(shapes, image_size[0], stride, max_stride)
    _trim(model, trunk, taps[-1][0])
    return Detector(model, trunk=trunk, taps=[name for name, _ in taps],
                    neck=Neck([width for _, width in taps], [channels] * len(taps)),
                    head=DetectionHead(channels, num_classes),
                    stride=stride, num_classes=num_classes, first_conv_path=f"backbone.{first_conv}")
