"""`cnnlab augment`: your images beside the versions an --augment preset draws, as training draws them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnlab.errors import ConfigError
from cnnlab.teach.augmentation import augmented_versions, preview_geometry
from tests.helpers import run_cli


@pytest.fixture
def photos(tmp_path):
    """A real colour photo and a real grayscale one (scikit-image), at different sizes."""
    from skimage import data

    Image.fromarray(data.chelsea()).save(tmp_path / "cat.png")
    Image.fromarray(data.camera()[::4, ::4]).save(tmp_path / "camera.png")
    return tmp_path / "cat.png", tmp_path / "camera.png"


def test_the_picture_is_written_and_named_after_the_preset(photos, tmp_path):
    outcome = run_cli("augment", *photos, "--augment", "standard", "--versions", 3, cwd=tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout.strip() == "2 image(s), 3 version(s) each: augment-standard.png"
    picture = Image.open(tmp_path / "augment-standard.png")
    assert picture.width > 400 and picture.height > 150


def test_images_are_shown_as_training_reads_them(photos):
    cat, camera = photos
    assert preview_geometry([camera]) == (1, (128, 128))  # its own size, grayscale
    assert preview_geometry([cat, camera]) == (3, (224, 224))  # colour if any is; mixed sizes -> 224
    assert preview_geometry([cat, camera], image_size=(64, 96), channels=1) == (1, (64, 96))


def test_versions_are_the_presets_draws_and_seeded():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (3, 16, 16), dtype=np.uint8)]
    first = augmented_versions(images, "standard", 5, seed=3)[0]
    assert all(not np.array_equal(version, images[0]) for version in first)
    again = augmented_versions(images, "standard", 5, seed=3)[0]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    other = augmented_versions(images, "standard", 5, seed=4)[0]
    assert not all(np.array_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize(("arguments", "message"), [
    (("--augment", "none"), "--augment must be one of flip, light, standard (got 'none'): it draws nothing"),
    (("--augment", "lite"), "(got 'lite'): no such preset"),
    (("--augment", "flip", "--versions", "0"), "--versions must be at least 1 (got 0)"),
])
def test_bad_settings_are_named(photos, arguments, message):
    outcome = run_cli("augment", photos[0], *arguments)
    assert outcome.exit_code == 2 and message in outcome.stderr


def test_an_unreadable_image_is_named(tmp_path):
    (tmp_path / "notes.png").write_text("not a picture")
    outcome = run_cli("augment", tmp_path / "notes.png", "--augment", "light")
    assert outcome.exit_code == 2 and "notes.png" in outcome.stderr
    assert not (tmp_path / "augment-light.png").exists()


def test_the_library_refuses_none_too():
    from cnnlab.teach.augmentation import preview_augmentation

    with pytest.raises(ConfigError, match="draws nothing"):
        preview_augmentation(["x.png"], "none", "out.png")
