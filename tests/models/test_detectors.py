"""Detectors: one dense tensor out, over cnnlab-det's own backbone or any registry model's."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from cnnlab.errors import ConfigError
from cnnlab.models.build import build_model, create_model, resolve_architecture
from cnnlab.models.detectors import Detector, detector_on_backbone
from cnnlab.models.parts import get_module
from cnnlab.models.registry import model_entry

GUIDE_YAML = str(Path(__file__).resolve().parents[2] / "examples" / "guide-cnn.yaml")


def test_cnnlab_det_outputs_classes_plus_four_channels_at_stride_4_in_both_modes():
    model = create_model("cnnlab-det", in_channels=3, num_outputs=5, image_size=(96, 64))
    assert isinstance(model, Detector) and model.stride == 4 and model.num_classes == 5
    images = torch.randn(2, 3, 96, 64)
    assert model(images).shape == (2, 9, 24, 16)
    assert model.eval()(images).shape == (2, 9, 24, 16)
    entry = model_entry("cnnlab-det")
    assert entry.metadata["task"] == "detection" and entry.metadata["family"] == "detection"
    assert isinstance(get_module(model, entry.metadata["first_conv"]), torch.nn.Conv2d)
    assert get_module(model, entry.metadata["classifier"]).out_channels == 5  # the class heatmaps
    assert model.first_conv_path == entry.metadata["first_conv"]
    assert model.classifier_path == entry.metadata["classifier"]


def test_the_description_quotes_the_parameters_and_arithmetic_at_96_pixels_and_10_classes():
    from cnnlab.models.summary import summarize

    model = create_model("cnnlab-det", in_channels=1, num_outputs=10, image_size=(96, 96))
    summary = summarize(model, (1, 96, 96))
    description = model_entry("cnnlab-det").description
    assert f"{summary.total_params / 1e6:.2f}M params, {summary.mult_adds / 1e6:.1f}M mult-adds at 96×96" \
        in description


def test_the_heatmap_starts_at_one_percent_everywhere():
    model = create_model("cnnlab-det", in_channels=1, num_outputs=10, image_size=(64, 64)).eval()
    with torch.no_grad():
        probabilities = torch.sigmoid(model(torch.randn(4, 1, 64, 64))[:, :10])
    assert probabilities.mean().item() == pytest.approx(0.01, abs=0.003)


@pytest.mark.parametrize("size, message", [
    ((100, 96), "multiples of 16, but the images are 100×96: pass --image-size 96"),
    ((16, 16), "at least 32×32"),
])
def test_cnnlab_det_names_the_image_sizes_it_takes(size, message):
    with pytest.raises(ConfigError, match=message):
        create_model("cnnlab-det", in_channels=1, num_outputs=3, image_size=size)


def test_cnnlab_det_runs_channels_last_and_under_bfloat16_autocast():
    model = create_model("cnnlab-det", in_channels=3, num_outputs=4, image_size=(64, 64))
    model = model.to(memory_format=torch.channels_last)
    images = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(images)
    assert outputs.shape == (2, 8, 16, 16) and outputs.dtype == torch.bfloat16
    assert torch.isfinite(outputs.float()).all()


@pytest.mark.parametrize("name, size, taps", [
    ("guide-cnn", (96, 96), ("relu3",)),  # 'valid' convolutions: 20×20 maps, resized to 24×24
    ("fast-cnn-v2", (96, 96), ("conv3", "relu4")),  # conv3 runs at stride 4, then pool3 halves it
    ("resnet18", (64, 64), ("layer1", "layer2", "layer3", "layer4")),
    (GUIDE_YAML, (96, 96), ("relu3",)),
])
def test_detector_on_backbone_keeps_the_classification_models_layer_names(name, size, taps):
    torch.manual_seed(0)
    detector = detector_on_backbone(name, in_channels=1, num_classes=3, image_size=size)
    assert detector.taps == taps
    images = torch.randn(2, 1, *size)
    assert detector(images).shape == (2, 7, size[0] // 4, size[1] // 4)
    classifier = build_model(resolve_architecture(name), in_channels=1, num_outputs=3, image_size=size)
    wanted = classifier.state_dict()
    kept = detector.backbone.state_dict()
    assert set(kept) <= set(wanted) and kept
    assert all(kept[key].shape == wanted[key].shape for key in kept)
    # classification weights load by name, and the first convolution is among them
    detector.backbone.load_state_dict({key: wanted[key] for key in kept})
    first_conv = get_module(detector, detector.first_conv_path)
    assert isinstance(first_conv, torch.nn.Conv2d) and first_conv.in_channels == 1
    assert f"{detector.first_conv_path}.weight" in {f"backbone.{key}" for key in kept}
    # nothing left that the forward pass does not use (DDP would fail on unused parameters)
    detector(images).sum().backward()
    assert all(parameter.grad is not None for parameter in detector.parameters())


def test_detector_on_backbone_checks_the_stride_and_the_image_size():
    with pytest.raises(ConfigError, match="multiples of 4, but the images are 98×96"):
        detector_on_backbone("fast-cnn-v2", in_channels=1, num_classes=3, image_size=(98, 96))
    with pytest.raises(ConfigError, match="power of two"):
        detector_on_backbone("fast-cnn-v2", in_channels=1, num_classes=3, image_size=(96, 96), stride=3)


def test_a_backbone_coarser_than_the_head_still_gives_the_heads_size():
    # at stride 2 fast-cnn-v2's finest map (stride 2) is tapped; at stride 16 its coarsest (8) is resized down
    fine = detector_on_backbone("fast-cnn-v2", in_channels=1, num_classes=2, image_size=(64, 64), stride=2)
    assert fine.taps == ("conv2", "conv3", "relu4") and fine(torch.zeros(1, 1, 64, 64)).shape == (1, 6, 32, 32)
    coarse = detector_on_backbone("fast-cnn-v2", in_channels=1, num_classes=2, image_size=(64, 64), stride=16)
    assert coarse.taps == ("relu4",) and coarse(torch.zeros(1, 1, 64, 64)).shape == (1, 6, 4, 4)
