"""FFmpeg's frame threads for a file's large frames, one decoding thread for small ones
(cnnlab.video.decode.FRAME_THREADS_FROM_PIXELS): the choice follows the frame's size, and neither
changes a decoded pixel or a row."""

from __future__ import annotations

import numpy as np
import pytest

from tests.video.conftest import CLIP_FRAMES, requires_fashion_mnist

ALWAYS, NEVER = 0, 10**12  # FRAME_THREADS_FROM_PIXELS for "every file has frame threads" / "none has"


@requires_fashion_mnist
@pytest.mark.parametrize("width, height, frame_threads", [(96, 96, False), (160, 160, False),
                                                          (639, 480, False), (640, 480, True),
                                                          (1280, 720, True)])
def test_frame_threads_are_chosen_by_the_frames_size(clip, width, height, frame_threads):
    import av

    from cnnlab.video.decode import VideoInfo, _choose_decoding_threads

    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        _choose_decoding_threads(stream, VideoInfo(width, height, 25.0, "h264", 40, 1.6))
        assert (stream.thread_type.name == "AUTO") == frame_threads
        # else FFmpeg's own count: 0, a thread per core
        assert (stream.codec_context.thread_count == 1) == (not frame_threads)


def _pictures(path, monkeypatch, threshold):
    from cnnlab.video import decode
    from cnnlab.video.sources import describe_source

    monkeypatch.setattr(decode, "FRAME_THREADS_FROM_PIXELS", threshold)
    return [frame.image for frame in decode.VideoReader(describe_source(str(path))).frames()]


@requires_fashion_mnist
def test_one_decoding_thread_and_frame_threads_decode_the_same_pixels(clip, monkeypatch):
    one, threaded = _pictures(clip.path, monkeypatch, NEVER), _pictures(clip.path, monkeypatch, ALWAYS)
    assert len(one) == len(threaded) == CLIP_FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(one, threaded))


@requires_fashion_mnist
def test_rows_are_the_same_with_and_without_frame_threads(classifier, detector, clip, monkeypatch):
    from cnnlab.trained import load
    from cnnlab.video import decode
    from cnnlab.video.run import VideoOptions, predict_video

    for run in (classifier, detector):
        trained = load(run, device="cpu")
        rows = {}
        for threshold in (NEVER, ALWAYS):
            monkeypatch.setattr(decode, "FRAME_THREADS_FROM_PIXELS", threshold)
            rows[threshold] = predict_video(trained, clip.path, options=VideoOptions(progress=False)).rows
        assert len(rows[NEVER]) >= CLIP_FRAMES  # a detector: a row per box (or per empty frame)
        assert rows[NEVER] == rows[ALWAYS], run.name
