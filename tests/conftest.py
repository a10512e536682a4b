"""Shared fixtures: real images on disk, made from the real datasets this machine has offline."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

# Load matplotlib's font cache from its usual place now: the autouse fixture below moves
# XDG_CACHE_HOME, and matplotlib would otherwise rebuild its font cache there (~30 s).
import matplotlib  # noqa: E402
import matplotlib.font_manager  # noqa: E402,F401



def _one_share_of_the_cores_per_worker() -> None:
    """Under `pytest -n N`, give each worker its share of the cores for torch's thread pool.

    Two workers each running two OpenMP threads on two cores spin in each other's barriers: the same
    training test then takes about 2.5 times the CPU time (measured on resnet18 in
    tests/train/test_zoo_training.py). Subprocesses (python -m cnnlab, torchrun) inherit the share
    through OMP_NUM_THREADS.
    """
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return
    import torch

    share = max(1, len(os.sched_getaffinity(0)) // workers)
    os.environ["OMP_NUM_THREADS"] = str(share)
    torch.set_num_threads(share)


_one_share_of_the_cores_per_worker()

# The test files that take longest, longest first (per-file totals from `pytest --durations=80` in a
# clean clone, 2026-12-04). `make test` gives each file to one worker (`--dist loadfile`, so a file's
# module fixtures are made once) and, by default, xdist queues the files with the most tests first:
# these few-test, long files then came last, one worker busy while the other waited. Run first
# (`--no-loadscope-reorder` keeps this order), they leave the many short files to fill the end.
LONGEST_FIRST = (
    "tests/train/test_transfer_learning.py",
    "tests/train/test_distributed.py",
    "tests/tasks/detection/test_detection_training.py",
    "tests/tasks/embedding/test_open_set.py",
    "tests/train/test_fashion_mnist.py",
    "tests/evaluate/test_own_data.py",
    "tests/benchmarks/test_turns.py",
    "tests/report/test_report.py",
    "tests/tasks/test_class_weights.py",
    "tests/train/test_resume.py",
    "tests/train/test_batch_threads.py",
    "tests/test_performance.py",
    "tests/benchmarks/test_step_time.py",
    "tests/tasks/instances/test_training.py",
    "tests/export/test_export.py",
    "tests/tasks/embedding/test_faces.py",
    "tests/export/test_export_tasks.py",
    "tests/train/test_regression_e2e.py",
    "tests/teach/test_conv_steps.py",
    "tests/models/test_torchvision_detectors.py",
    "tests/tasks/segmentation/test_segmentation_training.py",
    "tests/tasks/segmentation/test_segmentation_resume.py",
    "tests/train/test_zoo_training.py",
    "tests/serve/test_serve.py",
    "tests/reliability/test_impossible_sizes.py",
    "tests/train/test_lr_find.py",
    "tests/train/test_train_digits.py",
)


def pytest_collection_modifyitems(config, items):
    """The files in LONGEST_FIRST first, in its order; every other file after them, and each file's
    tests, in their own order (a stable sort). Every worker sorts alike, as xdist requires."""
    rank = {path: position for position, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))

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



# Real trained runs for the explain, teach and report tests: a guide-cnn and a resnet18 on Fashion-MNIST,
# trained once per session for one epoch on a small subset (seconds), plus real images to look at.

def _train_fashion_run(runs: Path, name: str, **fields) -> Path:
    import cnnlab

    if not (FASHION_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST not installed: apt-get install dataset-fashion-mnist")
    result = cnnlab.train(data="fashion-mnist", epochs=1, runs_dir=str(runs), name=name, quiet=True, **fields)
    return result.run_dir


@pytest.fixture(scope="session")
def guide_run(tmp_path_factory) -> Path:
    return _train_fashion_run(tmp_path_factory.mktemp("runs"), "guide", model="guide-cnn", limit=2000)


@pytest.fixture(scope="session")
def resnet_run(tmp_path_factory) -> Path:
    return _train_fashion_run(tmp_path_factory.mktemp("runs"), "resnet", model="resnet18", limit=400, image_size="32",
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
