"""Fixtures of the video tests: generated moving-items videos (with their true boxes), one tiny
classifier and one tiny detector, each trained once for the package (the tests check the video
machinery, not accuracy), a simulated live camera, and real RTMP and RTSP streams on loopback
(served by the ffmpeg program and by GStreamer's RTSP server)."""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from cnnlab.video.decode import Frame, Sampling, VideoInfo
from tests.conftest import FASHION_DIR, requires_fashion_mnist
from tests.helpers import run_cli

pytestmark = requires_fashion_mnist

CLIP_FRAMES = 40


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    """40 frames, 25 frames/s, 96×96, three items crossing in lanes (H.264 in .mp4)."""
    from cnnlab.video.moving_items import write_moving_items

    return write_moving_items(tmp_path_factory.mktemp("clips") / "items.mp4", fashion_mnist_dir=FASHION_DIR,
                              frames=CLIP_FRAMES, canvas=96, items=3)


@pytest.fixture(scope="session")
def classifier(tmp_path_factory) -> Path:
    """guide-cnn on 300 Fashion-MNIST images for one epoch (28×28 grey: frames are fitted to it)."""
    runs = tmp_path_factory.mktemp("runs")
    outcome = run_cli("train", "--data", "fashion-mnist", "--model", "guide-cnn", "--epochs", 1, "--limit", 300,
                      "--runs-dir", runs, "--name", "cls", "--seed", 0, "-q")
    assert outcome.exit_code == 0, outcome.stderr
    return runs / "cls"


@pytest.fixture(scope="session")
def detector(tmp_path_factory) -> Path:
    """cnnlab-det on 96 canvases of 64 pixels for one epoch: it finds little, but finds boxes."""
    from cnnlab.data.canvases import write_fashion_canvases

    data = write_fashion_canvases(tmp_path_factory.mktemp("canvases") / "canvases", fashion_mnist_dir=FASHION_DIR,
                                  canvas=64, train_images=96, val_images=16, test_images=4)
    runs = tmp_path_factory.mktemp("runs")
    outcome = run_cli("train", "--task", "detection", "--data", data, "--epochs", 1, "--batch-size", 32,
                      "--runs-dir", runs, "--name", "det", "--seed", 0, "-q")
    assert outcome.exit_code == 0, outcome.stderr
    return runs / "det"


class SimulatedCamera:
    """A live source that cannot be made to wait: `count` moving-items frames, one every 1/`rate` s,
    whether or not anyone takes them (what a camera does)."""

    live = True
    name = "simulated camera"

    def __init__(self, count: int, rate: float, canvas: int = 64):
        from cnnlab.video.moving_items import moving_items_frames

        self.pictures, _ = moving_items_frames(fashion_mnist_dir=FASHION_DIR, frames=count, canvas=canvas, items=2)
        self.rate = rate
        self.info = VideoInfo(canvas, canvas, rate, "rawvideo", 0, None)
        self.stopping = threading.Event()

    def frames(self, sampling: Sampling | None = None) -> Iterator[Frame]:
        started = time.monotonic()
        for index, picture in enumerate(self.pictures):
            due = started + index / self.rate
            if self.stopping.wait(max(0.0, due - time.monotonic())):
                return
            yield Frame(index, index / self.rate, picture)


def decoded_frames(path: Path) -> list[np.ndarray]:
    """Every frame of a video file, decoded with PyAV (what a player shows)."""
    import av

    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


requires_ffmpeg = pytest.mark.skipif(
    shutil.which("ffmpeg") is None,
    reason="needs the ffmpeg program to serve an RTMP stream on loopback: apt-get install ffmpeg "
           "(`make test` installs it)")

STREAM_FRAMES = 50  # the streamed clips: 2 s at 25 frames/s


@pytest.fixture(scope="session")
def rtmp_clip(tmp_path_factory):
    """50 frames, 25 frames/s, 64×64, two moving items: H.264 in FLV, what RTMP carries."""
    from cnnlab.video.moving_items import write_moving_items

    return write_moving_items(tmp_path_factory.mktemp("clips") / "items.flv", fashion_mnist_dir=FASHION_DIR,
                              frames=STREAM_FRAMES, canvas=64, items=2, codec="h264")


@pytest.fixture(scope="session")
def rtsp_clip(tmp_path_factory):
    """The same as `rtmp_clip`, in .mp4 (what the RTSP server's GStreamer pipeline reads)."""
    from cnnlab.video.moving_items import write_moving_items

    return write_moving_items(tmp_path_factory.mktemp("clips") / "items.mp4", fashion_mnist_dir=FASHION_DIR,
                              frames=STREAM_FRAMES, canvas=64, items=2, codec="h264")


def free_port() -> int:
    """A TCP port nothing on loopback listens on now (the OS's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def rtmp_stream(clip: Path) -> Iterator[str]:
    """The URL of `clip` served live over RTMP on loopback: ffmpeg is the server (`-listen 1`), sends
    the clip at its own rate (`-re`) to the first client that connects, then ends, as a publisher
    that stops does. The ffmpeg process is killed on the way out, whatever happened."""
    port = free_port()
    url = f"rtmp://127.0.0.1:{port}/live/test"
    command = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", "-i", str(clip),
               "-c", "copy", "-f", "flv", "-listen", "1", url]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        _wait_until_listening(port, process)
        yield url
    finally:
        process.kill()
        process.communicate(timeout=10)


def _wait_until_listening(port: int, process: subprocess.Popen, seconds: float = 10.0) -> None:
    """Until `process` listens on `port`. Read from /proc/net/tcp, not by connecting: ffmpeg's RTMP
    server takes one client, and a probe would be it."""
    listening = f"0100007F:{port:04X}"  # 127.0.0.1, as the kernel writes it, in state 0A (LISTEN)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"ffmpeg ended before serving the stream: {process.stderr.read().decode()[-500:]}")
        try:
            table = Path("/proc/net/tcp").read_text().splitlines()[1:]
        except OSError:  # not Linux: give it the time it takes here (~0.1 s), ten times over
            time.sleep(1.0)
            return
        if any(line.split()[1] == listening and line.split()[3] == "0A" for line in table):
            return
        time.sleep(0.05)
    pytest.fail(f"ffmpeg did not listen on 127.0.0.1:{port} within {seconds:g} s")


SYSTEM_PYTHON = Path("/usr/bin/python3")  # has GStreamer's bindings where Debian's packages are installed
RTSP_SERVER_MISSING = ("needs GStreamer's RTSP server for the system Python: apt-get install python3-gi "
                       "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good (`make test` installs it)")


@contextlib.contextmanager
def rtsp_stream(clip: Path) -> Iterator[str]:
    """The URL of `clip` (H.264 .mp4) served live over RTSP on loopback by tests/video/rtsp_server.py
    (gst-rtsp-server, run by the system Python), which ends after sending it once. Skips the test
    where that server cannot run; the process is killed on the way out, whatever happened."""
    if not SYSTEM_PYTHON.exists():
        pytest.skip(RTSP_SERVER_MISSING)
    port = free_port()
    command = [str(SYSTEM_PYTHON), str(Path(__file__).with_name("rtsp_server.py")), str(clip), str(port)]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    try:
        _wait_until_ready(process)
        yield f"rtsp://127.0.0.1:{port}/live"
    finally:
        process.kill()
        process.communicate(timeout=10)


def _wait_until_ready(process: subprocess.Popen, seconds: float = 15.0) -> None:
    """Until the RTSP server says "ready" (it listens); a skip where GStreamer's bindings are missing."""
    readable, _, _ = select.select([process.stdout], [], [], seconds)
    if readable and process.stdout.readline().strip() == b"ready":
        return
    process.kill()
    errors = process.communicate(timeout=10)[1].decode()
    if "ModuleNotFoundError" in errors or "Namespace GstRtspServer not available" in errors:
        pytest.skip(RTSP_SERVER_MISSING)
    pytest.fail(f"the RTSP server did not start within {seconds:g} s: {errors[-500:]}")
