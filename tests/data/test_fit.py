"""--fit: how an image of another shape is made to fit the model's H×W (squash, crop, pad), the same
for files and for in-memory datasets, recorded with the model and used again by predict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.config import FITS as CONFIG_FITS
from cnnlab.config import TrainConfig
from cnnlab.data.images import FITS, load_image_array
from cnnlab.data.normalize import InputSpec
from cnnlab.data.prepare import Geometry, array_to_tensor
from cnnlab.errors import ConfigError
from tests.helpers import run_cli


@pytest.fixture
def wide_photo(tmp_path):
    """A real photo (scikit-image's camera man), cut to 3:1 — as wide as a strip of a document."""
    from skimage import data

    pixels = np.ascontiguousarray(data.camera()[200:328, :384])  # 128 high, 384 wide
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    return path, pixels


def test_the_config_offers_the_fits_the_decoder_knows():
    assert CONFIG_FITS == FITS == ("squash", "crop", "pad")


def test_pad_scales_to_fit_inside_and_adds_black_bands(wide_photo):
    path, pixels = wide_photo
    padded = load_image_array(path, channels=1, size=(60, 60), fit="pad")[0]
    # 384×128 scaled to fit 60 wide is 60×20, centred: 20 black rows above, 20 below.
    assert padded.shape == (60, 60)
    assert (padded[:20] == 0).all() and (padded[40:] == 0).all()
    inside = np.asarray(Image.fromarray(pixels).resize((60, 20), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(padded[20:40], inside)


def test_crop_scales_to_cover_and_keeps_the_centre(wide_photo):
    path, pixels = wide_photo
    cropped = load_image_array(path, channels=1, size=(64, 64), fit="crop")[0]
    # The centre 128×128 of the photo, shrunk by half: no stretching, nothing black. (At the left
    # and right edges Pillow's filter also reads the pixels just outside the crop.)
    centre = np.asarray(Image.fromarray(pixels[:, 128:256]).resize((64, 64), Image.Resampling.BILINEAR))
    assert np.abs(cropped.astype(int) - centre.astype(int))[:, 1:-1].max() <= 1
    squashed = load_image_array(path, channels=1, size=(64, 64))[0]
    assert np.abs(squashed.astype(int) - centre.astype(int)).mean() > 10  # squash is a different picture


def test_in_memory_datasets_are_fitted_as_files_are(wide_photo):
    """Named datasets (pixel arrays) go through torchvision, files through Pillow: the same picture."""
    path, pixels = wide_photo
    for fit, size in (("pad", (60, 60)), ("crop", (64, 64)), ("pad", (30, 120)), ("crop", (100, 50))):
        from_file = load_image_array(path, channels=1, size=size, fit=fit)[0].astype(int)
        from_array = array_to_tensor(pixels[None], Geometry(1, *size, fit))[0, 0].numpy().astype(int)
        assert from_array.shape == size
        assert np.abs(from_file - from_array).mean() < 2.0, (fit, size)
        np.testing.assert_array_equal(from_file == 0, from_array == 0)  # the black bands agree exactly


def test_a_one_pixel_strip_still_pads(tmp_path):
    Image.new("L", (1000, 1), 255).save(tmp_path / "strip.png")
    padded = load_image_array(tmp_path / "strip.png", channels=1, size=(28, 28), fit="pad")[0]
    assert padded.shape == (28, 28) and padded[13].min() > 0 and padded.sum() == padded[13].sum()


def test_a_wrong_fit_is_named():
    with pytest.raises(ConfigError, match=r"--fit must be one of squash, crop, pad \(got 'stretch'\)"):
        TrainConfig(data="digits", fit="stretch").validate()
    with pytest.raises(ValueError, match="fit must be one of"):
        load_image_array("any.png", channels=1, size=(8, 8), fit="stretch")
    assert run_cli("train", "--data", "digits", "--fit", "stretch").exit_code != 0


def test_runs_saved_before_fit_existed_load_as_squash():
    spec = InputSpec.from_json({"channels": 1, "height": 8, "width": 8, "mean": [0.5], "std": [0.25]})
    assert spec.fit == "squash" and spec.geometry == Geometry(1, 8, 8, "squash")
    assert InputSpec.from_json(InputSpec(1, 8, 8, (0.5,), (0.25,), "pad").to_json()).fit == "pad"


def _wide_digits(root, count=240):
    """scikit-learn's real 8×8 digits, each on a black canvas 8 high and 16 or 24 wide."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    for index in range(count):
        width = 16 if index % 2 else 24
        canvas = np.zeros((8, width), np.uint8)
        left = (width - 8) // 2
        canvas[:, left:left + 8] = np.rint(digits.images[index] * 255 / 16).astype(np.uint8)
        folder = root / str(digits.target[index])
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(canvas).save(folder / f"{index:04d}.png")
    return root


def test_a_run_trained_with_fit_pad_predicts_with_it(tmp_path):
    data = _wide_digits(tmp_path / "wide-digits")
    result = cnnlab.train(data=str(data), model="fast-cnn-v2", image_size="16", fit="pad", epochs=1,
                          runs_dir=str(tmp_path / "runs"), quiet=True, device="cpu")
    assert json.loads((result.run_dir / "data.json").read_text())["geometry"]["fit"] == "pad"
    assert "fit: pad" in (result.run_dir / "config.yaml").read_text()
    trained = cnnlab.load(result.run_dir, device="cpu", precision="fp32")
    assert trained.input.fit == "pad"

    files = sorted(data.rglob("*.png"))[:6]
    rows = cnnlab.predict(trained, [str(f) for f in files])
    for fit in ("pad", "squash"):
        images = torch.stack([torch.from_numpy(load_image_array(f, channels=1, size=(16, 16), fit=fit))
                              for f in files])
        confidences = torch.softmax(trained.outputs(images), dim=1).amax(dim=1)
        agrees = [abs(row["confidence"] - float(c)) < 1e-5 for row, c in zip(rows, confidences)]
        assert all(agrees) if fit == "pad" else not all(agrees)
