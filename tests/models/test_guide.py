"""guide-cnn: the guide's layers in the guide's order for anyone who looks, pooled before ReLU otherwise."""

from __future__ import annotations

import pytest
import torch

from cnnlab.models.build import create_model


def _guide(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("guide-cnn", in_channels=1, num_outputs=10, image_size=(28, 28))


def _layer_by_layer(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    return model.head(model.features(images))  # nn.Sequential: conv → ReLU → pool, as the guide lists


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pooling_before_relu_gives_the_same_outputs_and_gradients(dtype):
    model = _guide().to(dtype)
    images = torch.randn(32, 1, 28, 28, dtype=dtype)
    fast = model(images)
    fast.square().sum().backward()
    fast_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    guide = _layer_by_layer(model, images)
    guide.square().sum().backward()
    assert torch.equal(fast, guide)
    for a, b in zip(fast_grads, (p.grad for p in model.parameters())):
        assert torch.equal(a, b)


def test_a_hooked_layer_sees_what_the_guide_says_it_sees():
    model = _guide()
    seen = []
    handle = model.features.relu1.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    try:
        model(torch.randn(2, 1, 28, 28))
    finally:
        handle.remove()
    assert seen == [(2, 32, 26, 26)]  # conv1's 26×26 map, not the pooled 13×13 one


def test_a_global_hook_also_keeps_the_guides_order():
    model = _guide()
    shapes = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: shapes.append(tuple(o.shape)) if m is model.features.relu1 else None)
    try:
        model(torch.randn(2, 1, 28, 28))
    finally:
        handle.remove()
    assert shapes == [(2, 32, 26, 26)]
    # and it prints in the guide's order
    assert list(model.features)[1:3] == [model.features.relu1, model.features.pool1]


def test_both_orders_agree_under_bfloat16_autocast_with_channels_last_inputs():
    """As training runs it (the speed itself is measured in benchmarks/, not asserted here)."""
    model = _guide().to(memory_format=torch.channels_last)
    images = torch.randn(4, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(model(images), _layer_by_layer(model, images))
