"""Torchvision's classic CNN families, adapted to any number of input channels and classes.

Each builder makes torchvision's own model, untrained (`weights=None`), then swaps two layers:
the first convolution when the images do not have 3 channels, and the final `nn.Linear` so that
it has one output per class. The model is returned as torchvision built it, not wrapped, so its
`state_dict` keys match torchvision's published ImageNet weights (named by the `weights`
metadata, e.g. "ResNet18_Weights.IMAGENET1K_V1") and those can be loaded into it later.

torchvision is imported inside the builders: `import cnnlab.models.zoo` only fills the registry.

>>> from cnnlab.models.registry import model_entry
>>> entry = model_entry("resnet18")
>>> model = entry.builder(in_channels=1, num_outputs=7, image_size=(32, 32))
>>> model.conv1.in_channels, model.fc.out_features, entry.metadata["weights"]
(1, 7, 'ResNet18_Weights.IMAGENET1K_V1')
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from cnnlab.models.parts import get_module, set_module
from cnnlab.models.registry import ModelBuilder, check_input_size, register_model


@dataclass(frozen=True)
class _Family:
    """Where a family keeps its parts (dotted paths) and the smallest image side it takes."""

    first_conv: str
    classifier: str
    min_size: int


_FAMILIES = {
    # The 11×11 stride-4 stem and three 3×3 stride-2 max-pools leave nothing to pool below 63 px.
    "alexnet": _Family(first_conv="features.0", classifier="classifier.6", min_size=63),
    # Five 2×2 max-pools: 32 px is the smallest side that leaves a 1×1 map for the last one.
    "vgg": _Family(first_conv="features.0", classifier="classifier.6", min_size=32),
    # These also shrink the image 32-fold, but their padded strided convs run on inputs down to
    # 1 px. Below 32 px the last feature maps would be computed mostly from padding, so 32 is
    # the smallest size worth training on.
    "resnet": _Family(first_conv="conv1", classifier="fc", min_size=32),
    "efficientnet": _Family(first_conv="features.0.0", classifier="classifier.1", min_size=32),
    "mobilenet": _Family(first_conv="features.0.0", classifier="classifier.3", min_size=32),
}


@dataclass(frozen=True)
class _ZooModel:
    name: str  # our name, which is also torchvision's builder name
    family: str
    weights: str  # torchvision's default ImageNet weights, as "EnumClass.MEMBER"
    description: str  # parameter counts are at 3 channels and 1000 classes, as published


_ZOO = (
    _ZooModel("alexnet", "alexnet", "AlexNet_Weights.IMAGENET1K_V1",
              "AlexNet: 5 conv + 3 dense layers, the 2012 ImageNet winner (Krizhevsky et al.; torchvision's "
              "one-tower variant), 61.1M params"),
    _ZooModel("vgg11", "vgg", "VGG11_Weights.IMAGENET1K_V1",
              "VGG-11: 8 conv (3×3) + 3 dense layers (Simonyan & Zisserman 2014), 132.9M params"),
    _ZooModel("vgg11_bn", "vgg", "VGG11_BN_Weights.IMAGENET1K_V1",
              "VGG-11 with batch normalisation after every conv, 132.9M params"),
    _ZooModel("vgg16", "vgg", "VGG16_Weights.IMAGENET1K_V1",
              "VGG-16: 13 conv (3×3) + 3 dense layers (Simonyan & Zisserman 2014), 138.4M params"),
    _ZooModel("vgg16_bn", "vgg", "VGG16_BN_Weights.IMAGENET1K_V1",
              "VGG-16 with batch normalisation after every conv, 138.4M params"),
    _ZooModel("resnet18", "resnet", "ResNet18_Weights.IMAGENET1K_V1",
              "ResNet-18: 18-layer residual network (He et al. 2015), 11.7M params"),
    _ZooModel("resnet34", "resnet", "ResNet34_Weights.IMAGENET1K_V1",
              "ResNet-34: 34-layer residual network (He et al. 2015), 21.8M params"),
    _ZooModel("resnet50", "resnet", "ResNet50_Weights.IMAGENET1K_V2",
              "ResNet-50: 50-layer residual network with bottleneck blocks (He et al. 2015), 25.6M params"),
    _ZooModel("efficientnet_b0", "efficientnet", "EfficientNet_B0_Weights.IMAGENET1K_V1",
              "EfficientNet-B0: mobile inverted-bottleneck network found by architecture search "
              "(Tan & Le 2019), 5.3M params"),
    _ZooModel("efficientnet_b1", "efficientnet", "EfficientNet_B1_Weights.IMAGENET1K_V2",
              "EfficientNet-B1: B0 scaled up in depth, width and resolution (Tan & Le 2019), 7.8M params"),
    _ZooModel("efficientnet_b2", "efficientnet", "EfficientNet_B2_Weights.IMAGENET1K_V1",
              "EfficientNet-B2: B0 scaled up in depth, width and resolution (Tan & Le 2019), 9.1M params"),
    _ZooModel("efficientnet_b3", "efficientnet", "EfficientNet_B3_Weights.IMAGENET1K_V1",
              "EfficientNet-B3: B0 scaled up in depth, width and resolution (Tan & Le 2019), 12.2M params"),
    _ZooModel("mobilenet_v3_small", "mobilenet", "MobileNet_V3_Small_Weights.IMAGENET1K_V1",
              "MobileNetV3-Small: light network for phones, with squeeze-excitation and hard-swish "
              "(Howard et al. 2019), 2.5M params"),
)


def _replace_first_conv(model: nn.Module, path: str, in_channels: int) -> None:
    old = get_module(model, path)
    assert isinstance(old, nn.Conv2d)
    new = nn.Conv2d(
        in_channels,
        old.out_channels,
        kernel_size=old.kernel_size,
        stride=old.stride,
        padding=old.padding,
        dilation=old.dilation,
        groups=old.groups,
        bias=old.bias is not None,
        padding_mode=old.padding_mode,
    )
    set_module(model, path, new)


def _replace_classifier(model: nn.Module, path: str, num_outputs: int) -> None:
    old = get_module(model, path)
    assert isinstance(old, nn.Linear)
    set_module(model, path, nn.Linear(old.in_features, num_outputs))


def _make_builder(name: str, family: _Family) -> ModelBuilder:
    def build(*, in_channels: int, num_outputs: int, image_size: tuple[int, int]) -> nn.Module:
        check_input_size(name, image_size, family.min_size)
        import torchvision  # here, not at the top: importing it takes a second

        model = torchvision.models.get_model(name, weights=None)
        if in_channels != 3:
            _replace_first_conv(model, family.first_conv, in_channels)
        _replace_classifier(model, family.classifier, num_outputs)
        return model

    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"torchvision's untrained `{name}` for `in_channels` inputs and `num_outputs` outputs."
    return build


def _register(spec: _ZooModel) -> None:
    family = _FAMILIES[spec.family]
    register_model(
        spec.name,
        description=spec.description,
        family=spec.family,
        first_conv=family.first_conv,
        classifier=family.classifier,
        min_size=family.min_size,
        torchvision_name=spec.name,
        weights=spec.weights,
    )(_make_builder(spec.name, family))


for _spec in _ZOO:
    _register(_spec)
