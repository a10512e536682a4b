"""Fixtures of the video tests: generated moving-items videos (with their true boxes), one tiny
classifier and one tiny detector, each trained once for the package (the tests check the video
machinery, not accuracy), and a simulated live camera."""

from __future__ import annotations

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
