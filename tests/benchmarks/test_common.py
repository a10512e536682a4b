"""benchmarks/_common.py: every contender reads the Fashion-MNIST copy cnnlab itself would read."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _common import FASHION_FILES, fashion_mnist, fashion_mnist_folder  # noqa: E402


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    content = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(content))
    else:
        path.write_bytes(content)


def _tiny_copy(folder: Path, *, gunzipped: bool = False) -> None:
    """Four IDX files of Fashion-MNIST's names (a handful of images: enough to find and read them)."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 4)):
        images_name, labels_name = FASHION_FILES[split]
        suffix = "" if gunzipped else ".gz"
        _write_idx(folder / (images_name.removesuffix(".gz") + suffix), rng.integers(0, 256, (count, 28, 28)))
        _write_idx(folder / (labels_name.removesuffix(".gz") + suffix), np.arange(count) % 10)


@pytest.fixture
def nowhere_else(tmp_path, monkeypatch):
    """No system copy, an empty download cache, no CNNLAB_FASHION_MNIST."""
    monkeypatch.setenv("CNNLAB_SYSTEM_DATA_DIRS", str(tmp_path / "no-system-copy"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CNNLAB_FASHION_MNIST", raising=False)
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    return tmp_path


def test_the_contenders_read_the_copy_named_by_cnnlab_data(nowhere_else, monkeypatch):
    _tiny_copy(nowhere_else / "data" / "fashion-mnist")
    monkeypatch.setenv("CNNLAB_DATA", str(nowhere_else / "data"))
    assert fashion_mnist_folder() == nowhere_else / "data" / "fashion-mnist"
    images, labels = fashion_mnist("test")
    assert images.shape == (4, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [0, 1, 2, 3]


def test_a_gunzipped_copy_is_read_too(nowhere_else, monkeypatch):
    _tiny_copy(nowhere_else / "data", gunzipped=True)
    monkeypatch.setenv("CNNLAB_DATA", str(nowhere_else / "data"))
    images, labels = fashion_mnist("train")
    assert images.shape == (6, 28, 28)
    assert labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_cnnlab_fashion_mnist_still_names_a_folder_outright(nowhere_else, monkeypatch):
    _tiny_copy(nowhere_else / "elsewhere")
    monkeypatch.setenv("CNNLAB_FASHION_MNIST", str(nowhere_else / "elsewhere"))
    assert fashion_mnist_folder() == nowhere_else / "elsewhere"


def test_no_copy_anywhere_says_where_it_looked_and_what_to_set(nowhere_else):
    with pytest.raises(SystemExit) as stopped:
        fashion_mnist("test")
    message = str(stopped.value)
    assert str(nowhere_else / "cache") in message
    assert "CNNLAB_DATA" in message and "dataset-fashion-mnist" in message
