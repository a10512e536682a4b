"""benchmarks/video_throughput.py: the CPU a thread spent, as read from /proc for the split by thread;
the bound a pipeline cannot pass."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from video_throughput import _thread_cpu, ceiling  # noqa: E402

TASKS = Path("/proc/self/task")


@pytest.mark.skipif(not TASKS.is_dir(), reason="/proc/self/task is Linux's")
def test_a_busy_threads_cpu_is_read_under_its_id_and_name():
    ready, finish = threading.Event(), threading.Event()
    spent = []

    def busy() -> None:
        while time.thread_time() < 0.15:  # CPU time of this thread, not the clock's
            pass
        spent.append(time.thread_time())
        ready.set()
        finish.wait(10)

    worker = threading.Thread(target=busy, daemon=True)
    worker.start()
    assert ready.wait(30)
    seconds = _thread_cpu(TASKS)
    finish.set()
    worker.join()
    ours = {thread_id: value for (thread_id, name), value in seconds.items() if thread_id == worker.native_id}
    assert len(ours) == 1  # one entry: (its id, its name)
    assert spent[0] - 0.02 <= ours[worker.native_id] <= spent[0] + 0.05  # /proc counts in ticks (10 ms)
    assert all(value >= 0 for value in seconds.values())


def test_the_bound_is_the_model_threads_rate_or_the_cores_whichever_is_lower():
    # The quiet run of 2026-12-04: decode-only 24,630 frames/s on one thread, bare decoding 0.02 CPU
    # ms a frame, the model alone 0.060 on one thread; the pipeline measured 0.61x.
    assert ceiling(24630, 0.02, 0.060, cores=2) == pytest.approx((1 / 0.060) / 24.630)  # 0.68: the model's thread
    assert ceiling(24630, 0.02, 0.060, cores=2) > 0.61
    # A cheap model on many cores: decoding every frame on the cores is the limit.
    assert ceiling(10000, 0.5, 0.1, cores=4) == pytest.approx((4 / 0.6) / 10.0)
    assert ceiling(10000, 0.5, 0.1, cores=1) == pytest.approx((1 / 0.6) / 10.0)
