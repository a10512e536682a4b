"""The stage rule picks a readable set of feature maps for guide-cnn, YAML networks and every zoo
family; forward hooks collect exactly what the layers output."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnnlab.explain.feature_maps import feature_maps, find_stages, grid_title, plot_feature_maps
from cnnlab.models.build import build_model, resolve_architecture

EXAMPLE_YAML = Path(__file__).parents[2] / "examples" / "guide-cnn.yaml"

# model, input side, expected stage labels (stage output shown in brackets where folded)
FAMILIES = {
    "guide-cnn": (28, ["conv1", "pool1", "conv2", "pool2", "conv3"]),
    str(EXAMPLE_YAML): (28, ["conv1", "pool1", "conv2", "pool2", "conv3"]),
    "resnet18": (32, ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4"]),
    "alexnet": (63, ["features.0 (Conv2d)", "features.2 (MaxPool2d)", "features.3 (Conv2d)",
                     "features.5 (MaxPool2d)", "features.6 (Conv2d)", "features.8 (Conv2d)",
                     "features.10 (Conv2d)", "features.12 (MaxPool2d)"]),
    "vgg11": (32, None),  # 8 convs and 5 pools
    "efficientnet_b0": (32, ["features.0 (Conv2dNormActivation)", "features.1 (1× MBConv)",
                             "features.2 (2× MBConv)", "features.3 (2× MBConv)", "features.4 (3× MBConv)",
                             "features.5 (3× MBConv)", "features.6 (4× MBConv)", "features.7 (1× MBConv)",
                             "features.8 (Conv2dNormActivation)"]),
    "mobilenet_v3_small": (32, [f"features.{n}" for n in range(13)]),
}


@functools.cache
def untrained(name: str, channels: int = 3) -> torch.nn.Module:
    side = FAMILIES[name][0]
    torch.manual_seed(0)
    return build_model(resolve_architecture(name), in_channels=channels, num_outputs=10,
                       image_size=(side, side)).eval()


def _images(name: str, channels: int = 3) -> torch.Tensor:
    from skimage import data, transform

    side = FAMILIES[name][0]
    photo = transform.resize(data.astronaut(), (side, side), anti_aliasing=True)  # a real photo, 0–1
    tensor = torch.from_numpy(photo).float().permute(2, 0, 1)[None]
    return tensor[:, :channels] if channels == 1 else tensor


@pytest.mark.parametrize("name", list(FAMILIES))
def test_stage_rule_per_family(name):
    stages = find_stages(untrained(name))
    labels = [stage.label for stage in stages]
    expected = FAMILIES[name][1]
    if expected is None:  # vgg11: every conv (with its ReLU) and every pool of `features`
        assert len(stages) == 13 and sum("Conv2d" in label for label in labels) == 8
    elif name == "mobilenet_v3_small":
        assert [label.split(" ")[0] for label in labels] == expected
    else:
        assert labels == expected
    maps = feature_maps(untrained(name), _images(name), stages)
    assert len(maps) == len(stages)
    for stage, values in maps:
        assert values.dim() == 4 and values.shape[0] == 1, stage


def test_convolutions_are_shown_after_their_activation():
    model = untrained("guide-cnn", 3)
    stages = {stage.label: stage for stage in find_stages(model)}
    assert stages["conv2"].output_path == "features.relu2" and stages["conv2"].folded == ("relu2",)
    captured = {stage.label: maps for stage, maps in feature_maps(model, _images("guide-cnn"))}
    assert captured["conv2"].min() >= 0  # after ReLU
    assert tuple(captured["conv2"].shape[1:]) == (64, 11, 11)
    assert tuple(captured["pool2"].shape[1:]) == (64, 5, 5)
    resnet = {stage.label: stage for stage in find_stages(untrained("resnet18"))}
    assert resnet["conv1"].folded == ("bn1", "relu")


def test_hooks_record_exactly_the_layers_outputs():
    model = untrained("resnet18")
    images = _images("resnet18")
    captured = {stage.label: maps for stage, maps in feature_maps(model, images)}
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(images))))
        torch.testing.assert_close(captured["maxpool"], x)
        torch.testing.assert_close(captured["layer2"], model.layer2(model.layer1(x)))


def test_feature_map_grid_is_titled_with_name_shape_and_how_many(tmp_path):
    model = untrained("resnet18")
    stage, maps = feature_maps(model, _images("resnet18"))[2]  # layer1: 64×8×8
    assert grid_title(stage, tuple(maps.shape[1:]), 16, "astronaut") == \
        "layer1 · 64×8×8\nshowing the first 16 of 64 channels; astronaut"
    conv1 = find_stages(untrained("guide-cnn"))[2]
    assert grid_title(conv1, (64, 11, 11), 64) == "conv2 · 64×11×11\nafter relu2"
    path = plot_feature_maps(maps[0], stage, tmp_path / "layer1.png", max_maps=16, image_name="astronaut")
    with Image.open(path) as picture:
        assert picture.size[0] >= 500 and picture.size[1] >= 250


def test_a_pool_before_batch_norm_and_relu_is_shown_after_them():
    """fast-cnn-v2 pools right after each convolution, then normalises and rectifies: the pool's stage
    shows what conv2 receives (after relu1), not the pooled raw responses."""
    torch.manual_seed(0)
    model = build_model(resolve_architecture("fast-cnn-v2"), in_channels=1, num_outputs=10,
                        image_size=(28, 28)).eval()
    stages = find_stages(model)
    assert [(stage.label, stage.folded) for stage in stages] == [
        ("conv1", ()), ("pool1", ("bn1", "relu1")), ("conv2", ()), ("pool2", ("bn2", "relu2")),
        ("conv3", ()), ("pool3", ("bn3", "relu3")), ("conv4", ("bn4", "relu4"))]
    captured = {stage.label: maps for stage, maps in feature_maps(model, _images("guide-cnn", 1), stages)}
    assert tuple(captured["pool1"].shape[1:]) == (24, 14, 14) and captured["pool1"].min() >= 0
    with torch.no_grad():
        features = model.features
        expected = features.relu1(features.bn1(features.pool1(features.conv1(_images("guide-cnn", 1)))))
    torch.testing.assert_close(captured["pool1"], expected)
