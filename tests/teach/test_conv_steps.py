"""`cnnlab explain-conv`: the printed window, products and sum are the hand computation on the
real pixels, and the animation has one frame per kernel position."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import ConfigError
from cnnlab.teach.conv_steps import conv_step, scan_crop
from cnnlab.teach.filtering import apply_kernel, read_image
from cnnlab.teach.kernels import get_kernel
from tests.helpers import run_cli


def _camera() -> np.ndarray:
    from skimage import data

    return data.camera().astype(np.int64)


def test_the_step_is_the_hand_computation_on_real_pixels():
    camera = _camera()
    x, y = 290, 400  # on the tripod's leg: a strong vertical edge
    p = camera[y - 1:y + 2, x - 1:x + 2]  # rows y-1..y+1, columns x-1..x+1
    by_hand = (p[0, 2] + 2 * p[1, 2] + p[2, 2]) - (p[0, 0] + 2 * p[1, 0] + p[2, 0])
    step = conv_step(camera.astype(np.uint8), get_kernel("sobel-x"), x, y)
    assert step.total == by_hand
    np.testing.assert_array_equal(step.window, p)
    np.testing.assert_array_equal(step.products, p * get_kernel("sobel-x").weights)
    assert step.output_position == (x - 1, y - 1)
    # the same number is in the feature map `cnnlab filter` computes with PyTorch
    feature_map = apply_kernel(camera[None].astype(np.uint8), get_kernel("sobel-x")).feature_map[0]
    assert feature_map[y - 1, x - 1] == by_hand


def test_explain_conv_prints_window_kernel_products_and_sum(camera_png, tmp_path):
    camera = _camera()
    x, y = 290, 400
    p = camera[y - 1:y + 2, x - 1:x + 2]
    outcome = run_cli("explain-conv", camera_png, "--kernel", "sobel-x", "--at", f"{x},{y}", cwd=tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    text = outcome.stdout
    for heading in ("pixels under the kernel", "kernel sobel-x", "products (pixel × weight)"):
        assert heading in text
    lines = text.splitlines()
    first_row = next(line for line in lines if line.lstrip().startswith(str(p[0, 0])))
    assert [int(v) for v in first_row.split()[:3]] == p[0].tolist()  # the real pixel values
    middle_row = next(line for line in lines if "×" in line and "=" in line)
    assert middle_row.split()[-3:] == [str(-2 * p[1, 0]), "0", str(2 * p[1, 2])]  # the products
    total = (p[:, 2] * [1, 2, 1]).sum() - (p[:, 0] * [1, 2, 1]).sum()
    assert f"          = {total}" in text
    assert f"feature map at x={x - 1}, y={y - 1}" in text


def test_the_animation_has_one_frame_per_position(camera_png, tmp_path):
    outcome = run_cli("explain-conv", camera_png, "--kernel", "box-blur", "--at", "100,120",
                      "--positions", "5", "-o", tmp_path / "scan.gif")
    assert outcome.exit_code == 0, outcome.stderr
    assert "animation (25 frames)" in outcome.stdout
    with Image.open(tmp_path / "scan.gif") as gif:
        assert gif.n_frames == 25 and gif.is_animated
        assert gif.size[0] > 600 and gif.size[1] > 300


def test_default_animation_is_8_by_8_and_shrinks_near_a_small_image(tmp_path):
    small = tmp_path / "small.png"
    Image.fromarray(_camera()[200:207, 200:207].astype(np.uint8)).save(small)
    outcome = run_cli("explain-conv", small, "--kernel", "sobel-y", "--at", "3,3", cwd=tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    with Image.open(tmp_path / "small-sobel-y-scan.gif") as gif:
        assert gif.n_frames == 25  # a 7×7 image leaves 5×5 positions for a 3×3 kernel


def test_the_crops_feature_map_is_the_images():
    camera = _camera().astype(np.uint8)
    kernel = get_kernel("laplacian")
    crop = scan_crop(camera, kernel, 250, 260, positions=8)
    assert crop.feature_map.shape == (8, 8)
    whole = apply_kernel(camera[None], kernel).feature_map[0]
    np.testing.assert_array_equal(crop.feature_map, whole[crop.top:crop.top + 8, crop.left:crop.left + 8])


def test_colour_images_are_explained_in_grayscale(tmp_path):
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    outcome = run_cli("explain-conv", tmp_path / "astronaut.png", "--kernel", "sharpen", "--at", "200,100",
                      "--positions", "2", cwd=tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    gray = read_image(tmp_path / "astronaut.png", gray=True)[0]
    assert str(gray[99, 199]) in outcome.stdout


@pytest.mark.parametrize("at, message", [
    ("900,3", "--at 900,3: outside the 512×512 image; x (column) goes from 0 to 511"),
    ("0,100", "--at 0,100: a 3×3 window centred there would stick out of the 512×512 image; choose x from 1 "
              "to 510"),
    ("12", "--at '12': give the pixel as X,Y"),
    ("a,b", "--at 'a,b'"),
])
def test_positions_outside_the_image_are_explained(camera_png, tmp_path, at, message):
    outcome = run_cli("explain-conv", camera_png, "--kernel", "sobel-x", "--at", at, cwd=tmp_path)
    assert outcome.exit_code == 2, outcome.stderr
    assert message in outcome.stderr and "Traceback" not in outcome.stderr


def test_a_5x5_kernel_needs_two_pixels_of_margin():
    with pytest.raises(ConfigError, match="choose x from 2 to 509"):
        conv_step(_camera().astype(np.uint8), get_kernel(";".join(["1,1,1,1,1"] * 5)), 1, 100)


def test_without_at_the_step_is_where_the_kernel_responds_most(camera_png, tmp_path):
    """The default --at is the window with the largest |sum| (checked against a brute-force search
    over every window, by hand), so the first step a user sees shows the kernel finding something."""
    from cnnlab.teach.conv_steps import strongest_response

    camera = _camera()[100:160, 200:260]  # a crop keeps the brute force quick
    weights = get_kernel("sobel-x").weights
    sums = {(x, y): abs(float((camera[y - 1:y + 2, x - 1:x + 2] * weights).sum()))
            for y in range(1, camera.shape[0] - 1) for x in range(1, camera.shape[1] - 1)}
    best = max(sums.values())
    x, y = strongest_response(camera.astype(np.uint8), get_kernel("sobel-x"))
    assert sums[(x, y)] == best
    assert (x, y) == min((position for position, value in sums.items() if value == best),
                         key=lambda position: (position[1], position[0]))  # first in reading order

    outcome = run_cli("explain-conv", camera_png, "--kernel", "sobel-x", cwd=tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    x, y = strongest_response(read_image(camera_png, gray=True)[0], get_kernel("sobel-x"))
    assert outcome.stdout.startswith(f"--at {x},{y}: where sobel-x responds most strongly")
    assert f"window centred on pixel x={x}, y={y}" in outcome.stdout
