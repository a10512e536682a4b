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
        super().__init__(OrderedDict(pool=nn.MaxPool2d(2), block=double_conv(in_channels, out_channels, batch_norm)))


class Up(nn.Module):
    """Upsample the deeper map to the skip's size, concatenate the skip, double conv.

    Bilinear upsampling first narrows the deeper map with a 1×1 conv to the skip's width, so the
    double conv sees skip + deeper at equal widths as with a transposed conv, and the costly 3×3
    convs never run on the deeper level's full width at the finer resolution.
    """

    def __init__(self, deeper_channels: int, skip_channels: int, out_channels: int, *, batch_norm: bool,
                 upsampling: str):
        super().__init__()
        if upsampling == "transposed":
            self.up: nn.Module = nn.ConvTranspose2d(deeper_channels, skip_channels, 2, stride=2)
        else:
            self.up = nn.Sequential(OrderedDict(
                reduce=nn.Conv2d(deeper_channels, skip_channels, 1),
                resize=nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            ))
        self.block = double_conv(2 * skip_channels, out_channels, batch_norm)

    def forward(self, deeper: Tensor, skip: Tensor) -> Tensor:
        return self.block(torch.cat([skip, self.up(deeper)], 1))


class UNet(nn.Module):
    """stem → depth × Down → depth × Up (with the encoder's maps as skips) → 1×1 conv head."""

    def __init__(self, config: UNetConfig, *, in_channels: int, num_classes: int):
        super().__init__()
        self.config, self.num_classes = config, num_classes
        widths = config.widths()
        self.stem = double_conv(in_channels, widths[0], config.batch_norm)
        self.down = nn.ModuleList(Down(widths[level], widths[level + 1], config.batch_norm)
                                  for level in range(config.depth))
        self.up = nn.ModuleList(Up(widths[level + 1], widths[level], widths[level], batch_norm=config.batch_norm,
                                   upsampling=config.upsampling)
                                for level in reversed(range(config.depth)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.multiple = 2 ** config.depth
        # `cnnlab.models.parts` reads these where no registry entry says where the parts are
        self.first_conv_path, self.classifier_path = "stem.conv1", "head"

    def forward_features(self, images: Tensor) -> Tensor:
        """The last decoder map (N, base_width, H, W): what the head sees."""
        height, width = images.shape[-2:]
        hidden = pad_to_multiple(images, self.multiple)
        skips = [self.stem(hidden)]
        for down in self.down:
            skips.append(down(skips[-1]))
        hidden = skips.pop()
        for up in self.up:
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
    "unet": "U-Net for small images on CPU: depth 4, widths 16-32-64-128-256, batch norm, bilinear upsampling",
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
