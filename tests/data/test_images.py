"""Decoding real-world image files: every mode Pillow opens ends as 1×H×W or 3×H×W uint8."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.data.images import load_image_array, normalize_mode, open_image, probe_image
from cnnlab.errors import UnreadableImageError


def test_grayscale_becomes_one_channel_with_the_same_values(tmp_path):
    values = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    Image.fromarray(values, mode="L").save(tmp_path / "g.png")
    array = load_image_array(tmp_path / "g.png", channels=1, size=(8, 8))
    assert array.shape == (1, 8, 8) and array.dtype == np.uint8
    np.testing.assert_array_equal(array[0], values)


def test_colour_becomes_three_channels_in_rgb_order(tmp_path):
    from skimage.data import astronaut

    photo = astronaut()  # real 512×512 RGB photo
    Image.fromarray(photo).save(tmp_path / "astronaut.png")
    array = load_image_array(tmp_path / "astronaut.png", channels=3, size=(512, 512))
    assert array.shape == (3, 512, 512)
    np.testing.assert_array_equal(array.transpose(1, 2, 0), photo)


def test_colour_to_grayscale_uses_luminance(tmp_path):
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "red.png")
    array = load_image_array(tmp_path / "red.png", channels=1, size=(4, 4))
    assert int(array[0, 0, 0]) == 76  # ITU-R 601: 0.299 * 255


def test_resize_to_requested_height_and_width(tmp_path):
    from skimage.data import camera

    Image.fromarray(camera()).save(tmp_path / "camera.png")
    array = load_image_array(tmp_path / "camera.png", channels=3, size=(32, 48))
    assert array.shape == (3, 32, 48)
    assert (array[0] == array[1]).all() and (array[1] == array[2]).all()  # gray replicated


def test_exif_orientation_is_applied(tmp_path):
    # A 20 wide × 10 high image whose EXIF says "rotate 90°": viewers show it 10 wide × 20 high.
    pixels = np.zeros((10, 20), dtype=np.uint8)
    pixels[:, :10] = 255  # left half white
    image = Image.fromarray(pixels, mode="L")
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    image.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=100)
    assert probe_image(tmp_path / "rotated.jpg")[:2] == (10, 20)
    array = load_image_array(tmp_path / "rotated.jpg", channels=1, size=(20, 10))
    assert array.shape == (1, 20, 10)
    assert array[0, :10].mean() > 200 and array[0, 10:].mean() < 50  # white half is now on top


def test_palette_image_keeps_its_colours(tmp_path):
    rgb = Image.new("RGB", (6, 6), (10, 200, 30))
    rgb.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    array = load_image_array(tmp_path / "palette.png", channels=3, size=(6, 6))
    assert tuple(array[:, 0, 0]) == (10, 200, 30)


def test_transparent_pixels_are_composited_onto_white(tmp_path):
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent black...
    rgba[0, 0] = (255, 0, 0, 255)  # ...except one opaque red pixel
    rgba[0, 1] = (0, 0, 255, 128)  # and one half-transparent blue pixel
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    array = load_image_array(tmp_path / "rgba.png", channels=3, size=(4, 4))
    assert tuple(array[:, 3, 3]) == (255, 255, 255)
    assert tuple(array[:, 0, 0]) == (255, 0, 0)
    assert tuple(int(v) for v in array[:, 0, 1]) == pytest.approx((127, 127, 255), abs=1)


def test_palette_with_transparency_is_composited(tmp_path):
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.putpixel((1, 1), 1)
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png", transparency=0)
    array = load_image_array(tmp_path / "p.png", channels=3, size=(4, 4))
    assert tuple(array[:, 0, 0]) == (255, 255, 255)
    assert tuple(array[:, 1, 1]) == (255, 0, 0)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    array = load_image_array(tmp_path / "cmyk.jpg", channels=3, size=(8, 8))
    red, green, blue = (int(v) for v in array[:, 4, 4])
    assert red > 240 and green < 15 and blue < 15


def test_16_bit_image_is_scaled_from_its_full_range(tmp_path):
    values = np.array([[0, 65535], [32896, 257 * 100]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "xray16.png")
    assert Image.open(tmp_path / "xray16.png").mode.startswith("I")
    array = load_image_array(tmp_path / "xray16.png", channels=1, size=(2, 2))
    np.testing.assert_array_equal(array[0], [[0, 255], [128, 100]])


def test_12_bit_data_in_a_16_bit_file_keeps_its_grey_levels(tmp_path):
    """An X-ray exported as 16-bit PNG with 12-bit values (0–4095): scaled from 65535 it would
    become 0–16, 17 grey levels; scaled from 4095 it keeps them apart."""
    values = np.arange(0, 4096, 16, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(values).save(tmp_path / "xray12.png")
    array = load_image_array(tmp_path / "xray12.png", channels=1, size=(16, 16))[0]
    np.testing.assert_array_equal(array, np.rint(values * (255 / 4095)).astype(np.uint8))
    assert len(np.unique(array)) >= 250  # (from 65535: 17)


def test_float_image_in_unit_range(tmp_path):
    image = Image.fromarray(np.array([[0.0, 1.0], [0.5, 0.25]], dtype=np.float32), mode="F")
    np.testing.assert_array_equal(np.asarray(normalize_mode(image)), [[0, 255], [128, 64]])


@pytest.mark.parametrize(
    "name, content, reason",
    [
        ("empty.png", b"", "empty"),
        ("notes.jpg", b"this is a text file, not a JPEG\n", "not an image"),
    ],
)
def test_unreadable_files_name_the_path_and_reason(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableImageError) as caught:
        open_image(path)
    assert caught.value.path == str(path)
    assert reason in str(caught.value)


def test_truncated_png_is_reported(tmp_path):
    from skimage.data import coffee

    Image.fromarray(coffee()).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "truncated.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UnreadableImageError, match="truncated.png"):
        open_image(tmp_path / "truncated.png")


def test_files_are_never_modified(tmp_path):
    from skimage.data import chelsea

    Image.fromarray(chelsea()).save(tmp_path / "cat.jpg")
    before = (tmp_path / "cat.jpg").read_bytes()
    load_image_array(tmp_path / "cat.jpg", channels=1, size=(16, 16))
    assert (tmp_path / "cat.jpg").read_bytes() == before


def test_png_with_corrupted_pixel_data_is_reported_not_fatal(tmp_path):
    # One flipped byte in the compressed pixels. torchvision 0.29's libpng decoder takes the whole
    # process down on this file (segmentation fault), which is why cnnlab decodes with Pillow.
    from skimage.data import camera

    Image.fromarray(camera()[::8, ::8]).save(tmp_path / "whole.png")
    data = bytearray((tmp_path / "whole.png").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "flipped.png").write_bytes(bytes(data))
    with pytest.raises(UnreadableImageError, match="flipped.png"):
        load_image_array(tmp_path / "flipped.png", channels=1, size=(64, 64))


def test_exif_orientation_in_a_png_is_applied(tmp_path):
    pixels = np.zeros((16, 16), dtype=np.uint8)
    pixels[:8] = 255  # top half white
    image = Image.fromarray(pixels, mode="L")
    exif = image.getexif()
    exif[0x0112] = 3  # rotate 180° to display
    image.save(tmp_path / "upside_down.png", exif=exif.tobytes())
    array = load_image_array(tmp_path / "upside_down.png", channels=1, size=(16, 16))
    assert array[0, 8:].min() == 255 and array[0, :8].max() == 0  # white is now at the bottom


def test_image_files_below_in_a_stable_order_without_hidden_or_other_files(tmp_path):
    from cnnlab.data.images import image_files_below

    for name in ["b.png", "a.JPG", "notes.txt", "._a.jpg", "z/c.png", "z/y/d.png", "m/e.webp", ".cache/f.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    found = [path.relative_to(tmp_path).as_posix() for path in image_files_below(tmp_path)]
    assert found == ["a.JPG", "b.png", "m/e.webp", "z/c.png", "z/y/d.png"]
