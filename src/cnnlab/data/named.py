"""Named datasets with their standard splits: `open_named("fashion-mnist", split="test")`.

A dataset is data, a `DatasetSpec`: its classes, the size and image shape of each split, the files
each split needs (with download URLs and md5) and how those files are stored. The specs live in
one registry, `DATASETS`; `open_named` looks a name up and hands its spec to `open_dataset`, which
also takes a spec built elsewhere (a test's tiny dataset, a plug-in's).

Where a split's files are looked for, in order; the first folder holding all of them wins:

1. `data_dir` (the `--data-dir` flag): `data_dir/<name>/`, then `data_dir` itself;
2. `$CNNLAB_DATA`: the same two folders;
3. the download cache, `$XDG_CACHE_HOME/cnnlab/datasets/<name>/` (`~/.cache/...` by default);
4. system copies, `/usr/share/datasets/<name>/` (where Debian installs Fashion-MNIST);
   `$CNNLAB_SYSTEM_DATA_DIRS`, a list separated by `os.pathsep`, replaces `SYSTEM_DATA_DIRS`.

A local copy is checked by its structure (file format, image shape, image and class counts), not
by md5: Debian re-gzips its copy, so its bytes differ from the canonical download although the
images are the same. When no folder has the files they are downloaded into the cache and their md5
checked. `$CNNLAB_DOWNLOAD_MIRROR=URL` fetches every file from `URL/<name>/<file>` instead of its
canonical URLs (the dataset's name is in the path because MNIST and Fashion-MNIST share file names).
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from cnnlab.data.download import download_file
from cnnlab.data.idx import numbered_names, read_idx_pair
from cnnlab.data.source import Source
from cnnlab.errors import DataError
from cnnlab.registry import Entry, Registry, UnknownNameError

SYSTEM_DATA_DIRS: tuple[Path, ...] = (Path("/usr/share/datasets"),)
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class RemoteFile:
    """One file as published: its name, the md5 of the published bytes, and the mirrors serving it."""

    filename: str
    md5: str
    base_urls: tuple[str, ...]

    def urls(self) -> list[str]:
        return [base.rstrip("/") + "/" + self.filename for base in self.base_urls]


class Storage(Protocol):
    """How a dataset's files are laid out in a folder, and how a split is read from them."""

    def files(self, split: str) -> tuple[RemoteFile, ...]:
        """The files the split needs; none for a dataset that comes with a library."""
        ...

    def missing(self, folder: Path, split: str) -> list[RemoteFile]:
        """The files of `split` that `folder` lacks, in any form this storage can read."""
        ...

    def read(self, folder: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 pixels (N, H, W[, C]), int64 class indices (N,)) of one split."""
        ...


@dataclass(frozen=True)
class DatasetSpec:
    """Everything cnnlab knows about a named dataset before reading it."""

    name: str
    description: str
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]  # also the list of splits, in order
    image_shape: tuple[int, ...]  # (H, W) for grayscale, (H, W, C) for colour
    storage: Storage
    # Whether a mirror image shows the same class: a mirrored shoe is a shoe, a mirrored 2 or 7 is
    # not a digit. Training warns when flips (augmentation or test-time) meet data where it is not.
    mirror_invariant: bool = True

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.split_sizes)


# --- storage formats ----------------------------------------------------------------------------


@dataclass(frozen=True)
class IdxFiles:
    """An IDX images file and an IDX labels file per split, as MNIST publishes them."""

    splits: dict[str, tuple[RemoteFile, RemoteFile]]  # split -> (images, labels)

    def files(self, split: str) -> tuple[RemoteFile, ...]:
        return self.splits[split]

    def missing(self, folder: Path, split: str) -> list[RemoteFile]:
        return [remote for remote in self.files(split) if _idx_copy(folder, remote) is None]

    def read(self, folder: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
        assert folder is not None
        images, labels = (_idx_copy(folder, remote) for remote in self.files(split))
        assert images is not None and labels is not None
        return read_idx_pair(images, labels)


def _idx_copy(folder: Path, remote: RemoteFile) -> Path | None:
    # Accept a file as published or un-gzipped: `gunzip *.gz` is a common first step.
    for name in (remote.filename, remote.filename.removesuffix(".gz")):
        if (folder / name).is_file():
            return folder / name
    return None


_CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32  # one label byte, then the red, green and blue 32×32 planes


@dataclass(frozen=True)
class CifarBinary:
    """CIFAR's binary version: an archive whose `batch_folder/` holds files of 3,073-byte records.

    A copy is either the archive itself or the extracted `batch_folder/` (or its files directly).
    """

    archive: RemoteFile
    batches: dict[str, tuple[str, ...]]  # split -> batch file names, in order
    batch_folder: str = "cifar-10-batches-bin"

    def files(self, split: str) -> tuple[RemoteFile, ...]:
        return (self.archive,)

    def missing(self, folder: Path, split: str) -> list[RemoteFile]:
        has_copy = (folder / self.archive.filename).is_file() or self._extracted(folder, split)
        return [] if has_copy else [self.archive]

    def read(self, folder: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
        assert folder is not None
        batches = [_cifar_records(data, where) for where, data in self._batch_contents(folder, split)]
        pixels, labels = zip(*batches)
        return np.concatenate(pixels), np.concatenate(labels)

    def _batch_contents(self, folder: Path, split: str) -> list[tuple[str, bytes]]:
        """(where, bytes) of each batch file of `split`, extracted or inside the archive."""
        extracted = self._extracted(folder, split)
        if extracted is not None:  # faster than decompressing the archive again
            paths = [extracted / name for name in self.batches[split]]
            return [(str(path), _read_file(path)) for path in paths]
        archive = folder / self.archive.filename
        members = [f"{self.batch_folder}/{name}" for name in self.batches[split]]
        return [(f"{archive}:{name}", data) for name, data in _read_members(archive, members).items()]

    def _extracted(self, folder: Path, split: str) -> Path | None:
        for candidate in (folder / self.batch_folder, folder):
            if all((candidate / name).is_file() for name in self.batches[split]):
                return candidate
        return None


def _read_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None


def _read_members(archive: Path, names: list[str]) -> dict[str, bytes]:
    """The named members of a tar archive, read in one pass (a gzip stream cannot seek back cheaply)."""
    import tarfile  # only CIFAR archives need it

    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                if name in names and member.isfile():
                    contents[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        raise DataError(f"{archive}: cannot read the archive ({error})") from None
    missing = [name for name in names if name not in contents]
    if missing:
        raise DataError(f"{archive}: the archive has no {', '.join(missing)}; is it CIFAR's binary version?")
    return {name: contents[name] for name in names}


def _cifar_records(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    if len(data) % _CIFAR_RECORD_BYTES:
        raise DataError(
            f"{where}: {len(data):,} bytes is not a whole number of {_CIFAR_RECORD_BYTES:,}-byte CIFAR "
            "records (1 label byte + 3×32×32 pixels); is it CIFAR's binary version?"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD_BYTES)
    planes = records[:, 1:].reshape(-1, 3, 32, 32)  # channel, row, column
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), records[:, 0].astype(np.int64)


@dataclass(frozen=True)
class ScikitLearnDigits:
    """scikit-learn's bundled 8×8 digits, with a stratified split that is the same everywhere."""

    test_fraction: float = 0.2
    seed: int = 0

    def files(self, split: str) -> tuple[RemoteFile, ...]:
        return ()

    def missing(self, folder: Path, split: str) -> list[RemoteFile]:
        return []

    def read(self, folder: Path | None, split: str) -> tuple[np.ndarray, np.ndarray]:
        pixels, labels = _load_sklearn_digits()
        train, test = _stratified_split(labels, test_fraction=self.test_fraction, seed=self.seed)
        chosen = train if split == "train" else test
        return pixels[chosen], labels[chosen]


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError(
            "the digits dataset comes with scikit-learn, which is not installed: "
            "pip install scikit-learn (or pip install 'cnnlab[datasets]')"
        ) from None
    digits = load_digits()
    # Values count the set pixels of 4×4 blocks (0-16); stretch them to 0-255 like any other image.
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return pixels, digits.target.astype(np.int64)


def _stratified_split(
    labels: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices, sorted, with `test_fraction` of every class (rounded) in test."""
    # RandomState, not default_rng: NumPy freezes its stream, so the split is the same on every
    # machine and every NumPy version.
    random = np.random.RandomState(seed)
    test_parts = []
    for label in np.unique(labels):
        members = random.permutation(np.flatnonzero(labels == label))
        test_parts.append(members[: round(len(members) * test_fraction)])
    test = np.sort(np.concatenate(test_parts))
    return np.setdiff1d(np.arange(len(labels)), test), test


# --- the built-in datasets ----------------------------------------------------------------------

DATASETS: Registry[DatasetSpec] = Registry("dataset")


def _mnist_style(
    name: str,
    *,
    description: str,
    class_names: tuple[str, ...],
    base_urls: tuple[str, ...],
    md5: dict[str, str],
    mirror_invariant: bool = True,
) -> DatasetSpec:
    def remote(filename: str) -> RemoteFile:
        return RemoteFile(filename, md5[filename], base_urls)

    files = IdxFiles(
        {
            "train": (remote("train-images-idx3-ubyte.gz"), remote("train-labels-idx1-ubyte.gz")),
            "test": (remote("t10k-images-idx3-ubyte.gz"), remote("t10k-labels-idx1-ubyte.gz")),
        }
    )
    return DatasetSpec(name, description, class_names, {"train": 60_000, "test": 10_000}, (28, 28), files,
                       mirror_invariant=mirror_invariant)


_DIGIT_NAMES = tuple(str(digit) for digit in range(10))

# Sources and checksums as torchvision uses them.
for _spec in (
    _mnist_style(
        "fashion-mnist",
        description="Zalando's 28×28 grayscale photos of clothing, 10 classes (60,000 train / 10,000 test)",
        class_names=(
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
        ),  # fmt: skip
        base_urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
    _mnist_style(
        "mnist",
        description="handwritten digits 0-9, 28×28 grayscale (60,000 train / 10,000 test)",
        class_names=_DIGIT_NAMES,
        base_urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
        mirror_invariant=False,
    ),
    DatasetSpec(
        "cifar10",
        "32×32 colour photos, 10 classes (50,000 train / 10,000 test)",
        class_names=(
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck",
        ),  # fmt: skip
        split_sizes={"train": 50_000, "test": 10_000},
        image_shape=(32, 32, 3),
        # The binary version, never the Python one: that is pickled, and cnnlab never unpickles.
        storage=CifarBinary(
            archive=RemoteFile(
                "cifar-10-binary.tar.gz",
                md5="c32a1d4ab5d03f1284b67883e8d87530",
                base_urls=("https://www.cs.toronto.edu/~kriz/",),
            ),
            batches={
                "train": tuple(f"data_batch_{number}.bin" for number in range(1, 6)),
                "test": ("test_batch.bin",),
            },
        ),
    ),
    DatasetSpec(
        "digits",
        "scikit-learn's bundled 8×8 handwritten digits, 10 classes (1,438 train / 359 test)",
        class_names=_DIGIT_NAMES,
        split_sizes={"train": 1_438, "test": 359},
        image_shape=(8, 8),
        storage=ScikitLearnDigits(),
        mirror_invariant=False,
    ),
):
    DATASETS.add(_spec.name, _spec, description=_spec.description)


# --- public API ---------------------------------------------------------------------------------


def list_datasets() -> list[Entry[DatasetSpec]]:
    """All named datasets, in registration order."""
    return list(DATASETS)


def is_named(name: str) -> bool:
    """Whether `name` is a named dataset (rather than, say, a folder).

    >>> is_named("fashion-mnist"), is_named("./my-photos"), is_named("fashion-mnist-boxes")
    (True, False, True)
    """
    from cnnlab.data.generated import is_generated

    return name in DATASETS or is_generated(name)


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a named dataset; an unknown name raises a DataError listing the known ones."""
    try:
        return DATASETS.get(name).builder
    except UnknownNameError as error:
        raise DataError(str(error)) from None


def open_named(
    name: str,
    *,
    split: str = "train",
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> Source:
    """One split of a named dataset, from a local copy or downloaded into the cache.

    `data_dir` is looked in first (the module docstring gives the whole order). With
    `download=False` a missing dataset raises a DataError saying where to put its files instead of
    downloading them; `progress` shows a download's progress bar on stderr.

    >>> source = open_named("digits", split="test")
    >>> source.description, source.names[7], source.pixels.shape
    ('digits (test split, 359 images)', 'digits/test/007', (359, 8, 8))
    """
    spec = dataset_spec(name)
    return open_dataset(spec, split=split, data_dir=data_dir, download=download, progress=progress)


def open_dataset(
    spec: DatasetSpec,
    *,
    split: str = "train",
    data_dir: str | Path | None = None,
    download: bool = True,
    progress: bool = True,
) -> Source:
    """`open_named` for a spec that need not be registered."""
    if split not in spec.split_sizes:
        raise DataError(f"{spec.name} has no split {split!r}; its splits are {', '.join(spec.splits)}")
    folder = _find_or_download(spec, split, data_dir, download=download, progress=progress)
    pixels, targets = spec.storage.read(folder, split)
    _check_structure(spec, split, pixels, targets, where=folder or spec.name)
    return Source(
        description=f"{spec.name} ({split} split, {len(targets):,} images)",
        names=numbered_names(f"{spec.name}/{split}", len(targets)),
        targets=targets.astype(np.int64),
        class_names=list(spec.class_names),
        pixels=pixels,
    )


def dataset_cache_dir(name: str) -> Path:
    """Where downloads of dataset `name` go: `$XDG_CACHE_HOME/cnnlab/datasets/<name>`."""
    xdg_cache = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec says to ignore a relative value.
    base = Path(xdg_cache) if xdg_cache and Path(xdg_cache).is_absolute() else Path.home() / ".cache"
    return base / "cnnlab" / "datasets" / name


def system_data_dirs() -> list[Path]:
    """Folders holding system-wide dataset copies: `$CNNLAB_SYSTEM_DATA_DIRS`, else `SYSTEM_DATA_DIRS`."""
    value = os.environ.get("CNNLAB_SYSTEM_DATA_DIRS")
    if value is None:
        return list(SYSTEM_DATA_DIRS)
    return [Path(folder) for folder in value.split(os.pathsep) if folder]


def search_folders(name: str, data_dir: str | Path | None = None) -> list[Path]:
    """The folders looked in for dataset `name`, in order."""
    folders: list[Path] = []
    for root in (data_dir, os.environ.get("CNNLAB_DATA") or None):
        if root is not None:
            # The sub-folder first: it cannot hold another dataset's files of the same names.
            folders += [Path(root).expanduser() / name, Path(root).expanduser()]
    folders.append(dataset_cache_dir(name))
    folders += [folder / name for folder in system_data_dirs()]
    return list(dict.fromkeys(folders))


def local_copy(name: str, data_dir: str | Path | None = None) -> Path | None:
    """The folder holding every split of dataset `name` on this machine, if any (None for bundled
    datasets such as digits, and for datasets not found)."""
    spec = dataset_spec(name)
    if not any(spec.storage.files(split) for split in spec.splits):
        return None
    for folder in search_folders(name, data_dir):
        if all(not spec.storage.missing(folder, split) for split in spec.splits):
            return folder
    return None


# --- finding, downloading, checking -------------------------------------------------------------


def _find_or_download(
    spec: DatasetSpec, split: str, data_dir: str | Path | None, *, download: bool, progress: bool
) -> Path | None:
    """The folder holding the split's files, downloading them into the cache if none does."""
    if not spec.storage.files(split):
        return None
    folders = search_folders(spec.name, data_dir)
    for folder in folders:
        if not spec.storage.missing(folder, split):
            return folder
    if not download:
        raise _not_found(spec, split, folders, "downloading is turned off")
    cache = dataset_cache_dir(spec.name)
    try:
        for remote in spec.storage.missing(cache, split):
            download_file(
                _download_urls(spec.name, remote),
                cache / remote.filename,
                md5=remote.md5,
                progress=progress,
                timeout=DOWNLOAD_TIMEOUT_S,
            )
    except DataError as error:
        raise _not_found(spec, split, folders, f"the download failed: {error}") from None
    return cache


def _download_urls(name: str, remote: RemoteFile) -> list[str]:
    mirror = os.environ.get("CNNLAB_DOWNLOAD_MIRROR")
    if mirror:
        return [f"{mirror.rstrip('/')}/{name}/{remote.filename}"]
    return remote.urls()


def _not_found(spec: DatasetSpec, split: str, folders: list[Path], reason: str) -> DataError:
    files = "\n".join(
        f"  {remote.filename} (md5 {remote.md5}) from {' or '.join(_download_urls(spec.name, remote))}"
        for remote in spec.storage.files(split)
    )
    looked_in = "\n".join(f"  {folder}" for folder in folders)
    return DataError(
        f"the {spec.name} dataset ({split} split) is not on this machine, and {reason}\n"
        f"It needs these files:\n{files}\n"
        f"Looked for them in:\n{looked_in}\n"
        f"Put them in {dataset_cache_dir(spec.name)}, or in a folder FOLDER (or FOLDER/{spec.name}/) "
        "that you name with --data-dir FOLDER (data_dir= in Python) or CNNLAB_DATA=FOLDER."
    )


def _check_structure(
    spec: DatasetSpec, split: str, pixels: np.ndarray, targets: np.ndarray, where: str | Path
) -> None:
    """Refuse a copy whose shape or counts are not those of the dataset (a partial or wrong copy)."""
    problems = []
    expected_count = spec.split_sizes[split]
    if len(pixels) != expected_count:
        problems.append(f"{len(pixels):,} images where the split has {expected_count:,}")
    if pixels.dtype != np.uint8 or pixels.shape[1:] != spec.image_shape:
        problems.append(
            f"images shaped {pixels.shape[1:]} ({pixels.dtype}), expected {spec.image_shape} (uint8)"
        )
    if len(targets) and (targets.min() < 0 or targets.max() >= len(spec.class_names)):
        problems.append(
            f"labels from {targets.min()} to {targets.max()}, expected 0 to {len(spec.class_names) - 1}"
        )
    if problems:
        raise DataError(
            f"{where}: this is not a complete copy of {spec.name} ({split} split): {'; '.join(problems)}. "
            "Replace or remove it; cnnlab downloads the dataset when it finds no copy."
        )
