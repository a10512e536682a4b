"""Named datasets: where copies are found, how they are checked, and the bundled digits split."""

from __future__ import annotations

import gzip
import io
import os
import shutil
import sys
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pytest

from cnnlab.data.named import (
    DATASETS,
    dataset_cache_dir,
    dataset_spec,
    is_named,
    list_datasets,
    open_dataset,
    open_named,
    search_folders,
)
from cnnlab.errors import DataError

if TYPE_CHECKING:
    from .conftest import TinyIdxDataset

FASHION_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@pytest.fixture(autouse=True)
def _isolated(isolated_datasets: Path) -> None:
    """Every test here starts with no dataset anywhere and no way to reach the internet."""


# --- the registry -------------------------------------------------------------------------------


def test_the_four_datasets_are_registered() -> None:
    assert [entry.name for entry in list_datasets()] == ["fashion-mnist", "mnist", "cifar10", "digits"]
    assert is_named("cifar10") and not is_named("cifar-10") and not is_named("./photos")
    assert dataset_spec("fashion-mnist").class_names == tuple(FASHION_CLASSES)
    assert dataset_spec("cifar10").class_names == tuple(CIFAR_CLASSES)
    assert dataset_spec("mnist").class_names == dataset_spec("digits").class_names == tuple("0123456789")


@pytest.mark.parametrize("entry", list(DATASETS), ids=lambda entry: entry.name)
def test_every_spec_is_complete(entry) -> None:  # noqa: ANN001 - a registry Entry
    spec = entry.builder
    assert entry.description and "\n" not in entry.description
    assert spec.splits == ("train", "test")
    assert len(spec.class_names) == 10
    for split in spec.splits:
        for remote in spec.storage.files(split):
            assert len(remote.md5) == 32 and int(remote.md5, 16) >= 0
            assert all(url.startswith(("http://", "https://")) for url in remote.urls())


def test_canonical_urls_are_torchvisions() -> None:
    mnist_images = dataset_spec("mnist").storage.files("train")[0]
    assert mnist_images.urls() == [
        "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
        "http://yann.lecun.com/exdb/mnist/train-images-idx3-ubyte.gz",
    ]
    (cifar_archive,) = dataset_spec("cifar10").storage.files("test")
    assert cifar_archive.urls() == ["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    assert cifar_archive.md5 == "c32a1d4ab5d03f1284b67883e8d87530"


def test_unknown_names_and_splits_list_what_exists() -> None:
    with pytest.raises(DataError, match="Did you mean fashion-mnist") as error:
        open_named("fashon-mnist")
    assert "cifar10, digits, fashion-mnist, mnist" in str(error.value)
    with pytest.raises(DataError, match="digits has no split 'validation'; its splits are train, test"):
        open_named("digits", split="validation")


# --- where copies are found ---------------------------------------------------------------------


def test_fashion_mnist_test_split_comes_from_the_debian_copy(
    fashion_mnist_debian: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNNLAB_SYSTEM_DATA_DIRS", str(fashion_mnist_debian.parent))
    source = open_named("fashion-mnist", split="test", download=False)
    assert source.description == "fashion-mnist (test split, 10,000 images)"
    assert source.names[42] == "fashion-mnist/test/00042"
    assert source.pixels is not None and source.pixels.shape == (10_000, 28, 28)
    assert source.class_names == FASHION_CLASSES
    assert set(source.class_counts().values()) == {1_000}


def test_fashion_mnist_train_split_has_60000_images(
    fashion_mnist_debian: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CNNLAB_SYSTEM_DATA_DIRS", str(fashion_mnist_debian.parent))
    source = open_named("fashion-mnist", split="train", download=False)
    assert len(source) == 60_000 and source.names[-1] == "fashion-mnist/train/59999"
    assert set(source.class_counts().values()) == {6_000}


@pytest.mark.parametrize("layout", ["direct", "sub-folder", "gunzipped"])
def test_data_dir_holds_a_copy(fashion_mnist_debian: Path, tmp_path: Path, layout: str) -> None:
    data_dir = tmp_path / "my-data"
    folder = data_dir / "fashion-mnist" if layout == "sub-folder" else data_dir
    folder.mkdir(parents=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        if layout == "gunzipped":
            with gzip.open(fashion_mnist_debian / name) as compressed:
                (folder / name.removesuffix(".gz")).write_bytes(compressed.read())
        else:
            shutil.copy(fashion_mnist_debian / name, folder / name)
    source = open_named("fashion-mnist", split="test", data_dir=data_dir, download=False)
    assert len(source) == 10_000
    assert set(source.class_counts().values()) == {1_000}


def test_search_order_is_data_dir_then_cnnlab_data_then_cache_then_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_tiny_idx_dataset: Callable[..., TinyIdxDataset]
) -> None:
    # Four copies whose labels differ, so the labels tell which copy was read.
    places = {
        "data_dir": tmp_path / "data-dir" / "tiny-mnist",
        "CNNLAB_DATA": tmp_path / "env-data",  # the files directly in it
        "cache": dataset_cache_dir("tiny-mnist"),
        "system": tmp_path / "system" / "tiny-mnist",
    }
    first_labels = {}
    for offset, (place, folder) in enumerate(places.items()):
        copy = make_tiny_idx_dataset(label_offset=offset)
        copy.write(folder)
        first_labels[place] = copy.labels["test"][0]
    monkeypatch.setenv("CNNLAB_DATA", str(places["CNNLAB_DATA"]))
    monkeypatch.setenv("CNNLAB_SYSTEM_DATA_DIRS", str(tmp_path / "system"))
    spec = make_tiny_idx_dataset().spec
    for place, folder in places.items():
        source = open_dataset(spec, split="test", data_dir=tmp_path / "data-dir", download=False)
        assert source.targets[0] == first_labels[place], f"expected the copy in {place}"
        shutil.rmtree(folder)
    with pytest.raises(DataError, match="not on this machine"):
        open_dataset(spec, split="test", data_dir=tmp_path / "data-dir", download=False)


def test_search_folders_lists_both_forms_of_each_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_datasets: Path
) -> None:
    monkeypatch.setenv("CNNLAB_DATA", str(tmp_path / "env"))
    monkeypatch.setenv("CNNLAB_SYSTEM_DATA_DIRS", f"{tmp_path / 'sys1'}{os.pathsep}{tmp_path / 'sys2'}")
    assert search_folders("mnist", tmp_path / "arg") == [
        tmp_path / "arg" / "mnist",
        tmp_path / "arg",
        tmp_path / "env" / "mnist",
        tmp_path / "env",
        isolated_datasets / "cnnlab" / "datasets" / "mnist",
        tmp_path / "sys1" / "mnist",
        tmp_path / "sys2" / "mnist",
    ]


def test_missing_dataset_without_download_explains_where_to_put_the_files(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CNNLAB_DOWNLOAD_MIRROR")  # show the canonical URLs (nothing is downloaded)
    with pytest.raises(DataError) as error:
        open_named("fashion-mnist", split="test", data_dir=tmp_path / "nothing-here", download=False)
    message = str(error.value)
    assert message.startswith(
        "the fashion-mnist dataset (test split) is not on this machine, and downloading is turned off"
    )
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert f"http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/{name}" in message
    assert "train-images" not in message  # only the files this split needs
    assert str(dataset_cache_dir("fashion-mnist")) in message
    assert str(tmp_path / "nothing-here" / "fashion-mnist") in message
    assert "--data-dir" in message and "CNNLAB_DATA" in message


def test_failed_download_is_one_error_without_a_traceback(isolated_datasets: Path) -> None:
    with pytest.raises(DataError) as error:
        open_named("mnist", split="test", progress=False)
    message = str(error.value)
    assert "the download failed" in message and "refused" in message
    assert "/mnist/t10k-images-idx3-ubyte.gz" in message and "--data-dir" in message
    assert error.value.__cause__ is None and error.value.__suppress_context__
    cache = dataset_cache_dir("mnist")
    assert not cache.exists() or list(cache.iterdir()) == []


# --- structure checks ---------------------------------------------------------------------------


def test_a_copy_with_the_wrong_count_is_refused(tmp_path: Path, tiny_idx_dataset: TinyIdxDataset) -> None:
    # Files with Fashion-MNIST's names but 4 images instead of 10,000.
    tiny_idx_dataset.write(tmp_path / "fashion-mnist")
    with pytest.raises(DataError, match="4 images where the split has 10,000; images shaped \\(4, 4\\)"):
        open_named("fashion-mnist", split="test", data_dir=tmp_path, download=False)


def test_a_copy_with_labels_beyond_the_classes_is_refused(
    tmp_path: Path, tiny_idx_dataset: TinyIdxDataset
) -> None:
    spec = replace(tiny_idx_dataset.spec, class_names=("a", "b"))
    tiny_idx_dataset.write(tmp_path)
    with pytest.raises(DataError, match="labels from 0 to 2, expected 0 to 1"):
        open_dataset(spec, split="train", data_dir=tmp_path)


# --- CIFAR-10, from archives written in its binary format ---------------------------------------

_TINY_CIFAR_SIZES = {"train": 10, "test": 4}  # 2 records in each of the 5 train batches


def _cifar_records(count: int, seed: int) -> tuple[bytes, np.ndarray, np.ndarray]:
    """`count` records (label byte + R, G, B 32×32 planes) and the (N, 32, 32, 3) images they hold."""
    random = np.random.RandomState(seed)
    labels = random.randint(0, 10, size=count).astype(np.uint8)
    images = random.randint(0, 256, size=(count, 32, 32, 3)).astype(np.uint8)
    records = b"".join(
        bytes([label]) + b"".join(image[:, :, channel].tobytes() for channel in range(3))
        for label, image in zip(labels, images)
    )
    return records, images, labels


def _tiny_cifar_batches() -> dict[str, tuple[bytes, np.ndarray, np.ndarray]]:
    batches = {f"data_batch_{number}.bin": _cifar_records(2, seed=number) for number in range(1, 6)}
    batches["test_batch.bin"] = _cifar_records(4, seed=99)
    return batches


def _write_tar(path: Path, members: dict[str, bytes]) -> None:
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


def _expected(batches: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    names = ["test_batch.bin"] if split == "test" else [f"data_batch_{n}.bin" for n in range(1, 6)]
    return (
        np.concatenate([batches[name][1] for name in names]),
        np.concatenate([batches[name][2] for name in names]),
    )


@pytest.mark.parametrize("layout", ["archive", "extracted"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_cifar10_binary_records_become_hwc_images(tmp_path: Path, layout: str, split: str) -> None:
    batches = _tiny_cifar_batches()
    folder = tmp_path / "cifar10"
    if layout == "archive":
        folder.mkdir()
        members = {f"cifar-10-batches-bin/{name}": records for name, (records, _, _) in batches.items()}
        members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\n"
        _write_tar(folder / "cifar-10-binary.tar.gz", members)
    else:
        (folder / "cifar-10-batches-bin").mkdir(parents=True)
        for name, (records, _, _) in batches.items():
            (folder / "cifar-10-batches-bin" / name).write_bytes(records)
    tiny_cifar = replace(dataset_spec("cifar10"), split_sizes=_TINY_CIFAR_SIZES)
    source = open_dataset(tiny_cifar, split=split, data_dir=tmp_path, download=False)
    images, labels = _expected(batches, split)
    assert source.pixels is not None and source.pixels.shape == (len(labels), 32, 32, 3)
    np.testing.assert_array_equal(source.pixels, images)
    assert source.targets.tolist() == labels.tolist()
    assert source.class_names == CIFAR_CLASSES


def test_the_real_cifar10_spec_refuses_a_tiny_copy(tmp_path: Path) -> None:
    records, _, _ = _cifar_records(4, seed=0)
    _write_tar(tmp_path / "cifar-10-binary.tar.gz", {"cifar-10-batches-bin/test_batch.bin": records})
    with pytest.raises(DataError, match="4 images where the split has 10,000"):
        open_named("cifar10", split="test", data_dir=tmp_path, download=False)


def test_cifar10_archive_without_the_batch_says_which(tmp_path: Path) -> None:
    _write_tar(tmp_path / "cifar-10-binary.tar.gz", {"cifar-10-batches-py/test_batch": b"pickled"})
    with pytest.raises(DataError, match="has no cifar-10-batches-bin/test_batch.bin; is it CIFAR's binary"):
        open_named("cifar10", split="test", data_dir=tmp_path, download=False)


def test_cifar10_batch_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    (tmp_path / "test_batch.bin").write_bytes(bytes(3073 * 2 + 5))
    with pytest.raises(DataError, match="6,151 bytes is not a whole number of 3,073-byte CIFAR records"):
        open_named("cifar10", split="test", data_dir=tmp_path, download=False)


# --- digits, from scikit-learn ------------------------------------------------------------------


def _scaled_reference_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.rint(digits.images / 16 * 255).astype(np.uint8), digits.target


def _sorted_rows(images: np.ndarray) -> np.ndarray:
    rows = images.reshape(len(images), -1)
    return rows[np.lexsort(rows.T[::-1])]


def test_digits_splits_partition_all_1797_images() -> None:
    pytest.importorskip("sklearn")
    train, test = open_named("digits", split="train"), open_named("digits", split="test")
    assert (len(train), len(test)) == (1_438, 359)
    assert train.pixels is not None and test.pixels is not None
    assert train.pixels.shape[1:] == (8, 8) and train.pixels.dtype == np.uint8
    assert train.pixels.max() == 255 and test.pixels.max() == 255 and train.pixels.min() == 0
    # Together the splits hold exactly scikit-learn's images, scaled from 0-16 to 0-255.
    reference_pixels, reference_labels = _scaled_reference_digits()
    both = np.concatenate([train.pixels, test.pixels])
    np.testing.assert_array_equal(_sorted_rows(both), _sorted_rows(reference_pixels))
    per_class = np.bincount(reference_labels)
    np.testing.assert_array_equal(
        np.bincount(train.targets, minlength=10) + np.bincount(test.targets, minlength=10), per_class
    )


def test_digits_test_split_is_stratified_and_repeatable() -> None:
    pytest.importorskip("sklearn")
    first, second = open_named("digits", split="test"), open_named("digits", split="test")
    assert first.pixels is not None and second.pixels is not None
    np.testing.assert_array_equal(first.pixels, second.pixels)
    np.testing.assert_array_equal(first.targets, second.targets)
    _, reference_labels = _scaled_reference_digits()
    expected_per_class = [round(count * 0.2) for count in np.bincount(reference_labels)]
    assert np.bincount(first.targets, minlength=10).tolist() == expected_per_class


def test_digits_test_split_is_pinned() -> None:
    # Golden values: if these change, every published digits result changes with them.
    pytest.importorskip("sklearn")
    test = open_named("digits", split="test")
    assert test.targets[:20].tolist() == [3, 7, 3, 9, 0, 8, 7, 0, 8, 0, 3, 3, 6, 6, 9, 1, 0, 1, 3, 6]
    assert test.pixels is not None and int(test.pixels.sum(dtype=np.int64)) == 1_776_711


def test_digits_without_scikit_learn_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes `import sklearn.datasets` fail as if it were not installed.
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DataError, match=r"pip install scikit-learn \(or pip install 'cnnlab\[datasets\]'\)"):
        open_named("digits", split="train")
