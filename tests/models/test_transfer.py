"""Layer transfer: what fits is copied, the head is new, the first convolution is adapted, all reported."""

from __future__ import annotations

import torch
from torch import nn

from cnnlab.models.build import create_model
from cnnlab.models.transfer import (ADAPTED, LOADED, REINITIALISED, SKIPPED, TransferReport, adapt_channel_values,
                                    adapt_first_conv, transfer_weights)


def _guide(classes: int = 10, channels: int = 1, size: int = 28, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("guide-cnn", in_channels=channels, num_outputs=classes, image_size=(size, size))


def test_rgb_filters_summed_for_grey_images_respond_as_to_a_grey_rgb_image():
    torch.manual_seed(0)
    rgb = nn.Conv2d(3, 8, 3)
    grey = nn.Conv2d(1, 8, 3)
    with torch.no_grad():
        grey.weight.copy_(adapt_first_conv(rgb.weight, 1))
        grey.bias.copy_(rgb.bias)
    image = torch.rand(2, 1, 12, 12)
    assert torch.allclose(grey(image), rgb(image.expand(-1, 3, -1, -1)), atol=1e-5)
    assert torch.equal(adapt_first_conv(rgb.weight, 1), rgb.weight.sum(dim=1, keepdim=True))


def test_grey_filters_repeated_for_colour_images_keep_the_grey_response():
    torch.manual_seed(0)
    grey = nn.Conv2d(1, 4, 3)
    rgb = nn.Conv2d(3, 4, 3)
    with torch.no_grad():
        rgb.weight.copy_(adapt_first_conv(grey.weight, 3))
        rgb.bias.copy_(grey.bias)
    image = torch.rand(1, 1, 9, 9)
    assert torch.allclose(rgb(image.expand(-1, 3, -1, -1)), grey(image), atol=1e-5)
    assert adapt_channel_values((0.485, 0.456, 0.406), 1) == (0.449,)
    assert adapt_channel_values((0.3,), 3) == (0.3, 0.3, 0.3)


def test_new_classes_get_a_new_head_and_everything_else_is_loaded():
    source, target = _guide(10, seed=1), _guide(5, seed=2)
    report = transfer_weights(target, source.state_dict(), source="a run", classifier="head.fc2",
                              first_conv="features.conv1")
    assert report.names(LOADED) == ["features.conv1", "features.conv2", "features.conv3", "head.fc1"]
    assert report.names(REINITIALISED) == ["head.fc2"] and report.new_layers == ["head.fc2"]
    assert torch.equal(target.features.conv2.weight, source.features.conv2.weight)
    assert report.unused == []
    # the new head starts at zero: every class scores the same, the loss starts at log(classes)
    assert not target.head.fc2.weight.any() and not target.head.fc2.bias.any()
    logits = target(torch.rand(4, 1, 28, 28))
    assert torch.equal(logits, torch.zeros(4, 5))
    loss = nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3]))
    assert abs(loss.item() - torch.log(torch.tensor(5.0)).item()) < 1e-6
    loss.backward()
    assert target.head.fc2.weight.grad.abs().sum() > 0  # and it learns: zero is not a dead start


def test_same_classes_keep_the_classifier():
    source, target = _guide(10, seed=1), _guide(10, seed=2)
    report = transfer_weights(target, source.state_dict(), source="a run", classifier="head.fc2",
                              keep_classifier=True)
    assert report.names(LOADED)[-1] == "head.fc2" and report.new_layers == []
    assert torch.equal(target.head.fc2.weight, source.head.fc2.weight)


def test_another_image_size_skips_the_first_dense_layer_whole_and_says_why():
    source, target = _guide(5, size=28, seed=1), _guide(5, size=32, seed=2)
    fresh_bias = target.head.fc1.bias.clone()
    report = transfer_weights(target, source.state_dict(), source="a run", classifier="head.fc2")
    assert report.names(SKIPPED) == ["head.fc1"]
    assert "weights 64×576, model 64×1024" in report.layers[3].detail
    # the layer moves as a whole: its bias (same shape) stays fresh too
    assert torch.equal(target.head.fc1.bias, fresh_bias)
    assert report.new_layers == ["head.fc1", "head.fc2"]
    assert "skipped for shape mismatch (1): head.fc1 (weight: weights 64×576, model 64×1024)" in report.summary()


def test_first_conv_adapted_from_colour_weights():
    source, target = _guide(5, channels=3, seed=1), _guide(5, channels=1, seed=2)
    report = transfer_weights(target, source.state_dict(), source="a run", classifier="head.fc2",
                              first_conv="features.conv1")
    assert report.names(ADAPTED) == ["features.conv1"]
    assert torch.allclose(target.features.conv1.weight, source.features.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(target.features.conv1.bias, source.features.conv1.bias)
    # without first_conv, the same mismatch is a skip
    other = _guide(5, channels=1, seed=3)
    assert "features.conv1" in transfer_weights(other, source.state_dict(), source="x",
                                                classifier="head.fc2").names(SKIPPED)


def test_report_round_trips_through_json_and_lists_layers():
    source, target = _guide(10, seed=1), _guide(5, seed=2)
    report = transfer_weights(target, source.state_dict(), source="checkpoint runs/pre", classifier="head.fc2")
    again = TransferReport.from_json(report.to_json())
    assert again == report
    text = report.summary()
    assert text.splitlines()[0] == "weights: checkpoint runs/pre"
    assert "loaded (4): features.conv1, features.conv2, features.conv3, head.fc1" in text
    assert "re-initialised (1): head.fc2 (new head, 5 outputs, starting at zero)" in text


def test_the_dense_layers_before_the_classifier_are_found_after_the_last_convolution():
    from cnnlab.models.transfer import class_specific_layers

    assert class_specific_layers(_guide(5), "head.fc2") == ("head.fc1",)
    resnet = create_model("resnet18", in_channels=1, num_outputs=5, image_size=(32, 32))
    assert class_specific_layers(resnet, "fc") == ()  # its only dense layer is the classifier
    assert class_specific_layers(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), "2") == ()  # no conv


def test_a_fresh_dense_layer_keeps_its_initialisation_and_trains_with_the_head():
    source, target = _guide(10, seed=1), _guide(5, seed=2)
    initial = target.head.fc1.weight.clone()
    report = transfer_weights(target, source.state_dict(), source="a run", classifier="head.fc2",
                              fresh=("head.fc1",))
    assert report.names(LOADED) == ["features.conv1", "features.conv2", "features.conv3"]
    assert report.new_layers == ["head.fc1", "head.fc2"]
    assert "fitted to the weights' own classes" in report.layers[3].detail
    # random, not zero like the classifier: a zero layer under a zero classifier would get no gradient
    assert torch.equal(target.head.fc1.weight, initial) and not target.head.fc2.weight.any()
    loss = nn.functional.cross_entropy(target(torch.rand(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert target.head.fc2.weight.grad.abs().sum() > 0
