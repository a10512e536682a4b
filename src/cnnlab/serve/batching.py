"""Dynamic batching: one worker thread owns the model; requests wait in a bounded queue, and the
worker runs them together in one forward pass.

A CNN on a CPU or GPU answers 32 images in one call far faster than in 32 calls (the weights are
read once, the matrix products are larger, Python's per-call cost is paid once). So the worker
takes the oldest request, then gathers more for at most `max_wait` seconds or until `max_batch`
images, runs ONE forward pass, and hands each request its slice of the outputs through its future.
`max_batch=1` is one forward per request (the baseline the load test compares against).

The queue is bounded in requests admitted and not yet started, so a burst gets `QueueFull` (a 503
with Retry-After) instead of growing memory without limit. A request that stopped waiting (its
client's timeout) is dropped before its forward pass.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from cnnlab.serve.metrics import Metrics


GATHER_NAP_S = 0.001  # how often a gathering batch looks for more requests


class QueueFull(Exception):
    """The service has as many requests waiting as it admits."""


@dataclass
class _Job:
    images: Any = None  # uint8 tensor (n, C, H, W) for a forward pass; None for a call
    finish: Callable[[Any], Any] | None = None  # its outputs -> the answer, on the worker too
    per_image: Callable[[Any, list], list] | None = None  # (outputs, contexts) -> one answer per image, per batch
    contexts: list | None = None  # what `per_image` needs to know of each image (its size in the upload)
    call: Callable[[], Any] | None = None  # anything else that needs the model (Grad-CAM), run alone
    future: Future = field(default_factory=Future)
    waiting: bool = True  # counted in the queue's depth: admitted, neither started nor given up

    @property
    def size(self) -> int:
        return 0 if self.images is None else len(self.images)


class Batcher:
    """The model's worker thread and its queue. `forward(images) -> outputs` is called on the worker
    only, with up to `max_batch` images (more when one request alone brings more)."""

    def __init__(self, forward: Callable[[Any], Any], *, max_batch: int, max_wait_s: float, max_queue: int,
                 metrics: Metrics | None = None):
        self.forward = forward
        self.max_batch, self.max_wait_s, self.max_queue = max_batch, max_wait_s, max_queue
        self.metrics = metrics or Metrics()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._waiting = 0  # admitted and not yet started
        self._arriving = 0  # requests being read and decoded, whose images are on their way
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def depth(self) -> int:
        return self._waiting

    @property
    def reading(self) -> int:
        """Requests being read and decoded (see `arriving`)."""
        return self._arriving

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="cnnlab-model", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, images: Any, finish: Callable[[Any], Any] | None = None) -> Future:
        """A future of `finish(forward(images))` (the outputs' first dimension: these images), `finish`
        run on the worker as well, off the event loop; QueueFull when the queue is full."""
        return self._admit(_Job(images=images, finish=finish))

    def submit_per_image(self, images: Any, per_image: Callable[[Any, list], list], contexts: list) -> Future:
        """A future of the list `per_image(forward(images), contexts)` would give, one answer per image.
        The worker calls `per_image` ONCE for all the jobs of a batch that share it (the same object:
        keep one per kind of answer), on all their outputs and contexts together: for a small model,
        decoding answers per request costs more than the forward pass. QueueFull when full."""
        if len(contexts) != len(images):
            raise ValueError(f"{len(images)} images but {len(contexts)} contexts")
        return self._admit(_Job(images=images, per_image=per_image, contexts=list(contexts)))

    @contextlib.contextmanager
    def arriving(self) -> Iterator[None]:
        """Around reading and decoding a request: a batch waits for it (up to `max_wait_s`) only while
        some request is on its way, so a lone request never waits for company that is not coming."""
        with self._lock:
            self._arriving += 1
        try:
            yield
        finally:
            with self._lock:
                self._arriving -= 1

    def call(self, function: Callable[[], Any]) -> Future:
        """A future of `function()`, run on the model's thread between batches; QueueFull when full."""
        return self._admit(_Job(call=function))

    def _admit(self, job: _Job) -> Future:
        with self._lock:
            if self._waiting >= self.max_queue:
                raise QueueFull(f"{self._waiting} requests are waiting for the model (--max-queue {self.max_queue})")
            self._waiting += 1
        # A request that gave up (its timeout) leaves the queue's count at once, not when its batch runs.
        job.future.add_done_callback(lambda future: future.cancelled() and self._release(job))
        self._jobs.put(job)
        return job.future

    def _release(self, job: _Job) -> None:
        with self._lock:
            if job.waiting:
                job.waiting = False
                self._waiting -= 1

    def _started(self, jobs: list[_Job]) -> list[_Job]:
        """Take `jobs` off the waiting count; those whose client still waits, now marked running."""
        for job in jobs:
            self._release(job)
        return [job for job in jobs if job.future.set_running_or_notify_cancel()]

    def _work(self) -> None:
        held: _Job | None = None  # a job that did not fit the last batch: it starts the next one
        while True:
            job = held if held is not None else self._jobs.get()
            held = None
            if job is None:
                return
            if job.call is not None:
                self._run_call(job)
                continue
            batch, held, stop = self._gather(job)
            self._run_batch(batch)
            if stop:
                return

    def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None, bool]:
        """`first` and the jobs arriving within `max_wait_s` of it, up to `max_batch` images."""
        batch, images = [first], first.size
        deadline = time.monotonic() + self.max_wait_s
        while images < self.max_batch:
            if self._arriving == 0 and self._jobs.empty():
                break  # nothing more is coming now: waiting would only add latency
            if self._jobs.empty() and time.monotonic() < deadline:
                # Nap rather than block on the queue: a blocked get wakes this thread for every request
                # put, and each wake takes the GIL from the event loop, which is reading the next ones.
                time.sleep(min(GATHER_NAP_S, max(0.0, deadline - time.monotonic())))
                continue
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is None:
                return batch, None, True
            if job.call is not None or images + job.size > self.max_batch:
                return batch, job, False
            batch.append(job)
            images += job.size
        return batch, None, False

    def _run_call(self, job: _Job) -> None:
        if not self._started([job]):
            return
        try:
            job.future.set_result(job.call())
        except BaseException as error:  # handed to the request, which answers without a traceback
            job.future.set_exception(error)

    def _run_batch(self, batch: list[_Job]) -> None:
        import torch

        live = self._started(batch)
        if not live:
            return
        try:
            images = torch.cat([job.images for job in live]) if len(live) > 1 else live[0].images
            outputs = torch.cat([self._forward(images[start:start + self.max_batch])
                                 for start in range(0, len(images), self.max_batch)])
        except BaseException as error:
            for job in live:
                job.future.set_exception(error)
            return
        start, shared = 0, {}
        for job in live:
            mine = outputs[start:start + job.size]
            start += job.size
            if job.per_image is not None:
                shared.setdefault(job.per_image, []).append((job, mine))
                continue
            try:
                job.future.set_result(job.finish(mine) if job.finish else mine)
            except BaseException as error:
                job.future.set_exception(error)
        for per_image, jobs in shared.items():
            _answer_together(per_image, jobs)

    def _forward(self, images: Any) -> Any:
        outputs = self.forward(images)
        self.metrics.batch_done(len(images))
        return outputs


def _answer_together(per_image: Callable[[Any, list], list], jobs: list[tuple[_Job, Any]]) -> None:
    """One `per_image` call over the outputs of `jobs`, each job's future given its own answers."""
    import torch

    try:
        outputs = torch.cat([mine for _, mine in jobs]) if len(jobs) > 1 else jobs[0][1]
        answers = per_image(outputs, [context for job, _ in jobs for context in job.contexts])
        if len(answers) != len(outputs):
            raise RuntimeError(f"{len(outputs)} images got {len(answers)} answers")
    except BaseException as error:
        for job, _ in jobs:
            job.future.set_exception(error)
        return
    start = 0
    for job, _ in jobs:
        job.future.set_result(answers[start:start + job.size])
        start += job.size


class Handover:
    """The worker's finished futures, handed to the event loop in ONE wake-up per batch rather than one
    per request (`asyncio.wrap_future` wakes the loop, through its self-pipe, for every future)."""

    def __init__(self) -> None:
        self._finished: list[tuple[Future, Any]] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def awaitable(self, future: Future) -> Any:
        """An asyncio future, on the running loop, that takes `future`'s outcome; cancelling it
        cancels `future` (dropped before its forward pass if that has not started)."""
        import asyncio

        loop = asyncio.get_running_loop()
        waiting = loop.create_future()
        waiting.add_done_callback(lambda done: done.cancelled() and future.cancel())
        future.add_done_callback(lambda done: self._finish(loop, done, waiting))
        return waiting

    def _finish(self, loop: Any, future: Future, waiting: Any) -> None:
        with self._lock:
            self._finished.append((future, waiting))
            if self._scheduled:
                return  # a wake-up is on its way and will take this one too
            self._scheduled = True
        try:
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop has closed (shutting down): nobody is waiting any more
            pass

    def _deliver(self) -> None:
        with self._lock:
            finished, self._finished, self._scheduled = self._finished, [], False
        for future, waiting in finished:
            if waiting.done():
                continue
            if future.cancelled():
                waiting.cancel()
            elif future.exception() is not None:
                waiting.set_exception(future.exception())
            else:
                waiting.set_result(future.result())
