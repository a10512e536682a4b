"""One small fashion-mnist-masks for the whole package's tests (written once, ~5 s)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import FASHION_DIR

# 48-px canvases of up to 2 items: the smallest the canvases allow (the largest item is 45 px).
SMALL_SET = {"canvas": 48, "train_images": 320, "val_images": 32, "test_images": 64, "max_items": 2}


@pytest.fixture(scope="session")
def mask_canvases(tmp_path_factory) -> Path:
    from cnnlab.data.mask_canvases import write_mask_canvases

    return write_mask_canvases(tmp_path_factory.mktemp("masks") / "fashion-mnist-masks",
                               fashion_mnist_dir=FASHION_DIR, **SMALL_SET)
