"""Frames fitted to the model at decoding (libswscale, cnnlab.video.convert) against the still-image
path: the same pictures, model inputs within a few levels, the same top-1 as `predict` on the frame
saved as a PNG; pictures only when asked; the frame queue hands a whole batch over at once."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.video.conftest import CLIP_FRAMES, requires_fashion_mnist
from tests.video.test_damaged import OPENCV_DATA, needs_opencv_doc


def _decoded(path, count):
    import av

    with av.open(str(path)) as container:
        for index, decoded in enumerate(container.decode(video=0)):
            if index >= count:
                return
            yield decoded


def _differences(path, fitting, count=12):
    """(largest mean, largest) absolute difference between the converter's model input and the
    still-image path's fitting of the same frame's RGB picture; checks the pictures are PyAV's own."""
    from cnnlab.video.convert import FrameConverter

    converter = FrameConverter(fitting, pictures=True)
    means, largest = [], 0
    for index, decoded in enumerate(_decoded(path, count)):
        frame = converter(decoded, index, 0.0)
        assert np.array_equal(frame.image, decoded.to_ndarray(format="rgb24"))  # pixel for pixel
        assert frame.model_input.shape == (fitting.channels, fitting.height, fitting.width)
        difference = np.abs(frame.model_input.astype(int) - fitting.from_picture(frame.image).astype(int))
        means.append(difference.mean())
        largest = max(largest, int(difference.max()))
    return max(means), largest


@requires_fashion_mnist
@pytest.mark.parametrize("channels, height, width", [(1, 28, 28), (3, 28, 28), (1, 32, 48)])
def test_libswscales_model_input_is_within_levels_of_the_still_image_path(clip, channels, height, width):
    from cnnlab.video.convert import Fitting

    mean, largest = _differences(clip.path, Fitting(channels, height, width))
    assert mean <= 0.5 and largest <= 24  # measured on the 96×96 clip: 0.21 / 15 at 28×28


def _single_threaded_input_is_libswscales_default(path, fitting, count):
    """The converter's model input (libswscale on one thread) against PyAV's default reformat
    (libswscale's automatic threads) of the same frame, pixel for pixel."""
    from av.video.reformatter import VideoReformatter

    from cnnlab.video.convert import FrameConverter

    converter, default = FrameConverter(fitting, pictures=False), VideoReformatter()
    for index, decoded in enumerate(_decoded(path, count)):
        form = "gray" if fitting.channels == 1 else "rgb24"
        pixels = default.reformat(decoded, fitting.width, fitting.height, form,
                                  interpolation=converter._scaling).to_ndarray()
        expected = pixels[None] if fitting.channels == 1 else pixels.transpose(2, 0, 1)
        assert np.array_equal(converter(decoded, index, 0.0).model_input, expected), index


@requires_fashion_mnist
@pytest.mark.parametrize("channels", [1, 3])
def test_libswscale_on_one_thread_fits_frames_as_its_automatic_threads_do(clip, channels):
    from cnnlab.video.convert import Fitting

    _single_threaded_input_is_libswscales_default(clip.path, Fitting(channels, 28, 28), CLIP_FRAMES)


@pytest.mark.parametrize("version, keywords", [("18.1.0", {"threads": 1}), ("17.0.0", {"threads": 1}),
                                               ("16.1.0", {}), ("12.3.0", {})])
def test_libswscales_threads_are_asked_for_only_where_pyav_takes_them(monkeypatch, version, keywords):
    import av

    from cnnlab.video.convert import _libswscale_threads

    monkeypatch.setattr(av, "__version__", version)
    assert _libswscale_threads(1) == keywords  # PyAV < 17: no `threads`, libswscale on one thread already


@needs_opencv_doc
@pytest.mark.parametrize("channels", [1, 3])
def test_on_real_videos_too(channels):
    from cnnlab.video.convert import Fitting

    for name in ("vtest.avi", "Megamind.avi"):
        mean, largest = _differences(OPENCV_DATA / name, Fitting(channels, 28, 28))
        assert mean <= 2.0 and largest <= 24, name  # measured: vtest 1.5 / 17, Megamind 1.1 / 7
        _single_threaded_input_is_libswscales_default(OPENCV_DATA / name, Fitting(channels, 28, 28), 12)


@requires_fashion_mnist
def test_frames_the_converter_does_not_shrink_are_fitted_by_the_still_image_path_exactly(clip):
    from cnnlab.video.convert import FrameConverter, Fitting

    for fitting in (Fitting(1, 28, 28, "crop"), Fitting(1, 128, 128), Fitting(3, 28, 28, "pad")):
        converter = FrameConverter(fitting, pictures=False)
        for index, decoded in enumerate(_decoded(clip.path, 3)):
            frame = converter(decoded, index, 0.0)
            assert frame.image is None and frame.size == (96, 96)  # no picture was asked for
            expected = fitting.from_picture(decoded.to_ndarray(format="rgb24"))
            assert np.array_equal(frame.model_input, expected)


@requires_fashion_mnist
def test_a_frames_top1_via_video_equals_predict_on_that_frame_saved_as_png(classifier, clip, tmp_path):
    from PIL import Image

    from cnnlab.evaluate.predict import predict
    from cnnlab.trained import load
    from cnnlab.video.run import VideoOptions, predict_video

    trained = load(classifier, device="cpu")
    rows = predict_video(trained, clip.path, options=VideoOptions(progress=False)).rows
    paths = []
    for index, decoded in enumerate(_decoded(clip.path, CLIP_FRAMES)):
        paths.append(tmp_path / f"{index:03d}.png")
        Image.fromarray(decoded.to_ndarray(format="rgb24")).save(paths[-1])
    still = predict(trained, paths, top_k=10)
    assert [row["label"] for row in rows] == [row["label"] for row in still]  # measured: 40 of 40
    for row, reference in zip(rows, still):
        same = next(entry["confidence"] for entry in reference["top_k"] if entry["label"] == row["label"])
        assert abs(row["confidence"] - same) <= 0.02  # measured on 160×160 frames: 0.004 at most


def test_a_consumer_waiting_for_a_whole_batch_is_handed_it_in_one_take():
    from cnnlab.video.frames import FrameQueue, batches

    queue = FrameQueue(capacity=8, drop_oldest=False)

    def produce():
        for number in range(10):
            time.sleep(0.005)
            queue.put(number)
        queue.finish()

    threading.Thread(target=produce, daemon=True).start()
    assert queue.take(4, least=4) == [0, 1, 2, 3]  # not [0]: it waited for four
    assert list(batches(queue, 4, whole=True)) == [[4, 5, 6, 7], [8, 9]]  # the rest, the last one short


def _one_thread_pictures_are_pyavs_default(path, count):
    """The converter's RGB pictures (libswscale on one thread) against `frame.to_ndarray` (PyAV's
    default: libswscale's automatic threads), pixel for pixel, and one thread asked for."""
    from cnnlab.video.convert import FrameConverter, _libswscale_threads

    asked = []
    converter = FrameConverter(pictures=True)
    original = converter._for_pictures

    class Recording:
        def reformat(self, *args, **keywords):
            asked.append(keywords)
            return original.reformat(*args, **keywords)

    converter._for_pictures = Recording()
    for index, decoded in enumerate(_decoded(path, count)):
        assert np.array_equal(converter(decoded, index, 0.0).image, decoded.to_ndarray(format="rgb24")), index
    one_thread = _libswscale_threads(1).get("threads")
    assert asked and all(keywords.get("threads") == one_thread for keywords in asked)


@requires_fashion_mnist
def test_pictures_on_one_thread_are_the_pictures_of_libswscales_automatic_threads(clip, tmp_path):
    from cnnlab.video.encode import VideoWriter

    _one_thread_pictures_are_pyavs_default(clip.path, CLIP_FRAMES)
    large = tmp_path / "large.mp4"  # where automatic threads split the most lines
    gradient = np.linspace(0, 255, 1280, dtype=np.uint8)[None, :, None]
    with VideoWriter(large, fps=25) as writer:
        for shift in range(3):
            moved = np.roll(gradient, 40 * shift, axis=1)
            writer.write(np.ascontiguousarray(np.broadcast_to(moved, (720, 1280, 3))))
    _one_thread_pictures_are_pyavs_default(large, 3)


@needs_opencv_doc
def test_pictures_on_one_thread_on_real_videos_too():
    for name in ("vtest.avi", "Megamind.avi"):
        _one_thread_pictures_are_pyavs_default(OPENCV_DATA / name, 12)
