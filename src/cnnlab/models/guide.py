"""`guide-cnn`: exactly the network the guide builds, layer for layer.

    Conv2D(32, 3×3, ReLU) → MaxPool 2×2 → Conv2D(64, 3×3, ReLU) → MaxPool 2×2
    → Conv2D(64, 3×3, ReLU) → Flatten → Dense(64, ReLU) → Dense(classes, softmax)

Convolutions use Keras' default 'valid' padding, so a 28×28 image shrinks
28 → 26 → 13 → 11 → 5 → 3 and the flattened vector has 64·3·3 = 576 values.
The final softmax is not a layer here: PyTorch's cross-entropy loss applies log-softmax to the
raw scores (logits) itself, which is the numerically stable way; `predict` applies softmax.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from cnnlab.models.pooling import pool_for_inference
from cnnlab.models.registry import check_input_size, register_model


def _is_observed(layers: nn.Sequential) -> bool:
    """Whether anyone watches a layer's input or output (a hook: feature maps, Grad-CAM, a user's)
    — then the layers must run in the guide's order, each seeing what the guide says it sees."""
    from torch.nn.modules import module as torch_module

    hook_lists = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    global_hooks = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                    "_global_backward_pre_hooks")
    if any(getattr(torch_module, name, None) for name in global_hooks):
        return True
    return any(getattr(layer, name, None) for layer in layers for name in hook_lists)


def _valid_conv_then_pool(side: int) -> int:
    return (side - 2) // 2


def guide_feature_side(side: int) -> int:
    """Side length of the last feature map for an input side: conv,pool,conv,pool,conv."""
    return _valid_conv_then_pool(_valid_conv_then_pool(side)) - 2


class GuideCNN(nn.Module):
    def __init__(self, *, in_channels: int, num_outputs: int, image_size: tuple[int, int]):
        super().__init__()
        height, width = (guide_feature_side(side) for side in image_size)
        self.features = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(in_channels, 32, kernel_size=3),
                relu1=nn.ReLU(),
                pool1=nn.MaxPool2d(2),
                conv2=nn.Conv2d(32, 64, kernel_size=3),
                relu2=nn.ReLU(),
                pool2=nn.MaxPool2d(2),
                conv3=nn.Conv2d(64, 64, kernel_size=3),
                relu3=nn.ReLU(),
            )
        )
        self.head = nn.Sequential(
            OrderedDict(
                flatten=nn.Flatten(),
                fc1=nn.Linear(64 * height * width, 64),
                relu4=nn.ReLU(),
                fc2=nn.Linear(64, num_outputs),  # softmax lives in the loss / in predict
            )
        )

    def forward_features(self, images: Tensor) -> Tensor:
        if _is_observed(self.features):
            return self.features(images)  # (B, 64, h, w), layer by layer as the guide lists them
        # Max-pooling and ReLU commute exactly: ReLU never changes which value in a window is the
        # largest, so pooling first and ReLU on the pooled map (a quarter of the values) gives the
        # same numbers and the same gradients, and a training step on 2 CPU cores ~7% sooner.
        # Without gradients (predict, video) the pooling skips the indices training needs.
        layers = self.features
        hidden = layers.relu1(pool_for_inference(layers.pool1, layers.conv1(images)))
        hidden = layers.relu2(pool_for_inference(layers.pool2, layers.conv2(hidden)))
        return layers.relu3(layers.conv3(hidden))

    def forward_head(self, features: Tensor) -> Tensor:
        return self.head(features)  # (B, num_outputs) logits

    def forward(self, images: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(images))


@register_model(
    "guide-cnn",
    description="the guide's CNN: 3 conv (32-64-64) + 2 max-pool + dense 64 + softmax (~93k params at 28×28)",
    family="guide",
    first_conv="features.conv1",
    classifier="head.fc2",
    min_size=18,
)
def guide_cnn(*, in_channels: int, num_outputs: int, image_size: tuple[int, int]) -> GuideCNN:
    check_input_size("guide-cnn", image_size, 18)
    return GuideCNN(in_channels=in_channels, num_outputs=num_outputs, image_size=image_size)
