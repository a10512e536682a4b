"""The classic-kernel registry: each kernel does what its one-line description says."""

from __future__ import annotations

import numpy as np
import pytest

from cnnlab.errors import ConfigError
from cnnlab.teach.filtering import apply_kernel
from cnnlab.teach.kernels import KERNELS, get_kernel, list_kernels, parse_matrix
from tests.helpers import run_cli


def _step_edge(dark: int = 20, bright: int = 220, size: int = 8, vertical: bool = True) -> np.ndarray:
    """A real step edge: dark on the left (or top), bright from column (row) 4 on."""
    image = np.full((1, size, size), dark, dtype=np.uint8)
    if vertical:
        image[:, :, size // 2:] = bright
    else:
        image[:, size // 2:, :] = bright
    return image


def test_the_classic_kernels_are_registered():
    names = {name for name, _ in list_kernels()}
    assert {"identity", "sobel-x", "sobel-y", "laplacian", "box-blur", "gaussian-blur", "sharpen",
            "emboss"} <= names
    assert all(description for _, description in list_kernels())


@pytest.mark.parametrize("name", KERNELS.names())
def test_every_kernel_is_odd_square_and_leaves_flat_images_flat(name):
    kernel = get_kernel(name)
    assert kernel.weights.shape[0] == kernel.weights.shape[1] and kernel.size % 2 == 1
    flat = np.full((1, 6, 6), 100, dtype=np.uint8)
    response = apply_kernel(flat, kernel).feature_map
    # on a flat image a kernel outputs 100 × (sum of its weights) everywhere
    np.testing.assert_allclose(response, 100 * kernel.weights.sum())


def test_sobel_x_on_a_vertical_step_edge():
    response = apply_kernel(_step_edge(), get_kernel("sobel-x")).feature_map[0]
    # windows straddling the edge see (1 + 2 + 1) × (220 − 20) = 800; flat windows 0
    expected_row = [0, 0, 800, 800, 0, 0]
    np.testing.assert_array_equal(response, np.tile(expected_row, (6, 1)))
    assert not apply_kernel(_step_edge(), get_kernel("sobel-y")).feature_map.any()  # no horizontal edge


def test_sobel_y_on_a_horizontal_step_edge():
    response = apply_kernel(_step_edge(vertical=False), get_kernel("sobel-y")).feature_map[0]
    np.testing.assert_array_equal(response[:, 0], [0, 0, 800, 800, 0, 0])
    edge = _step_edge(dark=220, bright=20)  # bright to dark: the response changes sign
    assert apply_kernel(edge, get_kernel("sobel-x")).feature_map.min() == -800


def test_identity_returns_the_image(camera_png):
    from cnnlab.teach.filtering import read_image

    pixels = read_image(camera_png)
    response = apply_kernel(pixels, get_kernel("identity"), padding="same").feature_map
    np.testing.assert_array_equal(response, pixels)


def test_box_blur_averages_each_neighbourhood(camera_png):
    from cnnlab.teach.filtering import read_image

    pixels = read_image(camera_png)[:, 100:110, 200:210].astype(np.float64)
    response = apply_kernel(pixels.astype(np.uint8), get_kernel("box-blur")).feature_map[0]
    assert response[3, 4] == pytest.approx(pixels[0, 3:6, 4:7].mean())


def test_laplacian_is_zero_on_a_linear_ramp_and_not_at_a_corner():
    ramp = np.tile(np.arange(0, 80, 10, dtype=np.uint8), (8, 1))[None]
    np.testing.assert_allclose(apply_kernel(ramp, get_kernel("laplacian")).feature_map, 0)
    corner = np.zeros((1, 5, 5), dtype=np.uint8)
    corner[0, 2, 2] = 50
    assert apply_kernel(corner, get_kernel("laplacian")).feature_map[0, 1, 1] == -200


def test_a_typed_matrix_of_any_odd_size():
    assert parse_matrix("1,2,3;4,5,6;7,8,9")[2, 0] == 7
    five = get_kernel(";".join([",".join(["1/25"] * 5)] * 5))
    assert five.size == 5 and five.weights.sum() == pytest.approx(1.0) and five.name == "custom"
    spaced = get_kernel(" -1 , 0 , 1 ; -2,0,2 ; -1,0,1 ")
    assert spaced.weights.tolist() == get_kernel("sobel-x").weights.tolist()


@pytest.mark.parametrize("text, message", [
    ("1,2;3,4", "odd size"),
    ("1,2,3;4,5", "must be square"),
    ("1,2,3;4,x,6;7,8,9", "'x' is not a number"),
    ("1,2,3;4,,6;7,8,9", "'' is not a number"),
    ("sobel", "unknown kernel 'sobel'"),
])
def test_malformed_kernels_name_the_flag(text, message):
    with pytest.raises(ConfigError, match=message) as raised:
        get_kernel(text)
    assert "--kernel" in str(raised.value) or "unknown kernel" in str(raised.value)


def test_unknown_kernel_suggests_the_close_one():
    with pytest.raises(ConfigError, match="Did you mean sobel-x"):
        get_kernel("sobelx")


def test_kernels_command_lists_the_registry():
    outcome = run_cli("kernels")
    assert outcome.exit_code == 0
    listed = [line.split()[0] for line in outcome.stdout.splitlines() if not line.startswith("or ")]
    assert listed == KERNELS.names()
