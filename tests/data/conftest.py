"""Fixtures for the IDX, named-dataset and download tests: real files, a real HTTP server on loopback.

Nothing here is autouse: tests that open named datasets ask for `isolated_datasets`, which points
every folder cnnlab looks in (and every download) somewhere harmless.
"""

from __future__ import annotations

import gzip
import hashlib
import socket
import struct
import threading
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from cnnlab.data.named import DatasetSpec, IdxFiles, RemoteFile

FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")

# IDX type codes, written here independently of cnnlab.data.idx.
IDX_TYPE_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(np.int16): 0x0B,
    np.dtype(np.int32): 0x0C,
    np.dtype(np.float32): 0x0D,
    np.dtype(np.float64): 0x0E,
}


def idx_bytes(values: np.ndarray) -> bytes:
    """An IDX file's bytes, packed by hand: big-endian header, then big-endian values."""
    header = struct.pack(">BBBB", 0, 0, IDX_TYPE_CODES[values.dtype], values.ndim)
    dims = struct.pack(f">{values.ndim}I", *values.shape)
    return header + dims + values.astype(values.dtype.newbyteorder(">")).tobytes()


def _closed_port_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class LoopbackServer:
    root: Path  # the folder served
    url: str  # base URL, no trailing slash


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # keep pytest's output clean
        pass


@pytest.fixture
def loopback_server(tmp_path: Path) -> Iterator[LoopbackServer]:
    """A real HTTP server on 127.0.0.1 serving a temporary folder."""
    root = tmp_path / "served"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    # A short poll interval makes shutdown() quick at the end of each test.
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield LoopbackServer(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def isolated_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No CNNLAB_DATA, no system copies, a cache in tmp_path, downloads to a closed loopback port.

    Returns the cache root ($XDG_CACHE_HOME).
    """
    cache_root = tmp_path / "xdg-cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache_root))
    monkeypatch.setenv("CNNLAB_SYSTEM_DATA_DIRS", "")
    monkeypatch.delenv("CNNLAB_DATA", raising=False)
    # Even a test that downloads by mistake never leaves the machine.
    monkeypatch.setenv("CNNLAB_DOWNLOAD_MIRROR", _closed_port_url())
    return cache_root


@dataclass
class TinyIdxDataset:
    """A 3-class dataset of 4×4 images in MNIST's file layout, small enough to write in every test."""

    spec: DatasetSpec
    files: dict[str, bytes]  # file name -> gzipped bytes, as published
    pixels: dict[str, np.ndarray]  # split -> images
    labels: dict[str, np.ndarray]  # split -> labels

    def write(self, folder: Path, *, gzipped: bool = True) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, content in self.files.items():
            if gzipped:
                (folder / name).write_bytes(content)
            else:
                (folder / name.removesuffix(".gz")).write_bytes(gzip.decompress(content))
        return folder


def _make_tiny_idx_dataset(name: str = "tiny-mnist", *, label_offset: int = 0) -> TinyIdxDataset:
    """`label_offset` rotates the labels, so copies in different folders can be told apart."""
    random = np.random.RandomState(1)
    counts = {"train": 6, "test": 4}
    pixels = {
        split: random.randint(0, 256, size=(count, 4, 4)).astype(np.uint8) for split, count in counts.items()
    }
    labels = {
        split: ((np.arange(count) + label_offset) % 3).astype(np.uint8) for split, count in counts.items()
    }
    prefixes = {"train": "train", "test": "t10k"}
    files: dict[str, bytes] = {}
    remotes = {}
    for split, prefix in prefixes.items():
        pair = []
        for kind, values in (("images-idx3", pixels[split]), ("labels-idx1", labels[split])):
            filename = f"{prefix}-{kind}-ubyte.gz"
            files[filename] = gzip.compress(idx_bytes(values), mtime=0)
            md5 = hashlib.md5(files[filename]).hexdigest()
            pair.append(RemoteFile(filename, md5, ("http://canonical.invalid/tiny/",)))
        remotes[split] = (pair[0], pair[1])
    spec = DatasetSpec(
        name=name,
        description="a tiny IDX dataset written by the tests",
        class_names=("a", "b", "c"),
        split_sizes=counts,
        image_shape=(4, 4),
        storage=IdxFiles(remotes),
    )
    int64_labels = {split: values.astype(np.int64) for split, values in labels.items()}
    return TinyIdxDataset(spec, files, pixels, int64_labels)


@pytest.fixture
def tiny_idx_dataset() -> TinyIdxDataset:
    return _make_tiny_idx_dataset()


@pytest.fixture
def make_tiny_idx_dataset() -> Callable[..., TinyIdxDataset]:
    """`make_tiny_idx_dataset(name="tiny-mnist", label_offset=0)`."""
    return _make_tiny_idx_dataset


@pytest.fixture
def closed_port_url() -> str:
    return _closed_port_url()


@pytest.fixture
def fashion_mnist_debian() -> Path:
    if not (FASHION_MNIST_DEBIAN / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"no Fashion-MNIST in {FASHION_MNIST_DEBIAN} (Debian package dataset-fashion-mnist)")
    return FASHION_MNIST_DEBIAN
