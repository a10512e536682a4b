"""MNIST-format IDX files, the format of MNIST, Fashion-MNIST, KMNIST and EMNIST.

An IDX file is a big-endian header followed by the values, row-major:

    0x00 0x00 | data type (1 byte) | number of dimensions (1 byte) | one uint32 per dimension | values

Most copies are gzipped (`train-images-idx3-ubyte.gz`). `read_idx` recognises gzip by its magic
bytes rather than by the name, so a file that was un-gzipped but kept its `.gz` name, or the
other way round, reads all the same.
"""

from __future__ import annotations

import gzip
import math
import re
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from cnnlab.data.source import Source
from cnnlab.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"

# IDX data type code -> NumPy type; multi-byte values are big-endian on disk.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# `train-images-idx3-ubyte.gz`, `t10k-images.idx3-ubyte`, `emnist-letters-train-images-idx3-ubyte`...
_IMAGES_FILE_NAME = re.compile(r"^(?P<stem>.*)images(?P<sep>[-.])idx\d(?P<tail>-ubyte)(?P<gz>\.gz)?$")

# The last word of the part before "images" says which split a file belongs to.
_SPLIT_WORDS = {"train": "train", "t10k": "test", "test": "test"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or not, into an array in native byte order.

    >>> import gzip, struct, tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "tiny-labels-idx1-ubyte.gz"
    >>> _ = path.write_bytes(gzip.compress(struct.pack(">BBBBI", 0, 0, 0x08, 1, 3) + bytes([7, 0, 9])))
    >>> read_idx(path)
    array([7, 0, 9], dtype=uint8)
    """
    path = Path(path)
    content = _read_bytes(path)
    if content[:2] == _GZIP_MAGIC:
        content = _gunzip(path, content)
    dtype, shape, header_size = _parse_header(path, content)
    count = math.prod(shape)
    expected_bytes = count * dtype.itemsize
    found_bytes = len(content) - header_size
    if found_bytes != expected_bytes:
        problem = "truncated" if found_bytes < expected_bytes else "extra bytes after the data"
        raise DataError(
            f"{path}: expected {expected_bytes:,} bytes of data for shape {shape}, "
            f"found {found_bytes:,} ({problem})"
        )
    values = np.frombuffer(content, dtype=dtype, count=count, offset=header_size)
    return values.reshape(shape).astype(dtype.newbyteorder("="))  # astype also makes it writable


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist") from None
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None


def _gunzip(path: Path, content: bytes) -> bytes:
    try:
        return gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: corrupt gzip data ({error})") from None


def _parse_header(path: Path, content: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """(value type, shape, header size in bytes), or a DataError saying what is wrong."""
    if len(content) < 4:
        raise DataError(f"{path}: not an IDX file (only {len(content)} bytes; the header alone has 4)")
    if content[0] != 0 or content[1] != 0:
        raise DataError(
            f"{path}: not an IDX file (it starts with bytes {content[:4].hex(' ')}; "
            "an IDX file starts with two zero bytes)"
        )
    type_code, ndim = content[2], content[3]
    if type_code not in _IDX_DTYPES:
        known = ", ".join(f"0x{code:02X}" for code in _IDX_DTYPES)
        raise DataError(f"{path}: not an IDX file (unknown data type code 0x{type_code:02X}; known: {known})")
    if ndim == 0:
        raise DataError(f"{path}: not an IDX file (it declares 0 dimensions)")
    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise DataError(
            f"{path}: truncated header ({ndim} dimension sizes announced, "
            f"the file has only {len(content)} bytes)"
        )
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    return _IDX_DTYPES[type_code], shape, header_size


def read_idx_pair(images_path: str | Path, labels_path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (uint8, (N, H, W) or (N, H, W, C)) and int64 labels (N,) from an images/labels pair."""
    images_path, labels_path = Path(images_path), Path(labels_path)
    pixels = read_idx(images_path)
    labels = read_idx(labels_path)
    if pixels.dtype != np.uint8 or pixels.ndim not in (3, 4):
        raise DataError(
            f"{images_path}: expected uint8 images shaped (N, H, W) or (N, H, W, C), "
            f"found {pixels.dtype} values shaped {pixels.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataError(
            f"{labels_path}: expected one integer label per image, found {labels.dtype} values "
            f"shaped {labels.shape}"
        )
    if len(labels) != len(pixels):
        raise DataError(
            f"{images_path} holds {len(pixels):,} images but {labels_path} holds {len(labels):,} labels; "
            "they must be the same split of the same dataset"
        )
    if len(labels) and labels.min() < 0:
        raise DataError(f"{labels_path}: labels must be class indices (0 or more), found {labels.min()}")
    return pixels, labels.astype(np.int64)


def open_idx_pair(
    images_path: str | Path,
    labels_path: str | Path,
    *,
    description: str,
    name_prefix: str,
    class_names: Sequence[str] | None = None,
) -> Source:
    """A classification `Source` from an IDX images file and its labels file.

    Images are named `<name_prefix>/<index>`, the index zero-padded. Without `class_names`, the
    classes are "0", "1", ... up to the largest label.

    >>> import struct, tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "images").write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 2, 1, 1) + bytes([0, 255]))
    >>> _ = (folder / "labels").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, 2) + bytes([1, 0]))
    >>> source = open_idx_pair(folder / "images", folder / "labels", description="tiny", name_prefix="tiny")
    >>> source.names, source.targets.tolist(), source.class_names
    (['tiny/0', 'tiny/1'], [1, 0], ['0', '1'])
    """
    pixels, targets = read_idx_pair(images_path, labels_path)
    class_count = int(targets.max()) + 1 if len(targets) else 0
    if class_names is None:
        class_names = [str(index) for index in range(class_count)]
    elif class_count > len(class_names):
        raise DataError(
            f"{labels_path}: label {class_count - 1} found, but only {len(class_names)} class names given"
        )
    return Source(
        description=description,
        names=numbered_names(name_prefix, len(targets)),
        targets=targets,
        class_names=list(class_names),
        pixels=pixels,
    )


def numbered_names(prefix: str, count: int) -> list[str]:
    """`<prefix>/<index>` for each image, zero-padded to as many digits as `count` has, so names sort.

    >>> numbered_names("fashion-mnist/test", 10_000)[42]
    'fashion-mnist/test/00042'
    """
    width = len(str(count))
    return [f"{prefix}/{index:0{width}d}" for index in range(count)]


def labels_file_for(images_path: str | Path) -> Path:
    """The labels file beside an IDX images file, found by the MNIST naming convention.

    `X-images-idx3-ubyte[.gz]` pairs with `X-labels-idx1-ubyte[.gz]`, `X-images.idx3-ubyte` with
    `X-labels.idx1-ubyte`; a labels file compressed like the images file is preferred.
    """
    images_path = Path(images_path)
    match = _IMAGES_FILE_NAME.match(images_path.name)
    if match is None:
        raise DataError(
            f"{images_path}: cannot tell which labels file goes with it; IDX files are paired by name, "
            "like 'train-images-idx3-ubyte[.gz]' with 'train-labels-idx1-ubyte[.gz]'"
        )
    base = f"{match['stem']}labels{match['sep']}idx1{match['tail']}"
    same_compression = base + (match["gz"] or "")
    other_compression = base if match["gz"] else base + ".gz"
    for name in (same_compression, other_compression):
        candidate = images_path.with_name(name)
        if candidate.is_file():
            return candidate
    raise DataError(
        f"no labels file for {images_path}: expected {same_compression} (or {other_compression}) "
        f"in {images_path.parent}"
    )


def find_idx_splits(folder: str | Path) -> dict[str, tuple[Path, Path]]:
    """{"train": (images, labels), "test": (images, labels)} for a folder of MNIST-style IDX files.

    `train-*` files make the train split, `t10k-*` or `test-*` files the test split; a split found
    both gzipped and not is read from the uncompressed copy. Only the splits present are returned,
    so a folder without IDX files gives `{}` (it may be a folder of class sub-folders instead).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    images_by_split: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        match = _IMAGES_FILE_NAME.match(path.name)
        split = _split_of(match["stem"]) if match else None
        if split and path.is_file():
            images_by_split.setdefault(split, []).append(path)
    splits: dict[str, tuple[Path, Path]] = {}
    for split in ("train", "test"):
        if split in images_by_split:
            images = _one_images_file(split, images_by_split[split])
            splits[split] = (images, labels_file_for(images))
    return splits


def _split_of(stem: str) -> str | None:
    last_word = re.split(r"[-_.]", stem.rstrip("-_."))[-1].lower()
    return _SPLIT_WORDS.get(last_word)


def _one_images_file(split: str, candidates: list[Path]) -> Path:
    distinct = {path.name.removesuffix(".gz") for path in candidates}
    if len(distinct) > 1:
        names = ", ".join(path.name for path in candidates)
        raise DataError(f"{candidates[0].parent}: several image files for the {split} split ({names})")
    # Uncompressed first: it reads faster and is what someone who ran gunzip meant to use.
    return min(candidates, key=lambda path: path.suffix == ".gz")
