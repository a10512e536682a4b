"""Segmenters: images → one logit map per class, at the input's own resolution.

    Segmenter(images (N, C_in, H, W)) -> logits (N, classes, H, W)

- `unet`, `unet-small`, `unet-wide`: the classic U-Net (Ronneberger et al. 2015) with 'same'
  padding, as named variants of one `UNetConfig` (depth, base width, batch norm, bilinear or
  transposed upsampling). `UNet(UNetConfig(...), ...)` builds any other combination in Python;
  YAML layer lists with `from:` skips build one too (examples/unet.yaml).
- `segmenter_on_backbone(name, ...)`: any registry model or YAML network as a U-Net encoder.

Any H and W work: the input is padded on the bottom and right to a multiple of 2**depth (what the
poolings need to come back to the same size) and the logits are cropped back.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from cnnlab.errors import ConfigError
from cnnlab.models.build import Architecture
from cnnlab.models.registry import check_input_size, register_model

UPSAMPLING_MODES = ("bilinear", "transposed")


@dataclass(frozen=True)
class UNetConfig:
    depth: int = 4  # how many times the encoder halves the map (and the decoder doubles it back)
    base_width: int = 16  # channels at full resolution; each level below doubles them
    batch_norm: bool = True
    upsampling: str = "bilinear"  # or "transposed": a learned 2×2 stride-2 transposed conv
    max_width: int = 256  # wider levels stop doubling here (the deepest levels hold most weights)

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ConfigError(f"a U-Net's depth must be at least 1 (got {self.depth})")
        if self.base_width < 1:
            raise ConfigError(f"a U-Net's base width must be at least 1 (got {self.base_width})")
        if self.upsampling not in UPSAMPLING_MODES:
            raise ConfigError(f"a U-Net's upsampling is one of {', '.join(UPSAMPLING_MODES)} "
                              f"(got {self.upsampling!r})")

    def widths(self) -> list[int]:
        """Channels per level, full resolution first: depth + 1 levels."""
        return [min(self.base_width * 2 ** level, self.max_width) for level in range(self.depth + 1)]


def double_conv(in_channels: int, out_channels: int, batch_norm: bool = True) -> nn.Sequential:
    """(3×3 conv → [batch norm] → ReLU) twice: the U-Net's unit at every level."""
    layers: list[tuple[str, nn.Module]] = []
    for index, channels in enumerate((in_channels, out_channels), start=1):
        layers.append((f"conv{index}", nn.Conv2d(channels, out_channels, 3, padding=1, bias=not batch_norm)))
        if batch_norm:
            layers.append((f"bn{index}", nn.BatchNorm2d(out_channels)))
        layers.append((f"relu{index}", nn.ReLU(inplace=True)))
    return nn.Sequential(OrderedDict(layers))


class Down(nn.Sequential):
    """2×2 max-pool, then a double conv: one level deeper."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        super().__init__(OrderedDict(pool=nn.MaxPool2d(2),
                                     block=double_conv(in_channels, out_channels, batch_norm)))


class Up(nn.Module):
    """Bring the deeper map to the skip's size, concatenate the skip, double conv.

    Bilinear mode narrows the deeper map with a 1×1 conv to `out_channels` *before* resizing it,
    so the 1×1 conv runs at a quarter of the positions and the 3×3 convs see skip + deeper at the
    decoder's width, as with a transposed conv. Resizing to the skip's exact size (not ×2) lets the
    skip come from any encoder, including 'valid' convolutions whose maps are a pixel or two short.
    """

    def __init__(self, deeper_channels: int, skip_channels: int, out_channels: int, *,
                 batch_norm: bool = True, upsampling: str = "bilinear"):
        super().__init__()
        self.transposed = upsampling == "transposed"
        if self.transposed:
            self.upconv = nn.ConvTranspose2d(deeper_channels, out_channels, 2, stride=2)
        else:
            self.reduce = nn.Conv2d(deeper_channels, out_channels, 1)
        self.block = double_conv(skip_channels + out_channels, out_channels, batch_norm)

    def forward(self, deeper: Tensor, skip: Tensor) -> Tensor:
        size = skip.shape[-2:]
        if self.transposed:
            deeper = self.upconv(deeper)
            if deeper.shape[-2:] != size:
                deeper = F.interpolate(deeper, size=size, mode="bilinear", align_corners=False)
        else:
            deeper = F.interpolate(self.reduce(deeper), size=size, mode="bilinear", align_corners=False)
        return self.block(torch.cat([skip, deeper], 1))


class UNet(nn.Module):
    """stem → down1..downD → up1..upD (the encoder's maps as skips) → 1×1 conv `head`.

    The parts are direct children named in running order, so `explain`'s feature maps show each
    encoder and decoder level (stem 16×H×W, down1 32×H/2×W/2, ..., up4 16×H×W).
    """

    def __init__(self, config: UNetConfig, *, in_channels: int, num_classes: int):
        super().__init__()
        self.config, self.num_classes = config, num_classes
        widths = config.widths()
        self.stem = double_conv(in_channels, widths[0], config.batch_norm)
        for level in range(1, config.depth + 1):
            self.add_module(f"down{level}", Down(widths[level - 1], widths[level], config.batch_norm))
        for level in range(config.depth - 1, -1, -1):  # up1 is the deepest
            self.add_module(f"up{config.depth - level}",
                            Up(widths[level + 1], widths[level], widths[level], batch_norm=config.batch_norm,
                               upsampling=config.upsampling))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.multiple = 2 ** config.depth
        # `cnnlab.models.parts` reads these where no registry entry says where the parts are
        self.first_conv_path, self.classifier_path = "stem.conv1", "head"

    def _levels(self, prefix: str) -> list[nn.Module]:
        return [getattr(self, f"{prefix}{level}") for level in range(1, self.config.depth + 1)]

    def forward_features(self, images: Tensor) -> Tensor:
        """The last decoder map (N, base_width, H, W): what the head sees."""
        height, width = images.shape[-2:]
        skips = [self.stem(pad_to_multiple(images, self.multiple))]
        for down in self._levels("down"):
            skips.append(down(skips[-1]))
        hidden = skips.pop()
        for up in self._levels("up"):
            hidden = up(hidden, skips.pop())
        return hidden[..., :height, :width]

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))


def pad_to_multiple(images: Tensor, multiple: int) -> Tensor:
    """Zero-pad the bottom and right so that H and W are multiples of `multiple` (a no-op if they are)."""
    height, width = images.shape[-2:]
    pad_height, pad_width = -height % multiple, -width % multiple
    if pad_height or pad_width:
        images = F.pad(images, (0, pad_width, 0, pad_height))
    return images


# --- the registered U-Nets ----------------------------------------------------------------------------

UNET_VARIANTS = {
    "unet": UNetConfig(depth=4, base_width=16),
    "unet-small": UNetConfig(depth=3, base_width=8),
    "unet-classic": UNetConfig(depth=4, base_width=64, upsampling="transposed", max_width=1024),
}
_UNET_DESCRIPTIONS = {
    "unet": "U-Net for small images on CPU: depth 4, widths 16-32-64-128-256, batch norm, bilinear "
            "upsampling",
    "unet-small": "smaller U-Net: depth 3, widths 8-16-32-64, batch norm, bilinear upsampling",
    "unet-classic": "the paper's U-Net widths (64-128-256-512-1024) with 'same' padding, batch norm and "
                    "transposed-conv upsampling (31M params: GPU-sized)",
}


def _register_unet(name: str, config: UNetConfig) -> None:
    def build(*, in_channels: int, num_outputs: int, image_size: tuple[int, int]) -> UNet:
        check_input_size(name, image_size, 2 ** config.depth)
        return UNet(config, in_channels=in_channels, num_classes=num_outputs)

    build.__name__ = build.__qualname__ = name.replace("-", "_")
    build.__doc__ = f"`{name}`: {config}; `num_outputs` is the number of classes."
    register_model(name, description=_UNET_DESCRIPTIONS[name], family="unet", first_conv="stem.conv1",
                   classifier="head", min_size=2 ** config.depth, task="segmentation")(build)


for _name, _config in UNET_VARIANTS.items():
    _register_unet(_name, _config)


# --- any registry model as the encoder -----------------------------------------------------------------

DECODER_WIDTHS = (16, 128)  # a decoder level is as wide as its skip, clamped to this range


class BackboneSegmenter(nn.Module):
    """backbone (encoder) → U-Net decoder over its maps at strides 1..32 → 1×1 conv head → logits
    resized bilinearly to the input's size.

    `backbone` is a module whose sub-module at `trunk` (a dotted path, "" for itself) has children
    that run in order; the outputs of the children named in `taps` (finest first) are the skips.
    """

    def __init__(self, backbone: nn.Module, *, trunk: str, taps: Sequence[tuple[str, int]], num_classes: int,
                 first_conv_path: str):
        super().__init__()
        self.backbone, self.trunk = backbone, trunk
        self.taps = tuple(name for name, _ in taps)
        widths = [min(max(channels, DECODER_WIDTHS[0]), DECODER_WIDTHS[1]) for _, channels in taps]
        in_widths = [channels for _, channels in taps]
        # deepest first: the deepest tap enters as it is, each level after gets the decoder's width
        self.decoder = nn.ModuleList(
            Up(in_widths[-1] if level == len(taps) - 2 else widths[level + 1], in_widths[level],
               widths[level])
            for level in range(len(taps) - 2, -1, -1))
        self.head = nn.Conv2d(widths[0] if len(taps) > 1 else in_widths[0], num_classes, 1)
        self.num_classes = num_classes
        # `cnnlab.models.parts` reads these where no registry entry says where the parts are
        self.first_conv_path, self.classifier_path = first_conv_path, "head"

    def encode(self, images: Tensor) -> list[Tensor]:
        """The backbone's maps at the taps, finest first."""
        taps, features, hidden = set(self.taps), [], images
        for name, layer in self.backbone.get_submodule(self.trunk).named_children():
            hidden = layer(hidden)
            if name in taps:
                features.append(hidden)
                if len(features) == len(self.taps):
                    break
        return features

    def forward_features(self, images: Tensor) -> Tensor:
        """The finest decoder map (N, width, h, w), at the finest tap's size."""
        skips = self.encode(images)
        hidden = skips.pop()
        for up in self.decoder:
            hidden = up(hidden, skips.pop())
        return hidden

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, images: Tensor) -> Tensor:
        logits = self.forward_head(self.forward_features(images))
        if logits.shape[-2:] != images.shape[-2:]:  # an encoder whose finest map is coarser than the image
            logits = F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return logits


def segmenter_on_backbone(architecture: "str | Architecture", *, in_channels: int, num_classes: int,
                          image_size: tuple[int, int], max_stride: int = 32) -> nn.Module:
    """A U-Net over any registry model or YAML network (`guide-cnn`, `resnet18`, `net.yaml`) as encoder.

    The classification model is built, everything after its last map at `max_stride` is removed,
    and the rest is kept as `backbone` with its own module names (`backbone.layer1.0.conv1`), so
    classification weights load by name. The last child at each power-of-two stride is a skip.
    A registered segmentation model or a YAML network that already ends in a `classes` convolution
    is built as it is.

    >>> net = segmenter_on_backbone("resnet18", in_channels=3, num_classes=5, image_size=(64, 64))
    >>> net.taps, tuple(net(torch.zeros(1, 3, 37, 50)).shape)
    (('relu', 'layer1', 'layer2', 'layer3', 'layer4'), (1, 5, 37, 50))
    """
    from cnnlab.models.build import build_model, resolve_architecture
    from cnnlab.models.detectors import _choose_taps, _probe, _trim, _trunk_path
    from cnnlab.models.parts import first_conv_path
    from cnnlab.models.registry import MODELS

    if not isinstance(architecture, Architecture):
        architecture = resolve_architecture(architecture)
    if _is_segmenter(architecture, MODELS):
        return build_model(architecture, in_channels=in_channels, num_outputs=num_classes,
                           image_size=image_size)
    model = build_model(architecture, in_channels=in_channels, num_outputs=num_classes, image_size=image_size)
    first_conv = first_conv_path(model, architecture.name if architecture.name != "yaml" else None)
    trunk = _trunk_path(model)
    training = model.training
    model.eval()  # one blank image: batch norm must use its running statistics
    shapes = _probe(model.get_submodule(trunk), in_channels, image_size)
    model.train(training)
    if not shapes:
        raise ConfigError(f"{architecture.label or architecture.name}: no feature maps to segment from "
                          f"(its first layer is already the classifier)")
    taps = _choose_taps(shapes, image_size[0], 1, max_stride)
    _trim(model, trunk, taps[-1][0])
    return BackboneSegmenter(model, trunk=trunk, taps=taps, num_classes=num_classes,
                             first_conv_path=f"backbone.{first_conv}")


def _is_segmenter(architecture: "Architecture", models) -> bool:
    if architecture.name == "yaml":
        from cnnlab.models.yaml_net import is_dense_predictor

        return is_dense_predictor(list(architecture.layers or ()))
    return models.get(architecture.name).metadata.get("task") == "segmentation"
