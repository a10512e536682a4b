"""torchvision's semantic segmentation models, returning one logits tensor like every cnnlab segmenter.

    fcn_resnet50, deeplabv3_resnet50, deeplabv3_mobilenet_v3_large, lraspp_mobilenet_v3_large
    (images (N, C, H, W)) -> logits (N, classes, H, W)

torchvision's models return a dict: 'out' (the logits, already resized to the input) and, with
`aux_loss`, 'aux' from an auxiliary head. Here the model is built without the auxiliary head and
`TorchvisionSegmenter` returns 'out' alone, so the training loop, Grad-CAM and export see a plain
CNN. The wrapper takes over torchvision's children under their own names (`backbone.conv1`,
`classifier.4`), so `state_dict` keys are torchvision's and its published weights
(`FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1`, the registry's `weights` metadata) load by name
with `--weights imagenet` (the model's default torchvision weights, read offline first from torch
hub's cache: `cnnlab.models.weights`) or `--weights file.pth`.

Built untrained, as zoo.py's classifiers are: `weights_backbone=None` too, so nothing is ever
downloaded here. Grey images get a 1-channel first convolution; the weights' RGB filters are summed
into it when weights are loaded (`cnnlab.models.transfer`). The classifier convolution has one
output per class; weights for another number of classes leave it new.

>>> import torch
>>> from cnnlab.models.registry import model_entry
>>> build = model_entry("lraspp_mobilenet_v3_large").builder
>>> model = build(in_channels=1, num_outputs=4, image_size=(64, 64))
>>> tuple(model(torch.zeros(2, 1, 45, 61)).shape)
(2, 4, 45, 61)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import Tensor, nn

from cnnlab.models.registry import ModelBuilder, check_input_size, register_model
from cnnlab.models.zoo import _replace_first_conv


class TorchvisionSegmenter(nn.Module):
    """A torchvision segmentation model that returns its 'out' logits instead of a dict."""

    def __init__(self, model: nn.Module):
        super().__init__()
        # torchvision's own forward, run on this module: it reads only the children taken over here
        self._torchvision_forward: Callable[[nn.Module, Tensor], dict[str, Tensor]] = type(model).forward
        for name, child in model.named_children():
            self.add_module(name, child)
        if hasattr(model, "aux_classifier"):
            self.aux_classifier = model.aux_classifier  # None: built without the auxiliary head

    def forward(self, images: Tensor) -> Tensor:
        return self._torchvision_forward(self, images)["out"]


@dataclass(frozen=True)
class _ZooSegmenter:
    name: str  # our name, which is also torchvision's builder name
    first_conv: str
    classifier: str  # the convolution with one output per class (LR-ASPP's high-resolution one)
    weights: str
    description: str


_ZOO = (
    _ZooSegmenter("fcn_resnet50", "backbone.conv1", "classifier.4",
                  "FCN_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
                  "FCN (Long et al. 2015) on a dilated ResNet-50, output stride 8, 32.9M params"),
    _ZooSegmenter("deeplabv3_resnet50", "backbone.conv1", "classifier.4",
                  "DeepLabV3_ResNet50_Weights.COCO_WITH_VOC_LABELS_V1",
                  "DeepLabV3 (Chen et al. 2017): atrous spatial pyramid pooling on a dilated ResNet-50, "
                  "39.6M params"),
    _ZooSegmenter("deeplabv3_mobilenet_v3_large", "backbone.0.0", "classifier.4",
                  "DeepLabV3_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
                  "DeepLabV3 on MobileNetV3-Large, 11.0M params"),
    _ZooSegmenter("lraspp_mobilenet_v3_large", "backbone.0.0", "classifier.high_classifier",
                  "LRASPP_MobileNet_V3_Large_Weights.COCO_WITH_VOC_LABELS_V1",
                  "Lite R-ASPP (Howard et al. 2019) on MobileNetV3-Large: the light one, 3.2M params"),
)
_MIN_SIZE = 32  # output stride 8-16 with padded convolutions: below 32 px the deepest maps are all padding


def _make_builder(spec: _ZooSegmenter) -> ModelBuilder:
    def build(*, in_channels: int, num_outputs: int, image_size: tuple[int, int]) -> TorchvisionSegmenter:
        check_input_size(spec.name, image_size, _MIN_SIZE)
        import torchvision  # here, not at the top: importing it takes a second

        model = torchvision.models.get_model(spec.name, weights=None, weights_backbone=None,
                                             num_classes=num_outputs, aux_loss=False)
        if in_channels != 3:
            _replace_first_conv(model, spec.first_conv, in_channels)
        return TorchvisionSegmenter(model)

    build.__name__ = build.__qualname__ = spec.name
    build.__doc__ = f"torchvision's untrained `{spec.name}`: `in_channels` inputs, `num_outputs` classes."
    return build


def _register(spec: _ZooSegmenter) -> None:
    metadata: dict[str, Any] = dict(torchvision_name=spec.name, weights=spec.weights, task="segmentation",
                                    unused_weights=("aux_classifier.",))
    if spec.name.startswith("lraspp"):  # two class convolutions, at 1/8 and 1/16 of the image: both are new
        metadata["class_layers"] = ("classifier.low_classifier", "classifier.high_classifier")
    register_model(spec.name, description=spec.description, family="torchvision-segmentation",
                   first_conv=spec.first_conv, classifier=spec.classifier, min_size=_MIN_SIZE,
                   **metadata)(_make_builder(spec))


for _spec in _ZOO:
    _register(_spec)
