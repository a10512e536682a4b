"""The guide's mathematics in plain NumPy: what a CNN computes, forward and backward.

Written to be read next to the guide, not to be fast: the convolution is a loop over window
positions, because that is the idea — lay the kernel on the pixels, multiply, sum, write one
number into the feature map, move on. Everything is float64. Tests check that PyTorch's guide-cnn
computes exactly this, layer by layer and gradient by gradient (tests/explain/test_reference.py).

Shapes: images and feature maps are (N, C, H, W); convolution weights (F, C, k, k) and dense
weights (out, in), PyTorch's layout, so a model's `state_dict` can be used as it is.

    >>> window = np.array([[0, 0, 9], [0, 0, 9], [0, 0, 9]])
    >>> products, total = multiply_and_sum(window, np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]))
    >>> total
    np.int64(36)
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

Params = Mapping[str, np.ndarray]


# --- one step of the scanner ------------------------------------------------------------------


def multiply_and_sum(window: np.ndarray, kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The guide's worked example: the kernel times the pixels under it, element by element, summed."""
    products = window * kernel
    return products, products.sum()


# --- layers, forward -------------------------------------------------------------------------


def pad(images: np.ndarray, padding: int) -> np.ndarray:
    """Surround each feature map with `padding` rows and columns of zeros."""
    return np.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))


def conv2d(images: np.ndarray, weights: np.ndarray, bias: np.ndarray, *, stride: int = 1,
           padding: int = 0) -> np.ndarray:
    """(N, C, H, W) * (F, C, k, k) + (F,) → (N, F, H', W'), H' = (H + 2·padding − k) // stride + 1."""
    images = pad(images, padding)
    count, _, height, width = images.shape
    filters, _, size, _ = weights.shape
    out_height, out_width = (height - size) // stride + 1, (width - size) // stride + 1
    output = np.empty((count, filters, out_height, out_width))
    for row in range(out_height):
        for column in range(out_width):
            top, left = row * stride, column * stride
            window = images[:, :, top:top + size, left:left + size]  # the pixels under the kernel
            # every filter at once: multiply with the window, sum over channels and kernel cells
            output[:, :, row, column] = np.einsum("nchw,fchw->nf", window, weights) + bias
    return output


def relu(values: np.ndarray) -> np.ndarray:
    return np.maximum(values, 0.0)


def max_pool(maps: np.ndarray, size: int = 2) -> np.ndarray:
    """Keep the largest value of each size×size block (leftover rows/columns are dropped)."""
    count, channels, height, width = maps.shape
    rows, columns = height // size, width // size
    blocks = maps[:, :, :rows * size, :columns * size].reshape(count, channels, rows, size, columns, size)
    return blocks.max(axis=(3, 5))


def flatten(maps: np.ndarray) -> np.ndarray:
    """(N, C, H, W) → (N, C·H·W), channel by channel, row by row (PyTorch's order)."""
    return maps.reshape(len(maps), -1)


def dense(inputs: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Every output is a weighted sum of every input, plus a bias: (N, in) → (N, out)."""
    return inputs @ weights.T + bias


def softmax(logits: np.ndarray) -> np.ndarray:
    """Scores → probabilities that sum to 1; subtracting the max first changes nothing but avoids overflow."""
    exponentials = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exponentials / exponentials.sum(axis=1, keepdims=True)


def cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean over the batch of −log(probability given to the true class)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probabilities = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probabilities[np.arange(len(targets)), targets].mean())


# --- layers, backward: from d(loss)/d(output) to d(loss)/d(input) and to the parameters ---------


def cross_entropy_backward(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """d(mean loss)/d(logits) = (softmax − one-hot of the true class) / N."""
    gradient = softmax(logits)
    gradient[np.arange(len(targets)), targets] -= 1.0
    return gradient / len(targets)


def dense_backward(grad_output: np.ndarray, inputs: np.ndarray,
                   weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """→ (d/d inputs, d/d weights, d/d bias)."""
    return grad_output @ weights, grad_output.T @ inputs, grad_output.sum(axis=0)


def relu_backward(grad_output: np.ndarray, inputs: np.ndarray) -> np.ndarray:
    """The gradient passes where the input was positive and stops where ReLU output 0."""
    return grad_output * (inputs > 0)


def max_pool_backward(grad_output: np.ndarray, maps: np.ndarray, size: int = 2) -> np.ndarray:
    """Each block's gradient goes to the one value that was the max (the first, on a tie)."""
    grad_maps = np.zeros_like(maps)
    _, _, rows, columns = grad_output.shape
    for row in range(rows):
        for column in range(columns):
            block = maps[:, :, row * size:(row + 1) * size, column * size:(column + 1) * size]
            flat = block.reshape(*block.shape[:2], -1)
            winner = flat == flat.max(axis=2, keepdims=True)
            winner &= np.cumsum(winner, axis=2) == 1  # keep only the first max
            grad_block = winner * grad_output[:, :, row, column][..., None]
            grad_maps[:, :, row * size:(row + 1) * size, column * size:(column + 1) * size] = \
                grad_block.reshape(block.shape)
    return grad_maps


def conv2d_backward(grad_output: np.ndarray, images: np.ndarray, weights: np.ndarray, *, stride: int = 1,
                    padding: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """→ (d/d images, d/d weights, d/d bias). Each window position sent its products to one output,
    so the output's gradient flows back to exactly that window and those weights."""
    padded = pad(images, padding)
    grad_padded = np.zeros_like(padded)
    grad_weights = np.zeros_like(weights)
    size = weights.shape[2]
    _, _, out_height, out_width = grad_output.shape
    for row in range(out_height):
        for column in range(out_width):
            top, left = row * stride, column * stride
            window = padded[:, :, top:top + size, left:left + size]
            grad_here = grad_output[:, :, row, column]  # (N, F)
            grad_weights += np.einsum("nf,nchw->fchw", grad_here, window)
            grad_window = np.einsum("nf,fchw->nchw", grad_here, weights)
            grad_padded[:, :, top:top + size, left:left + size] += grad_window
    height, width = images.shape[2:]
    grad_images = grad_padded[:, :, padding:padding + height, padding:padding + width]
    return grad_images, grad_weights, grad_output.sum(axis=(0, 2, 3))


# --- the guide's whole network ---------------------------------------------------------------

def guide_forward(params: Params, images: np.ndarray) -> dict[str, np.ndarray]:
    """Conv → ReLU → MaxPool → Conv → ReLU → MaxPool → Conv → ReLU → Flatten → Dense → ReLU → Dense.

    `params` are keyed like guide-cnn's `state_dict` ("features.conv1.weight", ...). Returns every
    layer's output by guide-cnn's layer names ("conv1" ... "fc2", the logits); "images" is the input.
    """
    outputs = {"images": images}
    def conv(inputs: np.ndarray, name: str) -> np.ndarray:
        return conv2d(inputs, params[f"features.{name}.weight"], params[f"features.{name}.bias"])

    outputs["conv1"] = conv(images, "conv1")
    outputs["relu1"] = relu(outputs["conv1"])
    outputs["pool1"] = max_pool(outputs["relu1"])
    outputs["conv2"] = conv(outputs["pool1"], "conv2")
    outputs["relu2"] = relu(outputs["conv2"])
    outputs["pool2"] = max_pool(outputs["relu2"])
    outputs["conv3"] = conv(outputs["pool2"], "conv3")
    outputs["relu3"] = relu(outputs["conv3"])
    outputs["flatten"] = flatten(outputs["relu3"])
    outputs["fc1"] = dense(outputs["flatten"], params["head.fc1.weight"], params["head.fc1.bias"])
    outputs["relu4"] = relu(outputs["fc1"])
    outputs["fc2"] = dense(outputs["relu4"], params["head.fc2.weight"], params["head.fc2.bias"])
    return outputs


def guide_backward(params: Params, outputs: dict[str, np.ndarray],
                   targets: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of the mean cross-entropy loss for every parameter, by backpropagation: the
    forward pass run in reverse, each layer turning d(loss)/d(its output) into d(loss)/d(its input)."""
    grads: dict[str, np.ndarray] = {}
    grad = cross_entropy_backward(outputs["fc2"], targets)
    grad, grads["head.fc2.weight"], grads["head.fc2.bias"] = dense_backward(grad, outputs["relu4"],
                                                                            params["head.fc2.weight"])
    grad = relu_backward(grad, outputs["fc1"])
    grad, grads["head.fc1.weight"], grads["head.fc1.bias"] = dense_backward(grad, outputs["flatten"],
                                                                            params["head.fc1.weight"])
    grad = grad.reshape(outputs["relu3"].shape)  # un-flatten
    grad = relu_backward(grad, outputs["conv3"])
    grad, grads["features.conv3.weight"], grads["features.conv3.bias"] = conv2d_backward(
        grad, outputs["pool2"], params["features.conv3.weight"])
    grad = max_pool_backward(grad, outputs["relu2"])
    grad = relu_backward(grad, outputs["conv2"])
    grad, grads["features.conv2.weight"], grads["features.conv2.bias"] = conv2d_backward(
        grad, outputs["pool1"], params["features.conv2.weight"])
    grad = max_pool_backward(grad, outputs["relu1"])
    grad = relu_backward(grad, outputs["conv1"])
    _, grads["features.conv1.weight"], grads["features.conv1.bias"] = conv2d_backward(
        grad, outputs["images"], params["features.conv1.weight"])
    return grads


def sgd_step(params: Params, grads: Params, learning_rate: float) -> dict[str, np.ndarray]:
    """One step downhill: every parameter moves against its gradient, scaled by the learning rate."""
    return {name: value - learning_rate * grads[name] for name, value in params.items()}
