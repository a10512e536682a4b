"""From Source to uint8 tensors: geometry, bad files, memory vs streaming, statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.data.loader import Batches
from cnnlab.data.prepare import Geometry, channel_statistics, infer_geometry, load_images
from cnnlab.data.sources import open_data
from cnnlab.errors import DataError


def _add_bad_files(folder):
    (folder / "3" / "zero-bytes.png").write_bytes(b"")
    good = next((folder / "5").iterdir()).read_bytes()
    (folder / "5" / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "7" / "text.jpg").write_text("not a picture")
    return {str(folder / "3" / "zero-bytes.png"), str(folder / "5" / "truncated.png"), str(folder / "7" / "text.jpg")}


def test_geometry_is_the_data_own_unless_overridden(digits_folder):
    source = open_data(digits_folder)
    assert infer_geometry(source) == Geometry(1, 8, 8)
    assert infer_geometry(source, channels=3, image_size=(28, 28)) == Geometry(3, 28, 28)


def test_mixed_sizes_warn_of_224_only_when_no_size_was_given(tmp_path, caplog):
    from PIL import Image

    for index, (side, shade) in enumerate([(20, 0), (31, 90), (44, 200)]):
        (tmp_path / f"class{index % 2}").mkdir(exist_ok=True)
        Image.new("L", (side, side), shade).save(tmp_path / f"class{index % 2}" / f"{index}.png")
    source = open_data(tmp_path)
    with caplog.at_level("WARNING"):
        assert infer_geometry(source) == Geometry(1, 224, 224)
    assert "different sizes; making all 224×224 by stretching them" in caplog.text
    assert "--fit crop or pad to keep their aspect ratio" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert infer_geometry(source, image_size=(64, 64)) == Geometry(1, 64, 64)
        assert infer_geometry(source, channels=3, image_size=(32, 48)) == Geometry(3, 32, 48)
    assert "224" not in caplog.text


@pytest.mark.parametrize("cache", ["memory", "none"])
def test_bad_files_are_skipped_and_named(digits_copy, cache):
    bad = _add_bad_files(digits_copy)
    source = open_data(digits_copy)
    assert len(source) == 1797 + 3
    imageset, report = load_images(source, Geometry(1, 8, 8), cache=cache, workers=0)
    assert {error.path for error in report.unreadable} == bad
    assert len(imageset) == 1797
    assert all(name not in bad for name in imageset.source.names)
    assert "skipped 3 unreadable image file(s)" in report.summary()


def test_strict_refuses_before_training(digits_copy):
    bad = _add_bad_files(digits_copy)
    with pytest.raises(DataError) as caught:
        load_images(open_data(digits_copy), Geometry(1, 8, 8), strict=True, workers=0)
    assert all(path in str(caught.value) for path in bad)


def test_memory_and_streaming_give_identical_batches(digits_folder):
    source = open_data(digits_folder).subset(range(0, 1797, 7))
    geometry = Geometry(1, 12, 12)
    in_memory, _ = load_images(source, geometry, cache="memory", workers=0)
    streamed, _ = load_images(source, geometry, cache="none", workers=0)
    assert in_memory.in_memory and not streamed.in_memory
    cpu = torch.device("cpu")
    fast = list(Batches(in_memory, batch_size=32, device=cpu, shuffle=True, seed=5).epoch(2))
    slow = list(Batches(streamed, batch_size=32, device=cpu, shuffle=True, seed=5, workers=0).epoch(2))
    assert len(fast) == len(slow) == -(-len(source) // 32)
    for (a, ya), (b, yb) in zip(fast, slow):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_epochs_are_shuffled_differently_but_reproducibly(digits_folder):
    imageset, _ = load_images(open_data(digits_folder), Geometry(1, 8, 8), workers=0)
    batches = Batches(imageset, batch_size=100, device=torch.device("cpu"), shuffle=True, seed=0)
    first = next(iter(batches.epoch(1)))[1]
    assert torch.equal(first, next(iter(batches.epoch(1)))[1])
    assert not torch.equal(first, next(iter(batches.epoch(2)))[1])


def test_array_sources_convert_channels_and_size():
    from cnnlab.data.prepare import array_to_tensor

    pixels = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    pixels[..., 0] = 255
    gray = array_to_tensor(pixels, Geometry(1, 8, 8))
    assert gray.shape == (2, 1, 8, 8) and int(gray[0, 0, 0, 0]) == 76
    colour = array_to_tensor(pixels[..., 0], Geometry(3, 4, 4))
    assert colour.shape == (2, 3, 4, 4) and int(colour.min()) == 255


def test_channel_statistics_match_numpy(digits_folder):
    imageset, _ = load_images(open_data(digits_folder), Geometry(1, 8, 8), workers=0)
    mean, std = channel_statistics(imageset)
    values = imageset.pixels.numpy().astype(np.float64) / 255.0
    assert mean[0] == pytest.approx(values.mean(), abs=1e-6)
    assert std[0] == pytest.approx(values.std(ddof=1), abs=1e-6)


def test_reading_ahead_keeps_order_raises_the_producers_error_and_stops_with_the_consumer():
    import threading
    import time

    from cnnlab.data.prepare import _ahead_on_a_thread

    assert list(_ahead_on_a_thread(iter(range(50)))) == list(range(50))

    def failing():
        yield 1
        raise ValueError("file 2 is broken")

    consumer = _ahead_on_a_thread(failing())
    assert next(consumer) == 1
    with pytest.raises(ValueError, match="file 2 is broken"):
        next(consumer)

    produced = []

    def endless():
        for number in range(10**9):
            produced.append(number)
            yield number

    consumer = _ahead_on_a_thread(endless(), depth=2)
    assert [next(consumer) for _ in range(3)] == [0, 1, 2]
    consumer.close()  # the consumer stops early: the producer must stop too
    time.sleep(0.5)
    count = len(produced)
    time.sleep(0.3)
    assert len(produced) == count <= 3 + 2 + 1
    assert not any(thread.name == "cnnlab-decode-ahead" and thread.is_alive() for thread in threading.enumerate())


@pytest.mark.parametrize("ahead", [False, True])
def test_a_short_first_batch_then_full_ones_in_order(digits_folder, ahead):
    from cnnlab.data.prepare import decode_files

    paths = sorted(digits_folder.rglob("*.png"))[:23]
    batches = list(decode_files(paths, Geometry(1, 8, 8), workers=0, batch_size=8, first_batch=2, ahead=ahead))
    assert [len(batch) for batch in batches] == [2, 8, 8, 5]
    assert [index for batch in batches for index, _ in batch] == list(range(23))
    whole = list(decode_files(paths, Geometry(1, 8, 8), workers=0, batch_size=23))[0]
    assert all(np.array_equal(pixels, whole[index][1]) for batch in batches for index, pixels in batch)
    assert [len(batch) for batch in decode_files(paths, Geometry(1, 8, 8), workers=0, batch_size=8,
                                                 first_batch=40)] == [23]
    with pytest.raises(ValueError, match="first_batch applies to decoding in this process"):
        next(iter(decode_files(paths, Geometry(1, 8, 8), workers=1, batch_size=8, first_batch=2)))
