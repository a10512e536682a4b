"""One trained guide-cnn (the session's `guide_run`, shared with the explain and report tests), real
Fashion-MNIST test images as PNG files, and a real server started on it once per session
(test_serve.py starts another with a queue of one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.serve.server import running_server


@pytest.fixture(scope="session")
def test_images(tmp_path_factory) -> list[tuple[Path, str]]:
    """The first 64 Fashion-MNIST test images as PNG files, with their true class."""
    from PIL import Image

    from cnnlab.data.named import open_named

    source = open_named("fashion-mnist", split="test")
    folder = tmp_path_factory.mktemp("fashion-test")
    images = []
    for index in range(64):
        path = folder / f"{index:03d}.png"
        Image.fromarray(np.asarray(source.pixels[index])).save(path)
        images.append((path, source.class_names[int(source.targets[index])]))
    return images


@pytest.fixture(scope="session")
def confident_image(guide_run, test_images) -> tuple[Path, str]:
    """The test image `cnnlab.predict` gets right with the highest confidence, and its class."""
    import cnnlab

    rows = cnnlab.predict(guide_run, [path for path, _ in test_images])
    right = [(row["confidence"], path, truth) for row, (path, truth) in zip(rows, test_images)
             if row["label"] == truth]
    confidence, path, truth = max(right, key=lambda entry: entry[0])
    assert confidence > 0.8
    return path, truth


@pytest.fixture(scope="session")
def server(guide_run, tmp_path_factory) -> str:
    """The service with a small body limit and pixel budget, and a wait long enough that concurrent
    requests surely meet in one batch."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(guide_run, "--max-body-bytes", 200_000, "--max-image-pixels", 1_000_000,
                        "--max-wait-ms", 100, "--max-batch", 64, log=log) as url:
        yield url
