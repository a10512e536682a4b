"""A real `cnnlab serve` in a subprocess on a free loopback port, and plain-socket requests for the
cases an HTTP client library would not send (a body that lies about its length, endless chunks)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def running_server(model: Path, *flags: object, log: Path) -> Iterator[str]:
    """`cnnlab serve MODEL --port 0 FLAGS` until the block ends; yields its base URL, as it printed it."""
    with open(log, "w") as errors:
        process = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(model), "--port", "0",
                                    *map(str, flags)], stdout=subprocess.PIPE, stderr=errors, text=True,
                                   start_new_session=True)
    try:
        line = process.stdout.readline()  # the URL line, once the model is loaded and the port bound
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, f"no URL printed: {line!r}; {log.read_text()}"
        yield found.group(0).rstrip("/")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        process.stdout.close()


def raw_exchange(url: str, head: str, body_parts: Iterator[bytes], timeout: float = 20) -> tuple[int, str]:
    """Send `head` (request line and headers), then the body parts while the server keeps reading;
    return the status and the body of the response, which may come before the body is all sent."""
    host, port = re.match(r"http://([^:/]+):(\d+)", url).groups()
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        connection.sendall(head.encode("latin-1"))
        try:
            for part in body_parts:
                connection.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed: what we read next says why
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = connection.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
            if b"\r\n\r\n" in received and _complete(received):
                break
    status_line, _, rest = received.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


def _complete(response: bytes) -> bool:
    head, _, body = response.partition(b"\r\n\r\n")
    length = re.search(rb"(?i)content-length: *(\d+)", head)
    return length is not None and len(body) >= int(length.group(1))
