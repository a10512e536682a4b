"""2×2 max-pooling without indices: PyTorch's max-pool's numbers, used only where no gradient is wanted."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models.build import create_model
from cnnlab.models.pooling import is_plain_2x2, max_pool_2x2, pool_for_inference


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("side", [(26, 26), (11, 11), (7, 10)])
def test_the_same_numbers_as_max_pool(dtype, channels_last, side):
    generator = torch.Generator().manual_seed(0)
    maps = torch.randn(3, 5, *side, generator=generator).to(dtype)
    maps[0, 0, :2, :2] = 1.5  # a tie inside a window
    maps[1, 2, 2, 3] = float("nan")  # a NaN wins its window, as in max-pool
    if channels_last:
        maps = maps.contiguous(memory_format=torch.channels_last)
    pooled = max_pool_2x2(maps)
    expected = F.max_pool2d(maps, 2)
    assert pooled.shape == expected.shape == (3, 5, side[0] // 2, side[1] // 2)
    assert pooled.dtype == dtype
    assert torch.equal(pooled.nan_to_num(-7.0), expected.nan_to_num(-7.0))
    assert pooled[1, 2, 1, 1].isnan()


def test_only_a_plain_2x2_max_pool_is_replaced():
    assert is_plain_2x2(nn.MaxPool2d(2)) and is_plain_2x2(nn.MaxPool2d((2, 2), stride=2))
    for other in (nn.MaxPool2d(3, stride=2), nn.MaxPool2d(2, stride=1), nn.MaxPool2d(2, padding=1),
                  nn.MaxPool2d(2, ceil_mode=True), nn.MaxPool2d(2, return_indices=True), nn.AvgPool2d(2)):
        assert not is_plain_2x2(other), other
    maps = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(pool_for_inference(nn.MaxPool2d(2, ceil_mode=True), maps),
                           F.max_pool2d(maps, 2, ceil_mode=True))  # 5×5: the module's own pooling


def test_training_keeps_pytorchs_pooling_and_its_gradient():
    maps = torch.ones(1, 1, 2, 2, requires_grad=True)  # four tied values: max-pool's gradient goes to one
    pooled = pool_for_inference(nn.MaxPool2d(2), maps)
    pooled.sum().backward()
    assert "MaxPool2DWithIndices" in type(pooled.grad_fn).__name__
    assert maps.grad.sum().item() == 1.0 and (maps.grad == 1).sum().item() == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_guide_cnn_predicts_the_same_as_layer_by_layer(dtype):
    torch.manual_seed(0)
    model = create_model("guide-cnn", in_channels=1, num_outputs=10, image_size=(28, 28)).eval().to(dtype)
    images = torch.randn(16, 1, 28, 28).to(dtype).contiguous(memory_format=torch.channels_last)
    model.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        predicted = model(images)
        listed = model.head(model.features(images))  # conv → ReLU → nn.MaxPool2d, as the guide lists
    assert torch.equal(predicted, listed)


def test_a_traced_or_exported_guide_cnn_keeps_its_max_pools():
    torch.manual_seed(0)
    model = create_model("guide-cnn", in_channels=1, num_outputs=10, image_size=(28, 28)).eval()
    images = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        traced = torch.jit.trace(model, images)  # checks its graph against a second trace: one path
        exported = torch.export.export(model, (images,))
    graph = str(traced.inlined_graph)
    assert graph.count("aten::max_pool2d") == 2 and "aten::maximum" not in graph
    assert str(exported.graph).count("aten.max_pool2d.default](") == 2 and "maximum" not in str(exported.graph)
    with torch.inference_mode():
        assert torch.equal(traced(images), model(images))
