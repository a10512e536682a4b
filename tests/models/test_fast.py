"""fast-cnn: the model of --recipe fast, built as docs/speed.md describes it."""

from __future__ import annotations

import torch

from cnnlab.models.build import create_model
from cnnlab.models.registry import model_entry


def test_description_quotes_the_parameter_count_at_28_pixels():
    model = create_model("fast-cnn", in_channels=1, num_outputs=10, image_size=(28, 28))
    count = sum(p.numel() for p in model.parameters())
    assert count == 166_186
    assert f"{round(count / 1000)}k params at 28×28" in model_entry("fast-cnn").description


def test_each_pool_follows_its_convolution_and_precedes_batch_norm():
    model = create_model("fast-cnn", in_channels=1, num_outputs=10, image_size=(28, 28))
    names = [name for name, _ in model.features.named_children()]
    assert names == ["conv1", "pool1", "bn1", "relu1", "conv2", "pool2", "bn2", "relu2",
                     "conv3", "bn3", "relu3", "conv4", "pool4", "bn4", "relu4"]
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert model.forward_features(torch.zeros(2, 1, 28, 28)).shape == (2, 96, 3, 3)
