"""IDX files written byte by byte with struct.pack, read back through cnnlab.data.idx."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from cnnlab.data.idx import find_idx_splits, labels_file_for, open_idx_pair, read_idx
from cnnlab.errors import DataError


def _header(type_code: int, *dims: int) -> bytes:
    return struct.pack(f">BBBB{len(dims)}I", 0, 0, type_code, len(dims), *dims)


def _write(path: Path, content: bytes, *, gzipped: bool = False) -> Path:
    path.write_bytes(gzip.compress(content) if gzipped else content)
    return path


# Two 2×3 images, 1 label each: small enough to check every value by eye.
IMAGES = _header(0x08, 2, 2, 3) + bytes([0, 1, 2, 3, 4, 5, 250, 251, 252, 253, 254, 255])
LABELS = _header(0x08, 2) + bytes([1, 0])


@pytest.mark.parametrize("gzipped", [False, True], ids=["raw", "gzipped"])
def test_read_idx_gives_the_packed_values(tmp_path: Path, gzipped: bool) -> None:
    values = read_idx(_write(tmp_path / "images-idx3-ubyte", IMAGES, gzipped=gzipped))
    assert values.dtype == np.uint8
    assert values.tolist() == [[[0, 1, 2], [3, 4, 5]], [[250, 251, 252], [253, 254, 255]]]
    assert values.flags.writeable


def test_gzip_is_recognised_by_content_not_by_name(tmp_path: Path) -> None:
    gzipped_without_suffix = _write(tmp_path / "labels", LABELS, gzipped=True)
    raw_with_gz_suffix = _write(tmp_path / "labels.gz", LABELS)
    assert read_idx(gzipped_without_suffix).tolist() == [1, 0]
    assert read_idx(raw_with_gz_suffix).tolist() == [1, 0]


@pytest.mark.parametrize(
    ("type_code", "big_endian_format", "values"),
    [
        (0x09, "b", [-128, -1, 0, 127]),
        (0x0B, "h", [-32768, -2, 1, 32767]),
        (0x0C, "i", [-(2**31), -3, 70000, 2**31 - 1]),
        (0x0D, "f", [-1.5, 0.0, 0.25, 3.0e38]),
        (0x0E, "d", [-1e300, -0.125, 0.0, 2.5]),
    ],
    ids=["int8", "int16", "int32", "float32", "float64"],
)
def test_every_idx_type_is_read_big_endian(
    tmp_path: Path, type_code: int, big_endian_format: str, values: list[float]
) -> None:
    content = _header(type_code, 2, 2) + struct.pack(f">4{big_endian_format}", *values)
    array = read_idx(_write(tmp_path / "values.idx", content))
    assert array.shape == (2, 2)
    assert array.dtype.isnative
    assert array.ravel().tolist() == pytest.approx(values, rel=1e-7)


def test_truncated_data_names_the_file_and_the_byte_counts(tmp_path: Path) -> None:
    path = _write(tmp_path / "short-images-idx3-ubyte", IMAGES[:-2])
    message = r"expected 12 bytes of data for shape \(2, 2, 3\), found 10"
    with pytest.raises(DataError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_extra_bytes_after_the_data_are_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path / "long-images-idx3-ubyte", IMAGES + b"\x00")
    with pytest.raises(DataError, match="expected 12 bytes of data .*, found 13"):
        read_idx(path)


def test_a_png_is_not_an_idx_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "photo-images-idx3-ubyte", b"\x89PNG\r\n\x1a\n" + bytes(20))
    with pytest.raises(DataError, match="not an IDX file") as error:
        read_idx(path)
    assert str(error.value).startswith(str(path))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00\x00", "only 2 bytes"),
        (_header(0x07, 1) + b"\x00", "unknown data type code 0x07"),
        (struct.pack(">BBBB", 0, 0, 0x08, 0), "0 dimensions"),
        (struct.pack(">BBBBI", 0, 0, 0x08, 3, 60000), "truncated header"),
    ],
    ids=["too-short", "unknown-type", "no-dimensions", "truncated-header"],
)
def test_malformed_headers_say_what_is_wrong(tmp_path: Path, content: bytes, message: str) -> None:
    path = _write(tmp_path / "broken.idx", content)
    with pytest.raises(DataError, match=message) as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_corrupt_gzip_names_the_file(tmp_path: Path) -> None:
    compressed = gzip.compress(IMAGES)
    path = _write(tmp_path / "cut-images-idx3-ubyte.gz", compressed[: len(compressed) // 2])
    with pytest.raises(DataError, match="corrupt gzip data") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_missing_file_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nowhere-images-idx3-ubyte")


def test_open_idx_pair_builds_a_source(tmp_path: Path) -> None:
    images = _write(tmp_path / "train-images-idx3-ubyte", IMAGES)
    labels = _write(tmp_path / "train-labels-idx1-ubyte.gz", LABELS, gzipped=True)
    source = open_idx_pair(images, labels, description="two images", name_prefix="tiny/train")
    assert source.description == "two images"
    assert source.names == ["tiny/train/0", "tiny/train/1"]
    assert source.targets.dtype == np.int64 and source.targets.tolist() == [1, 0]
    assert source.class_names == ["0", "1"]
    assert source.pixels is not None and source.pixels[1, 1].tolist() == [253, 254, 255]


def test_open_idx_pair_keeps_given_class_names(tmp_path: Path) -> None:
    images = _write(tmp_path / "images", IMAGES)
    labels = _write(tmp_path / "labels", LABELS)
    names = ["cat", "dog", "eel"]
    source = open_idx_pair(images, labels, description="d", name_prefix="p", class_names=names)
    assert source.class_names == ["cat", "dog", "eel"]
    assert source.class_counts() == {"cat": 1, "dog": 1, "eel": 0}
    with pytest.raises(DataError, match="label 1 found, but only 1 class names"):
        open_idx_pair(images, labels, description="d", name_prefix="p", class_names=["cat"])


def test_open_idx_pair_refuses_different_counts_naming_both_files(tmp_path: Path) -> None:
    images = _write(tmp_path / "train-images-idx3-ubyte", IMAGES)
    labels = _write(tmp_path / "train-labels-idx1-ubyte", _header(0x08, 3) + bytes([0, 1, 2]))
    with pytest.raises(DataError, match="holds 2 images but .* holds 3 labels") as error:
        open_idx_pair(images, labels, description="d", name_prefix="p")
    assert str(images) in str(error.value) and str(labels) in str(error.value)


def test_open_idx_pair_refuses_swapped_files(tmp_path: Path) -> None:
    images = _write(tmp_path / "images", IMAGES)
    labels = _write(tmp_path / "labels", LABELS)
    with pytest.raises(DataError, match="expected uint8 images shaped"):
        open_idx_pair(labels, images, description="d", name_prefix="p")


@pytest.mark.parametrize(
    ("images_name", "labels_name"),
    [
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
        ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
        ("train-images.idx3-ubyte", "train-labels.idx1-ubyte"),
        ("emnist-letters-test-images-idx3-ubyte.gz", "emnist-letters-test-labels-idx1-ubyte.gz"),
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte"),  # labels gunzipped, images not
    ],
)
def test_labels_file_for_follows_the_mnist_naming(tmp_path: Path, images_name: str, labels_name: str) -> None:
    (tmp_path / labels_name).write_bytes(LABELS)
    assert labels_file_for(tmp_path / images_name) == tmp_path / labels_name


def test_labels_file_for_prefers_the_same_compression(tmp_path: Path) -> None:
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(LABELS)
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(LABELS))
    assert labels_file_for(tmp_path / "train-images-idx3-ubyte.gz").name == "train-labels-idx1-ubyte.gz"
    assert labels_file_for(tmp_path / "train-images-idx3-ubyte").name == "train-labels-idx1-ubyte"


def test_labels_file_for_names_the_file_it_expected(tmp_path: Path) -> None:
    expected = r"expected train-labels-idx1-ubyte.gz \(or train-labels-idx1-ubyte\)"
    with pytest.raises(DataError, match=expected):
        labels_file_for(tmp_path / "train-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match="cannot tell which labels file"):
        labels_file_for(tmp_path / "photo.png")


def test_find_idx_splits_pairs_train_and_t10k(tmp_path: Path) -> None:
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz", "README.txt"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    assert find_idx_splits(tmp_path) == {
        "train": (tmp_path / "train-images-idx3-ubyte.gz", tmp_path / "train-labels-idx1-ubyte.gz"),
        "test": (tmp_path / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz"),
    }


def test_find_idx_splits_accepts_test_names_and_prefers_uncompressed(tmp_path: Path) -> None:
    for name in ("test-images-idx3-ubyte", "test-images-idx3-ubyte.gz", "test-labels-idx1-ubyte",
                 "test-labels-idx1-ubyte.gz"):  # fmt: skip
        (tmp_path / name).write_bytes(b"")
    assert find_idx_splits(tmp_path) == {
        "test": (tmp_path / "test-images-idx3-ubyte", tmp_path / "test-labels-idx1-ubyte")
    }


def test_find_idx_splits_is_empty_for_a_folder_of_class_folders(tmp_path: Path) -> None:
    (tmp_path / "cats").mkdir()
    assert find_idx_splits(tmp_path) == {}


def test_debian_fashion_mnist_test_split(fashion_mnist_debian: Path) -> None:
    pixels = read_idx(fashion_mnist_debian / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(fashion_mnist_debian / "t10k-labels-idx1-ubyte.gz")
    assert pixels.shape == (10_000, 28, 28) and pixels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [1_000] * 10
