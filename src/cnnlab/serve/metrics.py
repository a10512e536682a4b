"""What `GET /metrics` reports, in Prometheus' text exposition format (version 0.0.4), written by
hand: counters, histograms and gauges are a few lines each, and the service needs no client library.

    cnnlab_requests_total{endpoint="/predict",status="200"} 12
    cnnlab_request_duration_seconds_bucket{endpoint="/predict",le="0.01"} 9
    cnnlab_batch_size_bucket{le="8"} 3
    cnnlab_queue_depth 0
"""

from __future__ import annotations

import bisect
import threading
from typing import Callable

# Seconds: from a fast prediction on loopback to a request that waited on a full queue.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Histogram:
    """Cumulative buckets, a sum and a count per label set, as Prometheus histograms are exposed."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...]):
        self.name, self.help_text, self.buckets = name, help_text, buckets
        self._series: dict[tuple[tuple[str, str], ...], list] = {}  # labels -> [bucket counts, sum, count]

    def observe(self, value: float, **labels: str) -> None:
        key = tuple(sorted(labels.items()))
        counts, total, count = self._series.get(key) or [[0] * len(self.buckets), 0.0, 0]
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.buckets):
            counts[index] += 1  # made cumulative when exposed
        self._series[key] = [counts, total + value, count + 1]

    def lines(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help_text}", f"# TYPE {self.name} histogram"]
        for key, (counts, total, count) in sorted(self._series.items()):
            running = 0
            for bound, bucket_count in zip(self.buckets, counts):
                running += bucket_count
                lines.append(f"{self.name}_bucket{_labels(key, le=_number(bound))} {running}")
            lines.append(f"{self.name}_bucket{_labels(key, le='+Inf')} {count}")
            lines.append(f"{self.name}_sum{_labels(key)} {_number(total)}")
            lines.append(f"{self.name}_count{_labels(key)} {count}")
        return lines


class Metrics:
    """The service's counters, shared by the event loop (requests) and the model's worker (batches)."""

    def __init__(self, queue_depth: Callable[[], int] = lambda: 0):
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = {}
        self._latency = Histogram("cnnlab_request_duration_seconds",
                                  "Time from a request's arrival to its answer, by endpoint.", LATENCY_BUCKETS)
        self._batches = Histogram("cnnlab_batch_size", "Images in each forward pass of the model.", BATCH_BUCKETS)
        self._images = 0
        self.queue_depth = queue_depth

    def request_done(self, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[(endpoint, status)] = self._requests.get((endpoint, status), 0) + 1
            self._latency.observe(seconds, endpoint=endpoint)

    def batch_done(self, images: int) -> None:
        with self._lock:
            self._batches.observe(images)
            self._images += images

    def exposition(self) -> str:
        with self._lock:
            lines = ["# HELP cnnlab_requests_total Requests answered, by endpoint and HTTP status.",
                     "# TYPE cnnlab_requests_total counter"]
            lines += [f"cnnlab_requests_total{_labels((('endpoint', endpoint), ('status', str(status))))} {count}"
                      for (endpoint, status), count in sorted(self._requests.items())]
            lines += self._latency.lines() + self._batches.lines()
            lines += ["# HELP cnnlab_images_predicted_total Images through the model's forward pass.",
                      "# TYPE cnnlab_images_predicted_total counter", f"cnnlab_images_predicted_total {self._images}"]
        lines += ["# HELP cnnlab_queue_depth Requests admitted and waiting for the model.",
                  "# TYPE cnnlab_queue_depth gauge", f"cnnlab_queue_depth {self.queue_depth()}"]
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


def _labels(pairs: tuple[tuple[str, str], ...], **extra: str) -> str:
    items = list(pairs) + list(extra.items())
    if not items:
        return ""
    escaped = (f'{name}="{str(value).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               for name, value in items)
    return "{" + ",".join(escaped) + "}"
