"""Hostile image files: decompression bombs, headers that claim billions of pixels, files that are not
regular files (FIFOs, devices, folders named x.png), and numeric images of no fixed range. Each is
refused and named (skipped like any unreadable file), never a traceback, a hang or a huge decode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import cnnlab
from cnnlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, load_image_array, probe_image
from cnnlab.errors import UnreadableImageError
from tests.helpers import run_cli
from tests.reliability.images import claiming_png, two_digit_classes, zero_png


@pytest.fixture
def photos(tmp_path) -> Path:
    return two_digit_classes(tmp_path / "photos")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    data = two_digit_classes(tmp_path_factory.mktemp("data") / "photos")
    runs = tmp_path_factory.mktemp("runs")
    outcome = run_cli("train", "--data", data, "--epochs", 1, "--name", "tiny", "--runs-dir", runs,
                      "--model", "fast-cnn")
    assert outcome.exit_code == 0, outcome.stderr
    return runs / "tiny"


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and "DecompressionBomb" not in text, text


# --- decompression bombs ------------------------------------------------------------------------------


@pytest.mark.parametrize("cache", ["auto", "none"])
def test_a_bomb_among_the_first_files_probed_is_skipped_and_named(photos, tmp_path, cache):
    """Hazard: a PNG claiming 20000×20000 pixels among the first files probed (for the image size)
    raised PIL's DecompressionBombError as a traceback (also with --cache none)."""
    bomb = claiming_png(photos / "0" / "000-bomb.png", 20000, 20000)
    outcome = run_cli("train", "--data", photos, "--epochs", 1, "--model", "fast-cnn", "--cache", cache,
                      "--runs-dir", tmp_path / "runs")
    assert outcome.exit_code == 0, outcome.stderr
    _no_traceback(outcome.stderr)
    assert f"{bomb}: 400,000,000 pixels, more than the 89,478,485 that --max-image-pixels allows" in outcome.stderr


def test_augment_names_a_bomb_instead_of_a_traceback(tmp_path):
    """Hazard: `cnnlab augment` on a decompression bomb ended in a DecompressionBombError traceback."""
    bomb = claiming_png(tmp_path / "bomb.png", 20000, 20000)
    outcome = run_cli("augment", bomb, "--augment", "flip", "-o", tmp_path / "out.png")
    assert outcome.exit_code == 2
    _no_traceback(outcome.stderr)
    assert f"{bomb}: 400,000,000 pixels, more than the 89,478,485 that --max-image-pixels allows" in outcome.stderr


# The process's own peak (VmHWM): getrusage's ru_maxrss can be inherited from the parent at fork.
_PEAK_RSS_MB = ("lambda: next(int(line.split()[1]) for line in open('/proc/self/status') "
                "if line.startswith('VmHWM:')) / 1024")
_PEAK_MEMORY = f"""
import sys
from cnnlab.cli import main
peak = {_PEAK_RSS_MB}
code = 0
try:
    main(sys.argv[1:])
except SystemExit as done:
    code = done.code
print(f"peak-rss-mb {{peak():.0f}}", file=sys.stderr)
sys.exit(code)
"""


def _peak_rss_mb(*args: object) -> tuple[float, subprocess.CompletedProcess]:
    """Run `cnnlab ARGS` in a process of its own; its peak resident memory in MB, and the result."""
    done = subprocess.run([sys.executable, "-c", _PEAK_MEMORY, *map(str, args)], capture_output=True, text=True,
                          timeout=300)
    peak = float(done.stderr.rsplit("peak-rss-mb ", 1)[1].split()[0])
    return peak, done


def test_predict_refuses_a_12000_square_rgba_png_without_decoding_it(tiny_run, tmp_path):
    """Hazard: a 12000×12000 RGBA PNG (144 megapixels, under Pillow's own bomb limit) was decoded whole
    by predict: 3.35 GB of memory and a raw DecompressionBombWarning."""
    big = zero_png(tmp_path / "big.png", 12000, 12000, colour_type=6)
    assert big.stat().st_size < 1 << 20
    peak, done = _peak_rss_mb("predict", tiny_run, big)
    assert done.returncode == 1, done.stderr  # every file failed
    _no_traceback(done.stderr)
    assert "12000×12000 = 144,000,000 pixels, more than the 89,478,485 that --max-image-pixels allows" in done.stdout
    assert peak < 1500, f"predict peaked at {peak:.0f} MB"


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_for_a_small_model(tmp_path):
    """Hazard: a 48-megapixel JPEG for a model taking 28×28 images was decoded at full size (144 MB of
    pixels) before being shrunk; libjpeg can decode it at 1/8 scale directly (draft mode)."""
    pixels = np.zeros((6000, 8000, 3), dtype=np.uint8)
    pixels[:, 4000:] = (200, 40, 40)
    Image.fromarray(pixels).save(tmp_path / "photo.jpg", quality=90)
    script = (f"import json, sys\nfrom cnnlab.data.images import load_image_array\npeak = {_PEAK_RSS_MB}\n"
              "before = peak()\n"
              "array = load_image_array(sys.argv[1], channels=3, size=(28, 28))\n"
              "grown = peak() - before\n"
              "print(json.dumps([grown, array[:, 14, 2].tolist(), array[:, 14, 25].tolist()]))")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "photo.jpg")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    grown, left, right = json.loads(done.stdout)
    assert grown < 60, f"decoding grew the process by {grown:.0f} MB"
    assert left == [0, 0, 0]  # the picture is still the picture
    assert all(abs(value - expected) <= 3 for value, expected in zip(right, (200, 40, 40))), right


@pytest.mark.parametrize("command", ["predict", "evaluate", "explain", "augment", "report", "train"])
def test_max_image_pixels_is_one_budget_for_every_command(command, tiny_run, photos, tmp_path):
    """Hazard: no way to set the pixel budget where images are opened; --max-image-pixels (here below
    the images' 400 pixels) must reach every command that reads images."""
    image = photos / "1" / "003.png"
    budget = ("--max-image-pixels", 399)
    args = {"predict": ("predict", tiny_run, image, *budget),
            "evaluate": ("evaluate", tiny_run, "--data", photos, *budget),
            "explain": ("explain", tiny_run, image, "-o", tmp_path / "explained", *budget),
            "augment": ("augment", image, "--augment", "flip", "-o", tmp_path / "augmented.png", *budget),
            "report": ("report", tiny_run, "--data", photos, "-o", tmp_path / "report.html", *budget),
            "train": ("train", "--data", photos, "--epochs", 1, "--model", "fast-cnn",
                      "--runs-dir", tmp_path / "runs", *budget)}[command]
    outcome = run_cli(*args)
    assert outcome.exit_code != 0
    _no_traceback(outcome.stderr)
    assert "20×20 = 400 pixels, more than the 399 that --max-image-pixels allows" in outcome.stdout + outcome.stderr


def test_max_image_pixels_in_the_python_api(tiny_run, photos):
    """The same budget through the Python API: predict and evaluate take max_image_pixels."""
    image = photos / "1" / "003.png"
    assert "error" not in cnnlab.predict(tiny_run, [image])[0]
    row = cnnlab.predict(tiny_run, [image], max_image_pixels=399)[0]
    assert "more than the 399 that --max-image-pixels allows" in row["error"]
    with pytest.raises(UnreadableImageError, match="more than the 399"):
        load_image_array(image, channels=1, size=(20, 20), max_pixels=399)
    with pytest.raises(UnreadableImageError, match="more than the 399"):
        probe_image(image, max_pixels=399)
    assert DEFAULT_MAX_IMAGE_PIXELS == 89_478_485  # Pillow's own warning threshold


# --- files that are not regular files --------------------------------------------------------------


@pytest.fixture
def not_files(tmp_path) -> dict[str, Path]:
    """A FIFO, a link to /dev/zero, a link to /dev/null and a folder, each named like an image."""
    folder = tmp_path / "odd"
    folder.mkdir()
    os.mkfifo(folder / "fifo.png")
    (folder / "zero.png").symlink_to("/dev/zero")
    (folder / "null.jpg").symlink_to("/dev/null")
    (folder / "folder.png").mkdir()
    (folder / "gone.png").symlink_to(folder / "nowhere.png")
    return {"fifo": folder / "fifo.png", "zero": folder / "zero.png", "null": folder / "null.jpg",
            "folder": folder / "folder.png", "dangling": folder / "gone.png"}


EXPECTED_KIND = {"fifo": "a FIFO (named pipe)", "zero": "a link to /dev/zero, a character device",
                 "null": "a link to /dev/null, a character device", "folder": "a folder",
                 "dangling": "does not exist"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", EXPECTED_KIND)
def test_files_that_are_not_regular_files_are_named_never_read(not_files, kind):
    """Hazard: a .png linked to /dev/zero made the PNG reader read without end (memory exhaustion),
    and a FIFO named .png hung forever: only regular files are read, the others named."""
    for read in (lambda path: load_image_array(path, channels=1, size=(8, 8)), probe_image):
        with pytest.raises(UnreadableImageError) as raised:
            read(not_files[kind])
        assert raised.value.path == str(not_files[kind]) and EXPECTED_KIND[kind] in raised.value.reason


@pytest.mark.timeout(120)
def test_training_skips_fifos_and_devices_in_a_class_folder(photos, tmp_path):
    """Hazard: training on a folder holding a FIFO named x.png hung forever; one holding a link to
    /dev/zero named x.png (or without a suffix, where cnnlab looks for a DICOM marker) ate memory."""
    os.mkfifo(photos / "0" / "fifo.png")
    os.mkfifo(photos / "0" / "IM0001")  # no suffix: DICOM's marker is looked for
    (photos / "1" / "zero.png").symlink_to("/dev/zero")
    (photos / "1" / "IM0002").symlink_to("/dev/zero")
    outcome = run_cli("train", "--data", photos, "--epochs", 1, "--model", "fast-cnn", "--runs-dir",
                      tmp_path / "runs")
    assert outcome.exit_code == 0, outcome.stderr
    assert f"{photos / '0' / 'fifo.png'}: a FIFO (named pipe), not a regular file" in outcome.stderr
    assert f"{photos / '1' / 'zero.png'}: a link to /dev/zero, a character device" in outcome.stderr


@pytest.mark.timeout(120)
def test_predict_names_a_device_file_for_what_it_is(tiny_run, not_files):
    """Hazard: `predict` said "no such file or folder" for a device file that was plainly there."""
    outcome = run_cli("predict", tiny_run, "/dev/null", not_files["fifo"], not_files["zero"])
    assert outcome.exit_code == 1
    assert "no such file" not in outcome.stdout
    lines = outcome.stdout.splitlines()
    assert "/dev/null" in lines[0] and "a character device, not a regular file" in lines[0]
    assert "a FIFO (named pipe)" in lines[1] and "a link to /dev/zero, a character device" in lines[2]


def test_a_file_larger_than_any_image_within_the_budget_is_refused_unread(tmp_path):
    """Hazard: a huge file named like an image (here 4.3 GB, sparse) would be read to look at it; one
    larger than any image within the pixel budget could be is refused from its size alone."""
    huge = tmp_path / "huge.dcm"
    with open(huge, "wb") as handle:
        handle.truncate(4 << 30)
    for read in (lambda path: load_image_array(path, channels=1, size=(8, 8)), probe_image):
        with pytest.raises(UnreadableImageError, match="4.3 GB, larger than any image within --max-image-pixels"):
            read(huge)


# --- numeric images of no fixed range ---------------------------------------------------------------


def test_a_float_tiff_is_scaled_by_its_own_range(tmp_path):
    """Hazard: a float TIFF with values 0–1000 was clipped at 255: 75% of its pixels became white."""
    values = np.linspace(0, 1000, 400, dtype=np.float32).reshape(20, 20)
    Image.fromarray(values, mode="F").save(tmp_path / "depth.tif")
    array = load_image_array(tmp_path / "depth.tif", channels=1, size=(20, 20))[0]
    np.testing.assert_array_equal(array, np.rint(values.astype(np.float64) * (255 / 1000)).astype(np.uint8))
    assert (array == 255).mean() < 0.01


def test_an_int32_tiff_is_scaled_by_its_own_range(tmp_path):
    """Hazard: an int32 TIFF (values beyond 16 bits, and negative) was clipped: 97.5% of its pixels
    became white."""
    values = np.linspace(-50_000, 2_000_000, 400).astype(np.int32).reshape(20, 20)
    Image.fromarray(values, mode="I").save(tmp_path / "counts.tif")
    assert Image.open(tmp_path / "counts.tif").mode == "I"
    array = load_image_array(tmp_path / "counts.tif", channels=1, size=(20, 20))[0]
    low, high = float(values.min()), float(values.max())
    np.testing.assert_array_equal(array, np.rint((values - low) * (255 / (high - low))).astype(np.uint8))
    assert array[0, 0] == 0 and array[-1, -1] == 255 and (array == 255).mean() < 0.01


def test_float_tiffs_with_nan_and_infinity_and_a_constant_one(tmp_path):
    """Hazard: NaN and ±inf in a float image, and an image of one value (no range to scale by)."""
    values = np.array([[np.nan, -np.inf], [np.inf, 500.0], [-20.0, 1000.0]], dtype=np.float32)
    Image.fromarray(values, mode="F").save(tmp_path / "odd.tif")
    array = load_image_array(tmp_path / "odd.tif", channels=1, size=(3, 2))[0]
    # finite range -20..1000; NaN and -inf black, +inf white
    np.testing.assert_array_equal(array, [[0, 0], [255, round(520 * 255 / 1020)], [0, 255]])
    Image.fromarray(np.full((4, 4), 700.0, dtype=np.float32), mode="F").save(tmp_path / "flat.tif")
    assert (load_image_array(tmp_path / "flat.tif", channels=1, size=(4, 4)) == 0).all()


def test_sixteen_bit_and_unit_float_images_keep_their_fixed_scales(tmp_path):
    """What stays as it was: 16-bit images by their type's range (or 12 bits), floats in 0–1 or
    0–255 as intensities, and a 32-bit integer image holding 16-bit values like a 16-bit one."""
    unit = np.array([[0.0, 0.5], [0.25, 1.0]], dtype=np.float32)
    Image.fromarray(unit, mode="F").save(tmp_path / "unit.tif")
    np.testing.assert_array_equal(load_image_array(tmp_path / "unit.tif", channels=1, size=(2, 2))[0],
                                  [[0, 128], [64, 255]])
    dark = np.array([[0.0, 10.0], [20.0, 30.0]], dtype=np.float32)  # 0–255 intensities: not stretched
    Image.fromarray(dark, mode="F").save(tmp_path / "dark.tif")
    np.testing.assert_array_equal(load_image_array(tmp_path / "dark.tif", channels=1, size=(2, 2))[0],
                                  [[0, 10], [20, 30]])
    sixteen = np.array([[0, 65535], [32768, 1000]], dtype=np.int32)
    Image.fromarray(sixteen, mode="I").save(tmp_path / "sixteen.tif")
    np.testing.assert_array_equal(load_image_array(tmp_path / "sixteen.tif", channels=1, size=(2, 2))[0],
                                  [[0, 255], [128, 4]])
