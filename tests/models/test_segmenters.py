"""Segmenters (models/segmenters.py): logits at the input's resolution for any size, trainable."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models.registry import MODELS


def _parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


@pytest.mark.parametrize("name", ["unet", "unet-small"])
@pytest.mark.parametrize("size", [(32, 32), (64, 48), (37, 53)])
def test_unet_logits_have_the_input_size(name, size):
    entry = MODELS.get(name)
    assert entry.metadata["task"] == "segmentation"
    model = entry.builder(in_channels=1, num_outputs=5, image_size=size).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 1, *size))
    assert tuple(logits.shape) == (2, 5, *size)
