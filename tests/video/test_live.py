"""Live sources: a model slower than the camera drops the oldest frames, counts them and says so,
with the queue never above its bound; a stream that cannot be reached or stalls ends with a clear
message after its reconnections, never a hang."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import torch

from cnnlab.errors import CnnlabError
from cnnlab.trained import load
from cnnlab.video.decode import StreamLostError
from cnnlab.video.run import VideoOptions, predict_video
from tests.helpers import run_cli
from tests.video.conftest import SimulatedCamera, requires_fashion_mnist


class SlowDown(torch.nn.Module):
    """The trained network, made to take at least `seconds` per batch (a model too big for the camera)."""

    def __init__(self, model: torch.nn.Module, seconds: float):
        super().__init__()
        self.model, self.seconds = model, seconds

    def forward(self, inputs):
        time.sleep(self.seconds)
        return self.model(inputs)


@requires_fashion_mnist
def test_a_slow_model_on_a_live_source_drops_the_oldest_frames_and_says_how_many(classifier):
    trained = load(classifier, device="cpu")
    trained.model = SlowDown(trained.model, 0.1)  # 10 batches a second at most
    camera = SimulatedCamera(count=120, rate=100.0)  # 1.2 s of frames at 100 a second
    result = predict_video(trained, camera, options=VideoOptions(batch_size=4, queue_size=4, progress=False))
    assert result.decoded == 120
    assert result.dropped > 40  # ~13 batches of 4 could be predicted; the rest were dropped
    assert len(result.rows) + result.dropped == 120
    assert result.queue_high_water <= 4  # bounded memory: never more than --queue-size frames waiting
    frames = [row["frame"] for row in result.rows]
    assert frames == sorted(frames) and frames[-1] >= 110  # the newest frames were kept, not the oldest
    assert f"dropped {result.dropped} of 120 frames" in result.summary()


@requires_fashion_mnist
def test_the_annotated_video_of_a_live_source_with_drops_lasts_as_long_as_the_source(classifier, tmp_path):
    """Each kept frame is shown at its source time (the frame before stays on screen over a gap),
    not played back to back: 1.2 s of camera make ~1.2 s of video, not a sped-up ~0.4 s."""
    import av

    trained = load(classifier, device="cpu")
    trained.model = SlowDown(trained.model, 0.1)
    camera = SimulatedCamera(count=120, rate=100.0)
    result = predict_video(trained, camera, draw=tmp_path / "live.mp4",
                           options=VideoOptions(batch_size=4, queue_size=4, progress=False))
    assert result.dropped > 40
    with av.open(str(tmp_path / "live.mp4")) as container:
        stream = container.streams.video[0]
        shown = [float(frame.time) for frame in container.decode(stream)]
        duration = container.duration / 1_000_000
    kept = [row["time"] for row in result.rows]
    assert len(shown) == len(kept)
    assert max(abs(a - (b - kept[0])) for a, b in zip(shown, kept)) <= 0.0051  # on the 100 frames/s grid
    assert abs(duration - (kept[-1] - kept[0] + 0.01)) <= 0.011  # measured: 1.2 s (was 0.41 s)


class _CameraThatIsLost(SimulatedCamera):
    """A simulated camera whose stream is lost after its frames, as a real stream's end is reported."""

    def frames(self, sampling=None):
        yield from super().frames(sampling)
        raise StreamLostError(f"{self.name}: the stream stopped after {len(self.pictures)} frame(s)")


@requires_fashion_mnist
def test_a_live_source_that_is_lost_says_how_many_frames_were_dropped(classifier):
    """A live stream ends with its loss, and the CLI then prints only the error: the drops are said there."""
    trained = load(classifier, device="cpu")
    trained.model = SlowDown(trained.model, 0.1)
    with pytest.raises(StreamLostError) as failure:
        predict_video(trained, _CameraThatIsLost(count=60, rate=100.0),
                      options=VideoOptions(batch_size=4, queue_size=4, progress=False))
    result = failure.value.result
    assert result.dropped > 20  # ~7 batches of 4 in 0.6 s could be predicted
    assert str(failure.value) == (
        f"simulated camera: the stream stopped after 60 frame(s); {len(result.rows)} frame(s) before it were "
        f"predicted ({result.dropped} of 60 dropped: the model was slower than the source)")


@requires_fashion_mnist
def test_a_model_that_keeps_up_drops_nothing(classifier):
    camera = SimulatedCamera(count=30, rate=30.0)
    result = predict_video(load(classifier, device="cpu"), camera, options=VideoOptions(progress=False))
    assert (len(result.rows), result.dropped) == (30, 0)


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_stream_that_cannot_be_reached_ends_with_a_clear_message(classifier, tmp_path):
    started = time.monotonic()
    outcome = run_cli("predict", classifier, f"http://127.0.0.1:{_closed_port()}/live.ts", "--timeout", 1)
    assert outcome.exit_code == 2
    assert "http://127.0.0.1:" in outcome.stderr and "cannot open the stream" in outcome.stderr
    assert time.monotonic() - started < 30


class _StallingServer(threading.Thread):
    """An HTTP server that sends the first part of a video and then nothing, keeping the connection open;
    later connections get nothing at all (a camera that hung)."""

    def __init__(self, payload: bytes):
        super().__init__(daemon=True)
        self.payload = payload
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections = 0

    def run(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            connection.recv(65536)
            if self.connections == 1:
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\n\r\n" + self.payload)
            # ...and stalls: the connection stays open, silent


@requires_fashion_mnist
def test_a_stalled_stream_is_reconnected_then_ended_with_its_frames_kept(classifier, tmp_path):
    from cnnlab.video.moving_items import write_moving_items
    from tests.conftest import FASHION_DIR

    clip = write_moving_items(tmp_path / "live.ts", fashion_mnist_dir=FASHION_DIR, frames=40, canvas=64, items=2,
                              codec="mpeg4")
    data = clip.path.read_bytes()
    server = _StallingServer(data[: len(data) // 2])
    server.start()
    started = time.monotonic()
    with pytest.raises(CnnlabError) as failure:
        predict_video(classifier, f"http://127.0.0.1:{server.port}/live.ts", output=tmp_path / "rows.json",
                      options=VideoOptions(progress=False), open_timeout=2, read_timeout=1, reconnects=2)
    server.server.close()
    message = str(failure.value)
    assert f"http://127.0.0.1:{server.port}/live.ts: the stream stopped after" in message
    assert "after 2 reconnection(s)" in message
    assert server.connections == 3  # the first connection and two reconnections
    assert failure.value.result.rows  # the frames that came before the stall were predicted
    assert (tmp_path / "rows.json").exists()
    assert time.monotonic() - started < 40
