"""Downloads from a real HTTP server on 127.0.0.1, and the named-dataset download flow end to end."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pytest

from cnnlab.data.download import download_file, md5_of
from cnnlab.data.named import dataset_cache_dir, open_dataset, open_named
from cnnlab.errors import DataError

if TYPE_CHECKING:
    from .conftest import LoopbackServer, TinyIdxDataset

CONTENT = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture
def served_file(loopback_server: LoopbackServer) -> tuple[str, str]:
    """(URL, md5) of a 1 MiB file on the loopback server."""
    (loopback_server.root / "weights.bin").write_bytes(CONTENT)
    return f"{loopback_server.url}/weights.bin", hashlib.md5(CONTENT).hexdigest()


def test_md5_of_matches_a_known_digest(tmp_path: Path) -> None:
    path = tmp_path / "hello.txt"
    path.write_bytes(b"hello")
    assert md5_of(path) == "5d41402abc4b2a76b9719d911017c592"  # the well-known md5 of "hello"


def test_download_writes_the_file_and_nothing_else(served_file: tuple[str, str], tmp_path: Path) -> None:
    url, md5 = served_file
    destination = tmp_path / "downloads" / "weights.bin"
    assert download_file([url], destination, md5=md5, progress=False, timeout=5) == destination
    assert destination.read_bytes() == CONTENT
    assert list(destination.parent.iterdir()) == [destination]


def test_wrong_md5_leaves_no_file_behind(served_file: tuple[str, str], tmp_path: Path) -> None:
    url, md5 = served_file
    folder = tmp_path / "downloads"
    with pytest.raises(DataError) as error:
        download_file([url], folder / "weights.bin", md5="0" * 32, progress=False, timeout=5)
    assert f"{url}: md5 mismatch: expected {'0' * 32}, got {md5}" in str(error.value)
    assert list(folder.iterdir()) == []  # neither the file nor its temporary


def test_a_404_falls_back_to_the_next_url(served_file: tuple[str, str], tmp_path: Path) -> None:
    url, md5 = served_file
    missing_url = url.replace("weights.bin", "gone.bin")
    destination = tmp_path / "weights.bin"
    download_file([missing_url, url], destination, md5=md5, progress=False, timeout=5)
    assert destination.read_bytes() == CONTENT


def test_every_failing_url_is_listed_with_its_error(
    loopback_server: LoopbackServer, closed_port_url: str, tmp_path: Path
) -> None:
    urls = [f"{loopback_server.url}/gone.bin", f"{closed_port_url}/weights.bin"]
    folder = tmp_path / "downloads"
    with pytest.raises(DataError) as error:
        download_file(urls, folder / "weights.bin", md5=None, progress=False, timeout=5)
    lines = str(error.value).splitlines()
    assert lines[0] == "could not download weights.bin:"
    assert lines[1] == f"  {urls[0]}: HTTP 404 File not found"
    assert lines[2].startswith(f"  {urls[1]}: ") and "Connection refused" in lines[2]
    assert list(folder.iterdir()) == []


class _ShortBodyHandler(BaseHTTPRequestHandler):
    """Promises 1,000 bytes and sends 10, as a server that dies mid-transfer does."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        self.wfile.write(b"0123456789")
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def short_body_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ShortBodyHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/file.bin"
    server.shutdown()
    server.server_close()
    thread.join()


def test_a_connection_closed_early_is_not_a_download(short_body_url: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="the connection closed after 10 of 1,000 bytes"):
        download_file([short_body_url], tmp_path / "file.bin", md5=None, progress=False, timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_goes_to_stderr_only_when_asked(
    served_file: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, md5 = served_file
    download_file([url], tmp_path / "quiet.bin", md5=md5, progress=False, timeout=5)
    assert capsys.readouterr() == ("", "")
    download_file([url], tmp_path / "loud.bin", md5=md5, progress=True, timeout=5)
    out, err = capsys.readouterr()
    assert out == ""
    assert "loud.bin" in err and "100%" in err and "1.00M/1.00M" in err


# --- the named-dataset flow, through CNNLAB_DOWNLOAD_MIRROR -------------------------------------


def test_open_dataset_downloads_into_the_cache_then_works_offline(
    loopback_server: LoopbackServer,
    isolated_datasets: Path,
    tiny_idx_dataset: TinyIdxDataset,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tiny_idx_dataset.write(loopback_server.root / "tiny-mnist")  # the mirror's layout: <name>/<file>
    monkeypatch.setenv("CNNLAB_DOWNLOAD_MIRROR", loopback_server.url)
    source = open_dataset(tiny_idx_dataset.spec, split="test", progress=False)
    assert source.description == "tiny-mnist (test split, 4 images)"
    assert source.pixels is not None
    np.testing.assert_array_equal(source.pixels, tiny_idx_dataset.pixels["test"])
    assert source.targets.tolist() == tiny_idx_dataset.labels["test"].tolist()
    cache = dataset_cache_dir("tiny-mnist")
    downloaded = sorted(path.name for path in cache.iterdir())
    assert downloaded == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # With the mirror unreachable, the cached copy is enough.
    monkeypatch.setenv("CNNLAB_DOWNLOAD_MIRROR", "http://127.0.0.1:9")
    again = open_dataset(tiny_idx_dataset.spec, split="test", download=False)
    assert again.targets.tolist() == source.targets.tolist()


def test_open_dataset_downloads_only_what_the_cache_lacks(
    loopback_server: LoopbackServer,
    isolated_datasets: Path,
    tiny_idx_dataset: TinyIdxDataset,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tiny_idx_dataset.write(dataset_cache_dir("tiny-mnist"))
    (dataset_cache_dir("tiny-mnist") / "train-labels-idx1-ubyte.gz").unlink()
    served = loopback_server.root / "tiny-mnist"
    served.mkdir()
    (served / "train-labels-idx1-ubyte.gz").write_bytes(tiny_idx_dataset.files["train-labels-idx1-ubyte.gz"])
    monkeypatch.setenv("CNNLAB_DOWNLOAD_MIRROR", loopback_server.url)
    source = open_dataset(tiny_idx_dataset.spec, split="train", progress=False)
    assert source.targets.tolist() == tiny_idx_dataset.labels["train"].tolist()


def test_a_mirror_serving_other_bytes_fails_the_md5_check(
    loopback_server: LoopbackServer, isolated_datasets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real Fashion-MNIST spec, fetched from a mirror whose file is not the canonical one.
    served = loopback_server.root / "fashion-mnist"
    served.mkdir()
    (served / "t10k-images-idx3-ubyte.gz").write_bytes(b"not the real file")
    monkeypatch.setenv("CNNLAB_DOWNLOAD_MIRROR", loopback_server.url + "/")
    with pytest.raises(DataError) as error:
        open_named("fashion-mnist", split="test", progress=False)
    message = str(error.value)
    assert f"{loopback_server.url}/fashion-mnist/t10k-images-idx3-ubyte.gz: md5 mismatch" in message
    assert "expected bef4ecab320f06d8554ea6380940ec79" in message
    assert "--data-dir" in message
    cache = dataset_cache_dir("fashion-mnist")
    assert list(cache.iterdir()) == []
