"""A detector typed in as YAML layers: examples/detector.yaml is cnnlab-det's backbone as a layer list."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.conftest import requires_fashion_mnist
from tests.helpers import run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "detector.yaml"


def test_the_yaml_backbone_gets_the_detection_head_at_stride_4():
    from cnnlab.models.build import create_model
    from cnnlab.models.detectors import detector_on_backbone

    net = detector_on_backbone(str(EXAMPLE), in_channels=1, num_classes=10, image_size=(96, 96))
    assert tuple(net(torch.zeros(2, 1, 96, 96)).shape) == (2, 10 + 4, 24, 24)
    assert net.stride == 4 and len(net.taps) == 3
    # The same five convolutions as cnnlab-det; its neck is a little wider (64 channels at every stride).
    registered = create_model("cnnlab-det", in_channels=1, num_outputs=10, image_size=(96, 96))
    counts = [sum(p.numel() for p in model.parameters()) for model in (net, registered)]
    assert 1.0 <= counts[0] / counts[1] <= 1.1, counts


@requires_fashion_mnist
def test_train_a_detector_from_its_yaml_file(tmp_path):
    outcome = run_cli("train", "--task", "detection", "--data", "fashion-mnist-boxes", "--model", EXAMPLE,
                      "--epochs", 1, "--limit", 64, "--batch-size", 16, "--runs-dir", tmp_path, "--name", "yaml")
    assert outcome.exit_code == 0, outcome.stderr
    config = (tmp_path / "yaml" / "config.yaml").read_text()
    assert "task: detection" in config and "detector.yaml" in config
    assert (tmp_path / "yaml" / "weights" / "best.safetensors").is_file()
