"""Between the decoder and the model: a bounded queue, filled by a thread of its own.

A file is read as fast as the model takes frames: the queue blocks the decoder when full, nothing
is lost. A live source (a camera, a stream, anything that produces frames at its own pace) cannot
be made to wait: when the queue is full the OLDEST frame is dropped for the newest, and counted, so
the model always works on recent frames and memory stays bounded, as real-time systems do.

    >>> queue = FrameQueue(capacity=2, drop_oldest=True)
    >>> for number in range(5):
    ...     _ = queue.put(number)
    >>> queue.take(10), queue.dropped, queue.high_water
    ([3, 4], 3, 2)
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any, Callable, Iterable, Iterator


class FrameQueue:
    """A bounded FIFO of frames. `drop_oldest`: a full queue drops its oldest frame on `put` (live
    sources) instead of making `put` wait (files). `high_water` is the most it ever held."""

    def __init__(self, capacity: int, *, drop_oldest: bool):
        if capacity < 1:
            raise ValueError(f"a frame queue needs room for at least one frame (got {capacity})")
        self.capacity, self.drop_oldest = capacity, drop_oldest
        self.dropped = 0
        self.high_water = 0
        self._items: deque = deque()
        self._changed = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        self._wanted = 1  # frames the consumer waits for: `put` wakes it only when they are there

    def put(self, item: Any) -> bool:
        """Add `item`; False when the queue was closed meanwhile (the reader has stopped)."""
        with self._changed:
            while len(self._items) >= self.capacity and not self.drop_oldest and not self._closed:
                self._changed.wait(0.1)
            if self._closed:
                return False
            if len(self._items) >= self.capacity:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            if len(self._items) >= self._wanted:
                self._changed.notify_all()
            return True

    def take(self, most: int, timeout: float | None = None, *, least: int = 1) -> list[Any]:
        """Up to `most` frames, oldest first, waiting until `least` (at most the capacity) are there or
        the producer has finished; [] once the queue is finished and empty (or after `timeout` s).
        An error the producer ended with is raised here, after the frames before it. Waiting for a
        whole batch at once wakes the consumer once a batch, not once a frame (a thread switch each)."""
        def enough() -> bool:
            return len(self._items) >= self._wanted or self._closed

        with self._changed:
            self._wanted = max(1, min(least, most, self.capacity))
            try:
                if not self._changed.wait_for(enough, timeout):
                    return []
            finally:
                self._wanted = 1
            taken = [self._items.popleft() for _ in range(min(most, len(self._items)))]
            self._changed.notify_all()
            if not taken and self._error is not None:
                error, self._error = self._error, None
                raise error
            return taken

    def finish(self, error: BaseException | None = None) -> None:
        """No more frames (the producer's `error`, if any, is raised by `take` after the last frame)."""
        with self._changed:
            self._closed, self._error = True, error
            self._changed.notify_all()

    def close(self) -> None:
        """The consumer stops: drop what is queued and release a waiting producer."""
        with self._changed:
            self._closed = True
            self._items.clear()
            self._changed.notify_all()


class Feeder:
    """A daemon thread putting `frames` (each passed through `prepare` first, on the thread) into `queue`.
    `stop()` ends it at the next frame (`on_stop` is called to interrupt a source that is waiting)."""

    def __init__(self, frames: Iterable[Any], queue: FrameQueue, *, prepare: Callable[[Any], Any] | None = None,
                 on_stop: Callable[[], None] | None = None):
        self.queue, self.prepare, self.on_stop = queue, prepare, on_stop
        self.produced = 0
        self._frames = frames
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cnnlab-video-decoder", daemon=True)

    def start(self) -> "Feeder":
        self._thread.start()
        return self

    def _run(self) -> None:
        error = None
        try:
            for frame in self._frames:
                if self._stop.is_set():
                    break
                if self.prepare is not None:
                    frame = self.prepare(frame)
                self.produced += 1
                if not self.queue.put(frame):
                    break
        except BaseException as failure:  # handed to the consumer, which raises it after the frames before
            error = failure
        finally:
            close = getattr(self._frames, "close", None)
            if close is not None:
                close()
            self.queue.finish(error)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self.on_stop is not None:
            self.on_stop()
        self.queue.close()
        self._thread.join(timeout)


def batches(queue: FrameQueue, size: int, *, whole: bool) -> Iterator[list[Any]]:
    """Frames from `queue` in lists of up to `size`. `whole`: wait for full batches (a file: the model
    runs on `size` frames at once); otherwise whatever has arrived (a live source: no frame waits for
    later ones)."""
    while True:
        batch = queue.take(size, least=size if whole else 1)
        if not batch:
            return
        try:
            while whole and len(batch) < size:  # the queue holds fewer than a batch (--queue-size)
                more = queue.take(size - len(batch), least=size - len(batch))
                if not more:
                    break
                batch += more
        except BaseException:
            yield batch  # the frames before a failure are kept; the failure comes after them
            raise
        yield batch
