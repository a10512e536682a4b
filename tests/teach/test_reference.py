"""PyTorch's guide-cnn computes exactly the guide's mathematics, as written out in NumPy
(`cnnlab.teach.reference`): every layer's output, the loss, every gradient and one SGD step,
in float64, to 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from cnnlab.teach import reference
from cnnlab.models.registry import model_entry

TOLERANCE = {"rtol": 1e-6, "atol": 1e-6}


def _real_images(count: int = 4, side: int = 28) -> np.ndarray:
    """Crops of scikit-image's photographs, scaled 0–1 and centred: (count, 1, side, side) float64."""
    from skimage import data, transform

    photos = [data.camera(), data.coins(), data.moon(), data.page()]
    crops = [transform.resize(photo, (side, side), anti_aliasing=True) for photo in photos[:count]]
    images = np.stack(crops)[:, None].astype(np.float64)
    return (images - images.mean()) / images.std()


def _guide_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = model_entry("guide-cnn").builder(in_channels=1, num_outputs=10, image_size=(28, 28))
    return model.double().eval()


def _params(model: torch.nn.Module) -> dict[str, np.ndarray]:
    return {name: value.detach().numpy().copy() for name, value in model.state_dict().items()}


def _torch_layer_outputs(model: torch.nn.Module, images: torch.Tensor) -> dict[str, torch.Tensor]:
    outputs = {}
    value = images
    for name, layer in [*model.features.named_children(), *model.head.named_children()]:
        value = layer(value)
        outputs[name] = value
    return outputs


def _compare_forward_and_backward(model: torch.nn.Module, images: np.ndarray, targets: np.ndarray) -> None:
    params = _params(model)
    expected = reference.guide_forward(params, images)
    torch_images = torch.from_numpy(images)
    actual = _torch_layer_outputs(model, torch_images)
    assert set(actual) <= set(expected)
    for name, value in actual.items():
        np.testing.assert_allclose(value.detach().numpy(), expected[name], **TOLERANCE, err_msg=name)

    logits = model(torch_images)
    loss = F.cross_entropy(logits, torch.from_numpy(targets))
    assert loss.item() == pytest.approx(reference.cross_entropy(expected["fc2"], targets), abs=1e-6)
    np.testing.assert_allclose(torch.softmax(logits, 1).detach().numpy(), reference.softmax(expected["fc2"]),
                               **TOLERANCE)

    model.zero_grad()
    loss.backward()
    grads = reference.guide_backward(params, expected, targets)
    assert set(grads) == {name for name, _ in model.named_parameters()}
    for name, parameter in model.named_parameters():
        assert np.abs(parameter.grad.numpy()).max() > 0, name  # a real gradient, not all zeros
        np.testing.assert_allclose(parameter.grad.numpy(), grads[name], **TOLERANCE, err_msg=name)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimizer.step()
    stepped = reference.sgd_step(params, grads, 0.1)
    for name, parameter in model.named_parameters():
        np.testing.assert_allclose(parameter.detach().numpy(), stepped[name], **TOLERANCE, err_msg=name)


def test_reference_equals_pytorch_guide_cnn_forward_backward_and_sgd_step():
    _compare_forward_and_backward(_guide_model(), _real_images(), np.array([3, 1, 4, 1]))


def test_reference_equals_a_trained_guide_cnn_on_fashion_mnist(guide_run):
    import cnnlab
    from cnnlab.data.named import open_named

    trained = cnnlab.load(guide_run, device="cpu")
    source = open_named("fashion-mnist", split="test")
    pixels = torch.from_numpy(source.pixels[:6])[:, None]
    images = trained.input.normalizer()(pixels).double().numpy()
    _compare_forward_and_backward(trained.model.double(), images, source.targets[:6])


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), (3, 2)])
def test_conv2d_and_its_gradients_with_stride_and_padding(stride, padding):
    generator = torch.Generator().manual_seed(stride)
    images = torch.randn(2, 3, 11, 9, dtype=torch.float64, generator=generator, requires_grad=True)
    weights = torch.randn(4, 3, 3, 3, dtype=torch.float64, generator=generator, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, generator=generator, requires_grad=True)
    output = F.conv2d(images, weights, bias, stride=stride, padding=padding)
    expected = reference.conv2d(images.detach().numpy(), weights.detach().numpy(), bias.detach().numpy(),
                                stride=stride, padding=padding)
    np.testing.assert_allclose(output.detach().numpy(), expected, **TOLERANCE)

    grad_output = torch.randn_like(output)
    output.backward(grad_output)
    grad_images, grad_weights, grad_bias = reference.conv2d_backward(
        grad_output.numpy(), images.detach().numpy(), weights.detach().numpy(), stride=stride,
        padding=padding)
    np.testing.assert_allclose(images.grad.numpy(), grad_images, **TOLERANCE)
    np.testing.assert_allclose(weights.grad.numpy(), grad_weights, **TOLERANCE)
    np.testing.assert_allclose(bias.grad.numpy(), grad_bias, **TOLERANCE)


def test_max_pool_drops_leftovers_and_routes_gradients_to_the_max():
    maps = torch.randn(2, 3, 13, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(5),
                       requires_grad=True)
    pooled = F.max_pool2d(maps, 2)
    np.testing.assert_array_equal(pooled.detach().numpy(), reference.max_pool(maps.detach().numpy()))
    grad_output = torch.randn_like(pooled)
    pooled.backward(grad_output)
    np.testing.assert_array_equal(maps.grad.numpy(),
                                  reference.max_pool_backward(grad_output.numpy(), maps.detach().numpy()))


def test_the_guides_worked_example():
    window = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    products, total = reference.multiply_and_sum(window, np.array([[1, 0, -1], [1, 0, -1], [1, 0, -1]]))
    assert products.tolist() == [[1, 0, -3], [4, 0, -6], [7, 0, -9]] and total == -6
