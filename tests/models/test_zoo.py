"""Every registered model builds for any channel count and class count, and trains one step."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import torch
import torchvision
from torch import nn

from cnnlab.errors import ConfigError
from cnnlab.models import parts
from cnnlab.models.registry import list_models, model_entry

NUM_OUTPUTS = 7
# The classifiers (a detector's outputs are maps: tests/models/test_detectors.py covers those).
ENTRIES = [entry for entry in list_models() if entry.metadata.get("task", "classification") == "classification"]
ZOO_ENTRIES = [entry for entry in ENTRIES if "torchvision_name" in entry.metadata]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # These are many small forward passes. With two or more threads, OpenMP workers spin while waiting
    # and, when other processes share the cores, the module runs several times slower than on one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _side(entry) -> int:
    return max(entry.metadata["min_size"], 32)


def _build(entry, in_channels: int, num_outputs: int = NUM_OUTPUTS) -> nn.Module:
    side = _side(entry)
    return entry.builder(in_channels=in_channels, num_outputs=num_outputs, image_size=(side, side))


def _build_on_meta(entry, in_channels: int, num_outputs: int = NUM_OUTPUTS) -> nn.Module:
    # Tensors on the "meta" device have shapes but no memory: VGG's 100M+ weights build instantly.
    with torch.device("meta"):
        return _build(entry, in_channels, num_outputs)


def test_the_zoo_has_every_family():
    names = {entry.name for entry in ENTRIES}
    assert {"guide-cnn", "alexnet", "vgg11", "vgg11_bn", "vgg16", "vgg16_bn", "resnet18", "resnet34",
            "resnet50", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
            "mobilenet_v3_small"} <= names
    families = {entry.metadata["family"] for entry in ZOO_ENTRIES}
    assert families == {"alexnet", "vgg", "resnet", "efficientnet", "mobilenet"}


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.name)
def test_model_trains_one_step(entry, in_channels):
    torch.manual_seed(0)
    model = _build(entry, in_channels).train()
    images = torch.rand(2, in_channels, _side(entry), _side(entry))

    scores = model(images)
    assert scores.shape == (2, NUM_OUTPUTS)
    nn.functional.cross_entropy(scores, torch.tensor([0, 6])).backward()

    conv = parts.first_conv(model, entry)
    assert conv.in_channels == in_channels
    assert torch.isfinite(conv.weight.grad).all()
    assert conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("entry", ENTRIES, ids=lambda entry: entry.name)
def test_metadata_paths_point_at_the_adapted_layers(entry, in_channels):
    model = _build_on_meta(entry, in_channels)
    conv = parts.get_module(model, entry.metadata["first_conv"])
    linear = parts.get_module(model, entry.metadata["classifier"])
    assert isinstance(conv, nn.Conv2d) and conv.in_channels == in_channels
    assert isinstance(linear, nn.Linear) and linear.out_features == NUM_OUTPUTS
    assert parts.first_conv(model, entry.name) is conv
    assert parts.classifier(model, entry.name) is linear
    # with no registry entry, the structure gives the same answer
    assert parts.first_conv(model) is conv
    assert parts.classifier(model) is linear


@pytest.mark.parametrize("entry", ZOO_ENTRIES, ids=lambda entry: entry.name)
def test_state_dict_matches_torchvision_so_imagenet_weights_load(entry):
    ours = _build_on_meta(entry, in_channels=3).state_dict()
    with torch.device("meta"):
        theirs = torchvision.models.get_model(entry.metadata["torchvision_name"]).state_dict()
    assert list(ours) == list(theirs)
    classifier = entry.metadata["classifier"]
    different = [key for key in ours if ours[key].shape != theirs[key].shape]
    assert different == [f"{classifier}.weight", f"{classifier}.bias"]


@pytest.mark.parametrize("entry", ZOO_ENTRIES, ids=lambda entry: entry.name)
def test_weights_name_is_torchvisions_default(entry):
    default = torchvision.models.get_model_weights(entry.metadata["torchvision_name"]).DEFAULT
    assert entry.metadata["weights"] == f"{type(default).__name__}.{default.name}"


@pytest.mark.parametrize("entry", ZOO_ENTRIES, ids=lambda entry: entry.name)
def test_description_quotes_the_imagenet_parameter_count(entry):
    model = _build_on_meta(entry, in_channels=3, num_outputs=1000)
    millions = sum(p.numel() for p in model.parameters()) / 1e6
    quoted = re.search(r"([\d.]+)M params$", entry.description)
    assert quoted is not None, entry.description
    assert quoted.group(1) == f"{millions:.1f}"


@pytest.mark.parametrize("entry", ZOO_ENTRIES, ids=lambda entry: entry.name)
def test_min_size_is_accepted_and_one_less_is_refused(entry):
    side = entry.metadata["min_size"]
    with pytest.raises(ConfigError, match=r"--image-size \d+"):
        entry.builder(in_channels=3, num_outputs=2, image_size=(side - 1, side + 10))
    with torch.device("meta"):
        model = entry.builder(in_channels=3, num_outputs=2, image_size=(side, side))
        assert model.eval()(torch.zeros(1, 3, side, side)).shape == (1, 2)


def test_alexnet_really_needs_63_pixels():
    model = _build_on_meta(model_entry("alexnet"), in_channels=3).eval()
    assert model(torch.zeros(1, 3, 63, 63, device="meta")).shape == (1, NUM_OUTPUTS)
    with pytest.raises(RuntimeError):  # the last max-pool has a 2×2 map and a 3×3 window
        model(torch.zeros(1, 3, 62, 62, device="meta"))


def test_too_small_image_names_the_image_size_flag():
    with pytest.raises(ConfigError) as raised:
        model_entry("vgg16").builder(in_channels=3, num_outputs=10, image_size=(28, 28))
    assert "--image-size 32" in str(raised.value)
    assert "28×28" in str(raised.value)


@pytest.mark.parametrize(
    "name, expected",
    [("guide-cnn", "features.conv3"), ("resnet18", "layer4.1.conv2"), ("resnet50", "layer4.2.conv3"),
     ("efficientnet_b0", "features.8.0"), ("mobilenet_v3_small", "features.12.0"), ("vgg11", "features.18"),
     ("alexnet", "features.10")],
)
def test_last_conv_layer(name, expected):
    model = _build_on_meta(model_entry(name), in_channels=3)
    path, conv = parts.last_conv_layer(model)
    assert path == expected
    assert conv is model.get_submodule(expected)


def test_set_module_keeps_the_state_dict_key():
    model = _build_on_meta(model_entry("alexnet"), in_channels=3)
    parts.set_module(model, "classifier.6", nn.Linear(4096, 3))
    assert model.state_dict()["classifier.6.weight"].shape == (3, 4096)


def test_unknown_part_path_suggests_the_right_name():
    model = _build_on_meta(model_entry("resnet18"), in_channels=3)
    with pytest.raises(ConfigError, match="Did you mean layer4.1.conv2"):
        parts.get_module(model, "layer4.1.conv_2")
    with pytest.raises(ConfigError):
        parts.set_module(model, "layer5", nn.Identity())


def test_importing_the_zoo_does_not_import_torchvision():
    code = "import sys, cnnlab.models.zoo; print('torchvision' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
