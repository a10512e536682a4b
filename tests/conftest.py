"""Shared fixtures: real images on disk, made from the real datasets this machine has offline."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

# Load matplotlib's font cache from its usual place now: the autouse fixture below moves
# XDG_CACHE_HOME, and matplotlib would otherwise rebuild its font cache there (~30 s).
import matplotlib  # noqa: E402
import matplotlib.font_manager  # noqa: E402,F401

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")

requires_fashion_mnist = pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST not installed: apt-get install dataset-fashion-mnist",
)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path_factory):
    """Keep tests off the user's cache and away from the network-facing defaults."""
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    # Subprocesses must find matplotlib's font cache where it is, not under the moved XDG cache.
    monkeypatch.setenv("MPLCONFIGDIR", matplotlib.get_cachedir())
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    monkeypatch.delenv("CNNLAB_DOWNLOAD_MIRROR", raising=False)


def write_digits_folder(root: Path, *, scale: int = 1) -> Path:
    """scikit-learn's 1,797 real 8×8 digits as PNG files: root/<digit>/<index>.png (0–16 → 0–255)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    for index, (image, label) in enumerate(zip(pixels, digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(image, mode="L")
        if scale != 1:
            picture = picture.resize((8 * scale, 8 * scale), Image.Resampling.NEAREST)
        picture.save(folder / f"digit-{index:04d}.png")
    return root


def write_digits_split_folders(root: Path) -> Path:
    """The digits as root/train/<digit>/*.png and root/test/<digit>/*.png (cnnlab's digits split)."""
    from PIL import Image

    from cnnlab.data.named import open_named

    for split in ("train", "test"):
        source = open_named("digits", split=split)
        for name, pixels, label in zip(source.names, source.pixels, source.targets):
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels, mode="L").save(folder / f"{Path(name).name}.png")
    return root


@pytest.fixture(scope="session")
def digits_split_folder(tmp_path_factory) -> Path:
    return write_digits_split_folders(tmp_path_factory.mktemp("digits-split") / "digits")


@pytest.fixture(scope="session")
def digits_folder(tmp_path_factory) -> Path:
    """A read-only-by-convention folder of digit PNGs (copy it before modifying)."""
    return write_digits_folder(tmp_path_factory.mktemp("digits") / "digits")


@pytest.fixture
def digits_copy(digits_folder, tmp_path) -> Path:
    """A private copy of the digits folder that a test may add files to."""
    return Path(shutil.copytree(digits_folder, tmp_path / "digits"))


@pytest.fixture
def runs_dir(tmp_path) -> Path:
    return tmp_path / "runs"

