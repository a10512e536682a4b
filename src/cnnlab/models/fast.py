"""`fast-cnn-v2` and `fast-cnn`: small networks with batch normalisation, built to train quickly on a CPU.

    fast-cnn-v2: Conv(24)→MaxPool→BN→ReLU → Conv(64)→MaxPool→BN→ReLU → Conv(96)→MaxPool→BN→ReLU
                 → Conv(128)→BN→ReLU → Flatten → Dense(classes)
    fast-cnn:    Conv(32)→MaxPool→BN→ReLU → Conv(64)→MaxPool→BN→ReLU → Conv(96)→BN→ReLU
                 → Conv(96)→MaxPool→BN→ReLU → Flatten → Dense(classes)

Compared with guide-cnn: 'same' padding keeps the borders, batch normalisation lets it learn at a
high rate from the first step, and most of the work happens at 7×7 where it is cheap.

Why this order and these widths (measured in docs/speed.md): its convolutions run at the CPU's
bfloat16 peak, so the rest of a training step is memory traffic over activations. Pooling right
after each convolution, before batch norm and ReLU (as in Keller Jordan's fast CIFAR-10 networks),
runs those two on a quarter of the values; the network computes the same kind of function. No
dropout: in the few epochs of `--recipe fast` it slowed learning more than it helped, and drawing
its random mask cost 3% of a step.

fast-cnn-v2 pools after its third convolution instead of its fourth, so the fourth runs on a 3×3
map, and its first convolution has 24 filters (a 3×3 patch of a grey image has only 9 values):
38% less arithmetic, a training step about a quarter sooner, and the same accuracy after 5 epochs.
It is the model of `--recipe fast` and `--recipe fast-gpu` (see `cnnlab.config.RECIPES`). For
images larger than 31 px its last maps are averaged down to 3×3 before the dense layer: flattened
whole, a 224-px photo's 28×28 maps gave the dense layer 100k inputs, and the recipe's rate then
threw the logits far off (training loss 1.6 → 32 in an epoch). At 28 px its maps are 3×3 already and nothing is added.
fast-cnn stays as it was, so runs trained with it still load.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from cnnlab.models.registry import check_input_size, register_model

# (output channels, followed by a 2×2 max-pool?) of each convolution. Both go 28 → 14 → 7 → 3.
LAYOUTS: dict[str, tuple[tuple[int, bool], ...]] = {
    "fast-cnn": ((32, True), (64, True), (96, False), (96, True)),
    "fast-cnn-v2": ((24, True), (64, True), (96, True), (128, False)),  # the 4th convolution at 3×3
}


def _conv_block(index: int, in_channels: int, out_channels: int, pool: bool) -> list[tuple[str, nn.Module]]:
    layers: list[tuple[str, nn.Module]] = [
        (f"conv{index}", nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False))]  # BN has the bias
    if pool:
        layers.append((f"pool{index}", nn.MaxPool2d(2)))
    layers += [(f"bn{index}", nn.BatchNorm2d(out_channels)), (f"relu{index}", nn.ReLU(inplace=True))]
    return layers


class FastCNN(nn.Module):
    def __init__(self, *, in_channels: int, num_outputs: int, image_size: tuple[int, int],
                 layout: tuple[tuple[int, bool], ...] = LAYOUTS["fast-cnn"], head_grid: int | None = None):
        """`head_grid`: average the last maps down to at most this many positions a side before the
        dense layer, so its size (and how far Adam moves the logits in a step) does not grow with
        the image; None flattens the maps whatever their size (fast-cnn, as it always has)."""
        super().__init__()
        blocks, channels = [], in_channels
        for index, (width, pool) in enumerate(layout, start=1):
            blocks += _conv_block(index, channels, width, pool)
            channels = width
        self.features = nn.Sequential(OrderedDict(blocks))
        pools = sum(pool for _, pool in layout)
        sides = tuple(side // 2**pools for side in image_size)
        head: list[tuple[str, nn.Module]] = []
        if head_grid is not None and max(sides) > head_grid:
            sides = tuple(min(side, head_grid) for side in sides)
            head.append(("pool", nn.AdaptiveAvgPool2d(sides)))
        height, width = sides
        head += [("flatten", nn.Flatten()), ("fc", nn.Linear(channels * height * width, num_outputs))]
        self.head = nn.Sequential(OrderedDict(head))

    def forward_features(self, images: Tensor) -> Tensor:
        return self.features(images)  # (B, last width, H/8, W/8)

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))


@register_model(
    "fast-cnn",
    description="small CNN with batch norm for quick training (4 conv 32-64-96-96, 166k params at 28×28); "
                "the model of --recipe fast and fast-gpu before fast-cnn-v2",
    family="fast",
    first_conv="features.conv1",
    classifier="head.fc",
    min_size=8,
)
def fast_cnn(*, in_channels: int, num_outputs: int, image_size: tuple[int, int]) -> FastCNN:
    check_input_size("fast-cnn", image_size, 8)
    return FastCNN(in_channels=in_channels, num_outputs=num_outputs, image_size=image_size)


@register_model(
    "fast-cnn-v2",
    description="fast-cnn with its last pool one convolution sooner: 4 conv 24-64-96-128, the 4th at 1/8 "
                "of the side; the model of --recipe fast and fast-gpu (192k params at 28×28)",
    family="fast",
    first_conv="features.conv1",
    classifier="head.fc",
    min_size=8,
)
def fast_cnn_v2(*, in_channels: int, num_outputs: int, image_size: tuple[int, int]) -> FastCNN:
    check_input_size("fast-cnn-v2", image_size, 8)
    return FastCNN(in_channels=in_channels, num_outputs=num_outputs, image_size=image_size,
                   layout=LAYOUTS["fast-cnn-v2"], head_grid=3)
