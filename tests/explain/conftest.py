"""Real trained runs for the explain tests: a guide-cnn and a resnet18 on Fashion-MNIST, trained
once per session for one epoch on a small subset (seconds), plus real images to look at."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import FASHION_DIR


def _train(runs: Path, name: str, **fields) -> Path:
    import cnnlab

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    result = cnnlab.train(data="fashion-mnist", epochs=1, runs_dir=str(runs), name=name, quiet=True, **fields)
    return result.run_dir


@pytest.fixture(scope="session")
def guide_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("runs"), "guide", model="guide-cnn", limit=2000)


@pytest.fixture(scope="session")
def resnet_run(tmp_path_factory) -> Path:
    return _train(tmp_path_factory.mktemp("runs"), "resnet", model="resnet18", limit=400, image_size="32",
                  channels=3, batch_size=32)


@pytest.fixture(scope="session")
def camera_png(tmp_path_factory) -> Path:
    """scikit-image's 512×512 grayscale photograph of a cameraman, as a PNG file."""
    from PIL import Image
    from skimage import data

    path = tmp_path_factory.mktemp("images") / "camera.png"
    Image.fromarray(data.camera()).save(path)
    return path


@pytest.fixture(scope="session")
def fashion_pngs(tmp_path_factory) -> list[Path]:
    """Three Fashion-MNIST test images as PNG files named after their class."""
    from PIL import Image

    from cnnlab.data.named import open_named

    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    source = open_named("fashion-mnist", split="test")
    folder = tmp_path_factory.mktemp("fashion")
    paths = []
    for index in (0, 1, 12):
        name = source.class_names[int(source.targets[index])].replace("/", "-").replace(" ", "-")
        path = folder / f"{index:02d}-{name}.png"
        Image.fromarray(np.asarray(source.pixels[index])).save(path)
        paths.append(path)
    return paths
