"""Load test of `cnnlab serve` on loopback: throughput and latency under concurrent clients.

Three services answer the same request (a multipart POST /predict of one 28×28 Fashion-MNIST PNG),
each in its own process, measured in interleaved rounds (--rounds; the median round is reported):

  cnnlab serve                 dynamic batching (--max-batch 64, --max-wait-ms 5)
  cnnlab serve --max-batch 1   one forward pass per request: the baseline batching is measured against
  FastAPI + ONNX Runtime       benchmarks/serve_peer.py: the endpoint written the usual way (UploadFile,
                               Pillow, one session.run per request), the model exported here with
                               torch.onnx.export

At 1, 8 and 64 concurrent clients (each a keep-alive connection sending its next request when the
last is answered) for --seconds each: answers per second and p50/p95/p99 latency. Then a soak of
--soak-requests requests against cnnlab serve, sampling its resident memory (flat, or growing?),
and a burst of --burst clients at once against a queue of --burst-queue (503s with Retry-After,
and the service still healthy afterwards, or a crash?).

The clients are plain asyncio sockets in this process (an HTTP library would cost the 2 cores more
than the services do). Everything is bounded: --seconds per point, --max-requests per point.

    python benchmarks/serve_load.py                          # ~2-3 minutes; trains a guide-cnn first
    python benchmarks/serve_load.py --run runs/demo --seconds 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from _common import BENCHMARKS, RESULTS, machine_info, markdown_table, ratio, write_results

BOUNDARY = "cnnlab-load-test"


# --- the requests --------------------------------------------------------------------------------

def multipart_request(port: int, png: bytes, path: str = "/predict") -> bytes:
    """One complete HTTP/1.1 request: a form with one image file, as `curl -F file=@x.png` sends it."""
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"image.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + png + f"\r\n--{BOUNDARY}--\r\n".encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server keeps the connection) of one response."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    body = await reader.readexactly(int(length.group(1))) if length else b""
    return status, body, not re.search(rb"(?i)\r\nconnection: *close", head)


async def _client(port: int, request: bytes, deadline: float, budget: list[int], latencies: list[float],
                  statuses: Counter) -> None:
    reader = writer = None
    while time.perf_counter() < deadline and budget[0] > 0:
        budget[0] -= 1
        if writer is None:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.perf_counter()
        try:
            writer.write(request)
            await writer.drain()
            status, _, keep = await _response(reader)
        except (ConnectionError, asyncio.IncompleteReadError):
            statuses["connection error"] += 1
            writer.close()
            writer = None
            continue
        latencies.append(time.perf_counter() - started)
        statuses[status] += 1
        if not keep:
            writer.close()
            writer = None
    if writer is not None:
        writer.close()


def load(port: int, request: bytes, clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    """`clients` connections asking in a loop for `seconds` (or `max_requests` in all)."""
    latencies: list[float] = []
    statuses: Counter = Counter()

    async def run() -> float:
        started = time.perf_counter()
        budget = [max_requests]
        await asyncio.gather(*(_client(port, request, started + seconds, budget, latencies, statuses)
                               for _ in range(clients)))
        return time.perf_counter() - started

    elapsed = asyncio.run(run())
    answered = statuses.get(200, 0)
    milliseconds = sorted(1000 * value for value in latencies)

    def percentile(share: float) -> float | None:
        return round(milliseconds[min(len(milliseconds) - 1, int(share * len(milliseconds)))], 2) if milliseconds \
            else None

    return {"clients": clients, "seconds": round(elapsed, 2), "answered": answered,
            "per_second": round(answered / elapsed, 1), "p50_ms": percentile(0.50), "p95_ms": percentile(0.95),
            "p99_ms": percentile(0.99), "statuses": {str(key): value for key, value in statuses.items()}}


# --- the services --------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Service:
    """A service in its own process, until `stop`."""

    def __init__(self, command: list[str], port: int | None, env: dict[str, str] | None = None):
        self.log = tempfile.NamedTemporaryFile("w+", prefix="serve-load-", suffix=".log", delete=False)
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.log, text=True,
                                        env={**os.environ, **(env or {})}, cwd=BENCHMARKS)
        if port is None:  # cnnlab serve --port 0 prints its URL once the model is loaded
            line = self.process.stdout.readline()
            found = re.search(r"127\.0\.0\.1:(\d+)", line)
            if not found:
                raise RuntimeError(f"cnnlab serve did not start: {line!r} {Path(self.log.name).read_text()}")
            port = int(found.group(1))
        self.port = port
        self._wait_until_answering()

    def _wait_until_answering(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited: {Path(self.log.name).read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the service never answered")

    def rss_mib(self) -> float:
        """Resident memory of the service's process now, MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def cpu_seconds(self) -> float:
        """CPU time the service's process (all its threads) has used so far: user + system."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()
        os.unlink(self.log.name)


def cnnlab_serve(run: Path, *flags: object) -> Service:
    return Service([sys.executable, "-m", "cnnlab", "serve", str(run), "--port", "0", *map(str, flags)], None)


def onnx_peer(model: Path, spec: Path) -> Service:
    port = free_port()
    return Service([sys.executable, "-m", "uvicorn", "serve_peer:app", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning", "--no-access-log"], port,
                   env={"SERVE_PEER_MODEL": str(model), "SERVE_PEER_SPEC": str(spec)})


# --- the model and the image ---------------------------------------------------------------------

def train_guide(folder: Path) -> Path:
    import cnnlab

    print("training guide-cnn on Fashion-MNIST (1 epoch, 10,000 images) for the load test", file=sys.stderr)
    return cnnlab.train(data="fashion-mnist", model="guide-cnn", epochs=1, limit=10_000, runs_dir=str(folder),
                        name="serve-load", quiet=True).run_dir


def export_peer_model(run: Path, folder: Path) -> tuple[Path, Path]:
    """The run's network as ONNX (torch.onnx.export, normalised float32 in, logits out) and what the
    peer needs to know about its input, as JSON."""
    import cnnlab
    from predict_throughput import export_onnx

    trained = cnnlab.load(run, device="cpu", precision="fp32")
    model = folder / "model.onnx"
    export_onnx(trained, model)
    spec = folder / "spec.json"
    spec.write_text(json.dumps({"classes": trained.class_names, "channels": trained.input.channels,
                                "height": trained.input.height, "width": trained.input.width,
                                "mean": list(trained.input.mean), "std": list(trained.input.std)}))
    return model, spec


def test_png(index: int = 0) -> tuple[bytes, str]:
    import io

    from PIL import Image

    from cnnlab.data.named import open_named

    source = open_named("fashion-mnist", split="test")
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(source.pixels[index])).save(buffer, format="PNG")
    return buffer.getvalue(), source.class_names[int(source.targets[index])]


def answer_label(port: int, request: bytes) -> str:
    async def ask() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        await writer.drain()
        _, body, _ = await _response(reader)
        writer.close()
        return body

    answer = json.loads(asyncio.run(ask()))
    return (answer[0] if isinstance(answer, list) else answer)["label"]


# --- the measurements ----------------------------------------------------------------------------

def measure(service: Service, png: bytes, args: argparse.Namespace) -> dict[str, Any]:
    request = multipart_request(service.port, png)
    load(service.port, request, 8, args.warmup_seconds, args.max_requests)  # wakes threads, fills caches
    points = []
    for clients in args.clients:
        cpu = service.cpu_seconds()
        point = load(service.port, request, clients, args.seconds, args.max_requests)
        # CPU per answer: what a request costs the service, whatever share of the cores it got (the
        # machine may be shared); on an idle machine, throughput is about the cores it can use / this.
        point["cpu_ms_per_answer"] = round(1000 * (service.cpu_seconds() - cpu) / max(1, point["answered"]), 3)
        print(f"  {clients:>3} clients: {point['per_second']:>8,.1f}/s  cpu {point['cpu_ms_per_answer']} ms/answer  "
              f"p50 {point['p50_ms']} ms  "
              f"p99 {point['p99_ms']} ms  {point['statuses']}", file=sys.stderr)
        points.append(point)
    return {"label": answer_label(service.port, request), "points": points}


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per client count, the point of the round with the median throughput, and every round's figure."""
    points = []
    for index in range(len(rounds[0]["points"])):
        these = sorted((measured["points"][index] for measured in rounds), key=lambda point: point["per_second"])
        points.append({**these[len(these) // 2], "per_second_each_round": [point["per_second"] for point in these]})
    return {"label": rounds[0]["label"], "points": points}


def soak(service: Service, png: bytes, requests: int, clients: int) -> dict[str, Any]:
    """`requests` requests in tenths, the service's resident memory after each."""
    request = multipart_request(service.port, png)
    samples = [round(service.rss_mib(), 1)]
    statuses: Counter = Counter()
    started = time.perf_counter()
    for _ in range(10):
        point = load(service.port, request, clients, 600, requests // 10)
        statuses.update(point["statuses"])
        samples.append(round(service.rss_mib(), 1))
    return {"requests": sum(statuses.values()), "clients": clients, "seconds": round(time.perf_counter() - started, 1),
            "statuses": dict(statuses), "rss_mib_after_each_tenth": samples,
            "rss_growth_after_first_tenth_mib": round(samples[-1] - samples[1], 1), "rss_peak_mib": max(samples)}


def burst(run: Path, png: bytes, clients: int, queue: int) -> dict[str, Any]:
    """`clients` requests at once against a queue of `queue`: 503s, and a service that still answers."""
    service = cnnlab_serve(run, "--max-queue", queue, "--max-batch", 8, "--max-wait-ms", 5)
    try:
        request = multipart_request(service.port, png)
        load(service.port, request, 4, 1.0, 10_000)
        point = load(service.port, request, clients, 600, clients)
        health = load(service.port, f"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 1, 600, 1)
        alive = service.process.poll() is None
    finally:
        service.stop()
    return {"clients": clients, "max_queue": queue, "statuses": point["statuses"],
            "health_after": health["statuses"], "still_running": alive}


# --- the report ----------------------------------------------------------------------------------

NAMES = {"batching": "cnnlab serve (dynamic batching)", "one_per_request": "cnnlab serve --max-batch 1",
         "peer": "FastAPI + ONNX Runtime (peer)"}


def report(results: dict[str, Any]) -> str:
    rows = []
    for key, name in NAMES.items():
        for point in results["services"][key]["points"]:
            errors = sum(count for status, count in point["statuses"].items() if status != "200")
            rows.append([name, point["clients"], f"{point['per_second']:,.0f}", point.get("cpu_ms_per_answer"),
                         point["p50_ms"], point["p95_ms"], point["p99_ms"], errors])
    table = markdown_table(["service", "clients", "answers/s", "CPU ms/answer", "p50 ms", "p95 ms", "p99 ms",
                            "not 200"], rows)
    at = {key: results["services"][key]["points"][-1] for key in NAMES}
    top = at["batching"]["clients"]
    lines = [f"- At {top} clients: dynamic batching answers **{results['ratios']['batching_vs_one_per_request']:.2f}×** "
             f"the requests per second of one forward per request, and **{results['ratios']['batching_vs_peer']:.2f}×** "
             f"those of the FastAPI + ONNX Runtime peer; p99 {at['batching']['p99_ms']} ms against "
             f"{at['one_per_request']['p99_ms']} ms and {at['peer']['p99_ms']} ms.",
             f"- Each round's answers/s at {top} clients (median reported): "
             + "; ".join(f"{NAMES[key]} {at[key].get('per_second_each_round')}" for key in NAMES) + ". "
             f"CPU per answer at {top} clients: {at['batching'].get('cpu_ms_per_answer')} ms batching, "
             f"{at['one_per_request'].get('cpu_ms_per_answer')} ms one per request, "
             f"{at['peer'].get('cpu_ms_per_answer')} ms the peer (all the service's threads; independent of the "
             f"share of the cores the service got).",
             f"- Labels: every service answers {results['labels']} for the test image (true class "
             f"{results['true_label']}).",
             f"- Soak: {results['soak']['requests']:,} requests at {results['soak']['clients']} clients in "
             f"{results['soak']['seconds']} s ({results['soak']['statuses']}); cnnlab serve's resident memory after "
             f"each tenth: {results['soak']['rss_mib_after_each_tenth']} MiB (growth after the first tenth: "
             f"{results['soak']['rss_growth_after_first_tenth_mib']} MiB).",
             f"- Burst: {results['burst']['clients']} clients at once against --max-queue "
             f"{results['burst']['max_queue']}: statuses {results['burst']['statuses']}; afterwards GET /health "
             f"{results['burst']['health_after']}, process still running: {results['burst']['still_running']}.",
             f"- Model: {results['model']}; the peer's ONNX file from torch.onnx.export. cnnlab serve flags: "
             f"{results['flags']}. Clients: asyncio sockets in the benchmark's process, keep-alive, on the same "
             f"{results['machine']['cores']} cores as the service.",
             f"- Command: `{results['command']}`"]
    return table + "\n\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a trained run to serve [default: train guide-cnn, ~20 s]")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--seconds", type=float, default=4.0, help="per service, client count and round")
    parser.add_argument("--warmup-seconds", type=float, default=1.5)
    parser.add_argument("--max-requests", type=int, default=50_000, help="per service and client count")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds over the three services")
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--soak-requests", type=int, default=4000)
    parser.add_argument("--burst", type=int, default=300, help="clients at once in the full-queue burst")
    parser.add_argument("--burst-queue", type=int, default=16)
    parser.add_argument("--output", type=Path, default=RESULTS / "serve_load")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    machine = machine_info()
    png, truth = test_png()
    flags = ["--max-batch", args.max_batch, "--max-wait-ms", args.max_wait_ms]
    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        run = args.run or train_guide(Path(scratch))
        model, spec = export_peer_model(run, Path(scratch))
        services, labels = {}, {}
        starts = {"batching": lambda: cnnlab_serve(run, *flags),
                  "one_per_request": lambda: cnnlab_serve(run, "--max-batch", 1),
                  "peer": lambda: onnx_peer(model, spec)}
        running = {}
        try:
            for key, start in starts.items():
                running[key] = start()
            # Rounds interleave the services (batching, one per request, peer, batching, ...), all three
            # started and idle but for the one measured: on a machine shared with other work, a change
            # in its load then falls on every service, and the median round of each is compared.
            rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in starts}
            for number in range(1, args.rounds + 1):
                for key, service in running.items():
                    print(f"{NAMES[key]} (round {number} of {args.rounds}):", file=sys.stderr)
                    rounds[key].append(measure(service, png, args))
            for key in starts:
                services[key] = median_round(rounds[key])
                labels[key] = services[key]["label"]
            soaked = soak(running["batching"], png, args.soak_requests, 16)
        finally:
            for service in running.values():
                service.stop()
        burst_result = burst(run, png, args.burst, args.burst_queue)
        import cnnlab

        loaded = cnnlab.load(run)
        model_name = (f"{loaded.info.architecture.label or loaded.info.architecture.name} on Fashion-MNIST "
                      f"({'×'.join(map(str, loaded.input.shape))} input)")
    top = {key: services[key]["points"][-1] for key in services}
    results = {
        "machine": machine, "note": args.note, "command": "python " + shlex.join(sys.argv), "model": model_name,
        "flags": " ".join(map(str, flags)), "true_label": truth, "labels": sorted(set(labels.values())),
        "services": services, "soak": soaked, "burst": burst_result,
        "ratios": {"batching_vs_one_per_request": ratio(top["batching"]["per_second"], top["one_per_request"]["per_second"]),
                   "batching_vs_peer": ratio(top["batching"]["per_second"], top["peer"]["per_second"])},
    }
    body = report(results)
    print("\n" + body)
    write_results(args.output, "Serving under load: cnnlab serve vs one forward per request vs FastAPI + ONNX Runtime",
                  results, body)


if __name__ == "__main__":
    main()
