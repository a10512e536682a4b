"""`cnnlab filter`: stride, padding and pooling give the guide's output sizes; colour is per channel."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import ConfigError
from cnnlab.teach import reference
from cnnlab.teach.filtering import apply_kernel, read_image
from cnnlab.teach.kernels import get_kernel
from tests.helpers import run_cli


@pytest.mark.parametrize("kernel, stride, padding, expected", [
    ("sobel-x", 1, "0", (510, 510)),
    ("sobel-x", 1, "same", (512, 512)),
    ("sobel-x", 2, "0", (255, 255)),
    ("sobel-x", 2, "1", (256, 256)),
    ("sobel-x", 3, "valid", (170, 170)),
    ("1,1,1,1,1;1,1,1,1,1;1,1,1,1,1;1,1,1,1,1;1,1,1,1,1", 1, "0", (508, 508)),
    ("1,1,1,1,1;1,1,1,1,1;1,1,1,1,1;1,1,1,1,1;1,1,1,1,1", 1, "same", (512, 512)),
    ("1,1,1,1,1;1,1,1,1,1;1,1,1,1,1;1,1,1,1,1;1,1,1,1,1", 4, "2", (128, 128)),
])
def test_output_size_is_the_guides_formula(camera_png, kernel, stride, padding, expected):
    pixels = read_image(camera_png)
    result = apply_kernel(pixels, get_kernel(kernel), stride=stride, padding=padding)
    assert result.feature_map.shape == (1, *expected)
    size, pad = get_kernel(kernel).size, result.padding
    assert expected[0] == (512 + 2 * pad - size) // stride + 1


def test_torch_filter_equals_the_numpy_reference_with_stride_and_padding(camera_png):
    pixels = read_image(camera_png)[:, :40, :50]
    kernel = get_kernel("emboss")
    result = apply_kernel(pixels, kernel, stride=2, padding=1)
    expected = reference.conv2d(pixels[None].astype(np.float64), kernel.weights[None, None], np.zeros(1),
                                stride=2, padding=1)[0]
    np.testing.assert_allclose(result.feature_map, expected)


def test_pooling_shrinks_the_map(camera_png):
    pixels = read_image(camera_png)
    result = apply_kernel(pixels, get_kernel("sobel-x"), pool="max", pool_size=2)
    assert result.pooled.shape == (1, 255, 255)
    block = result.feature_map[0, 10:12, 20:22]
    assert result.pooled[0, 5, 10] == block.max()
    averaged = apply_kernel(pixels, get_kernel("sobel-x"), pool="avg", pool_size=3)
    assert averaged.pooled.shape == (1, 170, 170)
    assert averaged.pooled[0, 0, 0] == pytest.approx(averaged.feature_map[0, :3, :3].mean())


def test_colour_images_are_filtered_channel_by_channel(tmp_path):
    from skimage import data

    rgb = data.astronaut()[:64, :64]
    pixels = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    result = apply_kernel(pixels, get_kernel("sobel-y"))
    assert result.feature_map.shape == (3, 62, 62)
    for channel in range(3):
        alone = apply_kernel(pixels[channel:channel + 1], get_kernel("sobel-y")).feature_map[0]
        np.testing.assert_array_equal(result.feature_map[channel], alone)


@pytest.mark.parametrize("args, message", [
    (("--stride", "0"), "--stride 0"),
    (("--padding", "lots"), "--padding 'lots'"),
    (("--pool", "max", "--pool-size", "600"), "--pool-size 600"),
    (("--kernel", "1,2;3,4"), "--kernel '1,2;3,4'"),
])
def test_bad_filter_arguments_get_one_clear_line(camera_png, tmp_path, args, message):
    arguments = ["filter", camera_png, *args]
    if "--kernel" not in args:
        arguments += ["--kernel", "sobel-x"]
    outcome = run_cli(*arguments, cwd=tmp_path)
    assert outcome.exit_code == 2, outcome.stderr
    assert message in outcome.stderr and "Traceback" not in outcome.stderr


def test_filter_command_writes_the_map_the_pooled_map_and_a_figure(camera_png, tmp_path):
    outcome = run_cli("filter", camera_png, "--kernel", "sobel-x", "--pool", "max", cwd=tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    feature_map = Image.open(tmp_path / "camera-sobel-x.png")
    assert feature_map.size == (510, 510) and feature_map.mode == "L"
    assert Image.open(tmp_path / "camera-sobel-x-maxpool2.png").size == (255, 255)
    assert Image.open(tmp_path / "camera-sobel-x-figure.png").size[0] > 1000
    assert "feature map 1×510×510 (mid-grey = 0" in outcome.stdout
    # zero response (flat sky) is mid-grey in the saved map
    assert abs(int(np.asarray(feature_map)[20, 20]) - 128) <= 2


def test_blur_keeps_pixel_values_and_colour(tmp_path):
    from skimage import data

    Image.fromarray(data.astronaut()).save(tmp_path / "astronaut.png")
    outcome = run_cli("filter", tmp_path / "astronaut.png", "--kernel", "gaussian-blur", "--padding", "same",
                      "--stride", "2", "-o", tmp_path / "out" / "blur.png")
    assert outcome.exit_code == 0, outcome.stderr
    saved = Image.open(tmp_path / "out" / "blur.png")
    assert saved.mode == "RGB" and saved.size == (256, 256)
    assert "pixel values kept" in outcome.stdout
    assert (tmp_path / "out" / "blur-figure.png").is_file()
    gray = run_cli("filter", tmp_path / "astronaut.png", "--kernel", "identity", "--gray",
                   "-o", tmp_path / "g.png")
    assert gray.exit_code == 0 and Image.open(tmp_path / "g.png").mode == "L"


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    outcome = run_cli("filter", tmp_path / "notes.png", "--kernel", "sobel-x", cwd=tmp_path)
    assert outcome.exit_code == 2 and "notes.png" in outcome.stderr


def test_kernel_larger_than_the_image_is_refused():
    with pytest.raises(ConfigError, match="does not fit"):
        apply_kernel(np.zeros((1, 2, 2), dtype=np.uint8), get_kernel("sobel-x"))
