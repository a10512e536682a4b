"""Video files, cameras and streams, frame by frame, for every task (`cnnlab predict`, `cnnlab track`).

    sources.py       what a SOURCE names (a file, a camera index, a stream URL); torch- and PyAV-free
    engine.py        PyAV, the optional library that decodes and encodes (pip install 'cnnlab[video]')
    decode.py        VideoReader: frames with their index and time, sampled; timeouts, reconnection,
                     damaged files named
    convert.py       decoded frames → the model's input (libswscale) and, where an output draws, pictures
    frames.py        FrameQueue (bounded; live sources drop the oldest frame) and the decoding thread
    run.py           predict_video(): the loop (model batched over frames, --smooth), rows, annotated video
    annotate.py      a frame with its prediction drawn (the annotated video, --show)
    encode.py        VideoWriter: the annotated video, the input's codec and rate kept where possible
    window.py        --show
    tracking.py      Tracker (ByteTrack-style association), idf1;  kalman.py: the motion model
    counting.py      --count-line;  track.py: track_video() (`cnnlab track`)
    moving_items.py  generated videos with known positions (tests, benchmarks)

docs/video.md is the user's guide.
"""

from __future__ import annotations

from typing import Any

from cnnlab.video.sources import describe_source, is_video_source

__all__ = ["describe_source", "is_video_source", "predict_video", "track_video"]


def __getattr__(name: str) -> Any:  # torch is imported when a video is run, not when a source is named
    if name == "predict_video":
        from cnnlab.video.run import predict_video

        return predict_video
    if name == "track_video":
        from cnnlab.video.track import track_video

        return track_video
    raise AttributeError(name)
