"""Downloading one file safely: mirrors tried in turn, md5 checked, no half-written file left behind.

The file is streamed into a temporary file in the destination folder and renamed into place only
once complete and verified, so an interrupted or corrupt download never looks like a good copy,
and two processes downloading the same file at once both end with a whole file.
Only the standard library's urllib is used; `file://` URLs work too.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path
from typing import BinaryIO, Sequence

from cnnlab import __version__
from cnnlab.errors import DataError

_CHUNK_BYTES = 1 << 20
# Some dataset hosts refuse urllib's default "Python-urllib/3.x" agent.
_USER_AGENT = f"cnnlab/{__version__}"


class _AttemptFailed(Exception):
    """One URL did not give a good file; the message says why."""


def md5_of(path: str | Path) -> str:
    """The hexadecimal md5 of a file, read in chunks so a large archive does not fill memory.

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "hello.txt"
    >>> _ = path.write_bytes(b"hello")
    >>> md5_of(path)
    '5d41402abc4b2a76b9719d911017c592'
    """
    digest = hashlib.md5(usedforsecurity=False)  # a checksum against corruption, not a security check
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(
    urls: Sequence[str],
    destination: str | Path,
    *,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
) -> Path:
    """Download the first of `urls` that gives a file with the right md5 to `destination`.

    A failing URL (HTTP error, no connection, wrong md5, connection closed early) is skipped for
    the next; when none works, the DataError lists every URL with its error. With `progress`, a
    progress bar (bytes, rate, time left) is written to stderr. `timeout` is in seconds, for
    connecting and for each read.

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (folder / "remote.txt").write_bytes(b"hello")
    >>> path = download_file([(folder / "remote.txt").as_uri()], folder / "local.txt",
    ...                      md5="5d41402abc4b2a76b9719d911017c592", progress=False)
    >>> path.read_bytes()
    b'hello'
    """
    destination = Path(destination)
    if not urls:
        raise DataError(f"cannot download {destination.name}: no URL to download it from")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or error
        raise DataError(f"cannot create the folder {destination.parent} ({reason})") from None
    failures = []
    for url in urls:
        try:
            _download_verified(url, destination, md5=md5, progress=progress, timeout=timeout)
            return destination
        except _AttemptFailed as failure:
            failures.append(f"  {url}: {failure}")
    raise DataError(f"could not download {destination.name}:\n" + "\n".join(failures))


def _download_verified(
    url: str, destination: Path, *, md5: str | None, progress: bool, timeout: float
) -> None:
    """Stream `url` into a temporary file beside `destination`, check it, rename it into place."""
    handle, temporary_name = tempfile.mkstemp(
        dir=destination.parent, prefix=f".{destination.name}.", suffix=".part"
    )
    temporary = Path(temporary_name)
    try:
        with os.fdopen(handle, "wb") as output:
            _stream(url, output, label=destination.name, progress=progress, timeout=timeout)
        if md5 is not None:
            actual = md5_of(temporary)
            if actual != md5.lower():
                raise _AttemptFailed(f"md5 mismatch: expected {md5.lower()}, got {actual}")
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)  # already gone after a successful rename


def _stream(url: str, output: BinaryIO, *, label: str, progress: bool, timeout: float) -> None:
    # Imported here: only a download needs them, and they slow down `import cnnlab.data.named`.
    import urllib.error
    import urllib.request
    from http.client import HTTPException

    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    received = 0
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            expected = _content_length(response)
            with tqdm(
                total=expected,
                desc=label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=sys.stderr,
                disable=not progress,
            ) as bar:
                while chunk := response.read(_CHUNK_BYTES):
                    output.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
    except urllib.error.HTTPError as error:
        raise _AttemptFailed(f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _AttemptFailed(str(error.reason)) from None
    except (OSError, HTTPException, ValueError) as error:  # timeouts, resets, malformed URLs
        raise _AttemptFailed(f"{type(error).__name__}: {error}") from None
    # urllib does not complain when a server closes the connection early, so check the length.
    if expected is not None and received != expected:
        raise _AttemptFailed(f"the connection closed after {received:,} of {expected:,} bytes")


def _content_length(response: object) -> int | None:
    value = getattr(response, "headers", {}).get("Content-Length")
    return int(value) if value and value.isdigit() else None
