"""`fast-cnn`: a small network with batch normalisation, built to train quickly on a CPU.

    Conv(32)+BN+ReLU → MaxPool → Conv(64)+BN+ReLU → MaxPool → Conv(128)+BN+ReLU → Conv(128)+BN+ReLU
    → MaxPool → Flatten → Dropout(0.25) → Dense(classes)

Compared with guide-cnn: 'same' padding keeps the borders, batch normalisation lets it learn at a
high rate from the first step, and most of the work happens at 7×7 where it is cheap. Memory
traffic, not arithmetic, limits small CNNs on a CPU, so the full-resolution stage is kept narrow.
It is the model of `--recipe fast` (see `cnnlab.config.RECIPES`).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from cnnlab.models.registry import check_input_size, register_model


def _conv_block(index: int, in_channels: int, out_channels: int) -> list[tuple[str, nn.Module]]:
    return [(f"conv{index}", nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)),
            (f"bn{index}", nn.BatchNorm2d(out_channels)),
            (f"relu{index}", nn.ReLU(inplace=True))]


class FastCNN(nn.Module):
    def __init__(self, *, in_channels: int, num_outputs: int, image_size: tuple[int, int]):
        super().__init__()
        self.features = nn.Sequential(OrderedDict([
            *_conv_block(1, in_channels, 32), ("pool1", nn.MaxPool2d(2)),
            *_conv_block(2, 32, 64), ("pool2", nn.MaxPool2d(2)),
            *_conv_block(3, 64, 128), *_conv_block(4, 128, 128), ("pool3", nn.MaxPool2d(2)),
        ]))
        height, width = (side // 8 for side in image_size)
        self.head = nn.Sequential(OrderedDict([
            ("flatten", nn.Flatten()),
            ("dropout", nn.Dropout(0.25)),
            ("fc", nn.Linear(128 * height * width, num_outputs)),
        ]))

    def forward_features(self, images: Tensor) -> Tensor:
        return self.features(images)  # (B, 128, H/8, W/8)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))


@register_model(
    "fast-cnn",
    description="small CNN with batch norm for quick CPU training (4 conv 32-64-128-128, 252k params at 28×28)",
    family="fast",
    first_conv="features.conv1",
    classifier="head.fc",
    min_size=8,
)
def fast_cnn(*, in_channels: int, num_outputs: int, image_size: tuple[int, int]) -> FastCNN:
    check_input_size("fast-cnn", image_size, 8)
    return FastCNN(in_channels=in_channels, num_outputs=num_outputs, image_size=image_size)
