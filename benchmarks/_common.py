"""What every benchmark script shares: the machine description, thread settings, Fashion-MNIST
read straight from its IDX files, running one contender in a fresh process, and the result files.

The scripts are run as `python benchmarks/NAME.py`, so this folder is on `sys.path` and they
import this module as `_common`.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import os
import platform
import struct
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

BENCHMARKS = Path(__file__).resolve().parent
RESULTS = BENCHMARKS / "results"
FASHION_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


# --- the machine ---------------------------------------------------------------------------------

def cores() -> int:
    """CPU cores this process may run on (what a container or `taskset` allows, not the host's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> str | None:
    # From the installed metadata: importing TensorFlow just to read its version costs seconds.
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _cnnlab_revision() -> str | None:
    """The commit the measured cnnlab came from, "+changes" when src/ differs from it."""
    def git(*arguments: str) -> str:
        return subprocess.run(["git", "-C", str(BENCHMARKS.parent), *arguments], capture_output=True,
                              text=True, check=True).stdout.strip()
    try:
        changed = git("status", "--porcelain", "--", "src")
        return git("rev-parse", "--short", "HEAD") + ("+changes" if changed else "")
    except (OSError, subprocess.CalledProcessError):
        return None


def gpu_info(device: str) -> dict[str, Any] | None:
    """The GPU a `cuda` run used (name, memory, CUDA and driver versions); None for other devices."""
    if not device.startswith("cuda"):
        return None
    import torch

    index = torch.device(device).index or 0
    properties = torch.cuda.get_device_properties(index)
    try:
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                capture_output=True, text=True, check=True).stdout.split()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        driver = None
    return {"name": properties.name, "memory_gib": round(properties.total_memory / 2**30, 1),
            "multiprocessors": properties.multi_processor_count, "cuda": torch.version.cuda,
            "driver": driver}


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """The machine a result was measured on; the load average says whether anything else was running."""
    return {
        "device": device,
        "gpu": gpu_info(device),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": cores(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in
                     ("cnnlab", "torch", "torchvision", "numpy", "pillow", "tensorflow-cpu", "keras",
                      "onnx", "onnxruntime")},
        "cnnlab_revision": _cnnlab_revision(),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
    }


# --- threads -------------------------------------------------------------------------------------

def synchronize(device: str) -> None:
    """Wait for the device's queued work, so that a host clock read next includes it."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)


def use_threads(threads: int) -> None:
    """Give PyTorch exactly `threads` threads (the other frameworks get the same number their way)."""
    import torch

    torch.set_num_threads(threads)


# --- Fashion-MNIST, read the way a tutorial reads it -------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip-compressed or not) -> numpy array: 4-byte magic, big-endian sizes, then the data."""
    with (gzip.open(path, "rb") if path.suffix == ".gz" else path.open("rb")) as handle:
        content = handle.read()
    dimensions = content[3]
    shape = struct.unpack(f">{dimensions}I", content[4 : 4 + 4 * dimensions])
    return np.frombuffer(content, dtype=np.uint8, offset=4 + 4 * dimensions).reshape(shape)


def fashion_mnist_folder() -> Path:
    """The folder whose four .gz files every contender reads: `$CNNLAB_FASHION_MNIST` if set, else
    the one `cnnlab train --data fashion-mnist` would use (`$CNNLAB_DATA`, the download cache, the
    Debian copy), so that the contenders never train on different copies."""
    if os.environ.get("CNNLAB_FASHION_MNIST"):
        return Path(os.environ["CNNLAB_FASHION_MNIST"])
    from cnnlab.data.named import local_copy, search_folders

    found = local_copy("fashion-mnist")
    if found is None:
        looked_in = ", ".join(str(folder) for folder in search_folders("fashion-mnist"))
        sys.exit(f"Fashion-MNIST not found (looked in {looked_in}). Debian: apt-get install "
                 "dataset-fashion-mnist; or set CNNLAB_DATA (or CNNLAB_FASHION_MNIST) to a folder "
                 "holding the four .gz files")
    return found


def _as_published_or_gunzipped(path: Path) -> Path:
    # cnnlab also reads a copy whose files were gunzipped; so must every contender.
    return path if path.is_file() else path.with_suffix("")


def fashion_mnist(split: str, limit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (N, 28, 28) and int64 labels (N,) of one split; `limit` takes a seeded subset."""
    folder = fashion_mnist_folder()
    images_file, labels_file = (_as_published_or_gunzipped(folder / name) for name in FASHION_FILES[split])
    images = read_idx(images_file)
    labels = read_idx(labels_file).astype(np.int64)
    if limit is not None and limit < len(images):
        taken = np.sort(np.random.default_rng(seed).permutation(len(images))[:limit])
        images, labels = images[taken], labels[taken]
    return images, labels


# --- one contender per process -------------------------------------------------------------------

def run_in_fresh_process(script: Path, arguments: list[str]) -> dict[str, Any]:
    """Run `script --worker-output FILE ARGUMENTS` and return the JSON it wrote to FILE.

    Each contender gets a process of its own, so no framework's thread pools, allocator caches or
    compiled graphs from an earlier contender are around while the next one is timed.
    """
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as folder:
        output = Path(folder) / "result.json"
        command = [sys.executable, str(script), "--worker-output", str(output), *arguments]
        completed = subprocess.run(command, stdout=sys.stderr)  # the worker's chatter goes to stderr
        return _worker_result(command, completed.returncode, output)


def _worker_result(command: list[str], returncode: int, output: Path) -> dict[str, Any]:
    """The JSON a worker wrote, or an error naming the command when it failed."""
    if returncode != 0 or not output.is_file():
        return {"error": f"{' '.join(command)} exited with status {returncode}"}
    return json.loads(output.read_text())


# --- contenders taking turns ---------------------------------------------------------------------
#
# This machine's speed drifts by 15-25% over minutes, so contenders timed one after another can
# each meet a different machine. Taking turns, one epoch each, all of them meet every phase of the
# drift alike: exactly one process computes at any moment; the others are blocked on a pipe.

TURNS_ENVIRONMENT = "CNNLAB_BENCH_TURN_FDS"  # "READ,WRITE": the worker's ends of its two pipes


class Turns:
    """Worker side. `wait(label)` says "I am ready for <label>" and blocks until it is this
    process's turn; without a coordinator (a contender run on its own) it returns at once."""

    def __init__(self) -> None:
        fds = os.environ.get(TURNS_ENVIRONMENT)
        self.enabled = bool(fds)
        if self.enabled:
            read_fd, write_fd = (int(fd) for fd in fds.split(","))
            for fd in (read_fd, write_fd):  # a child of the worker must not hold the pipes open
                os.set_inheritable(fd, False)
            self._from_coordinator = os.fdopen(read_fd, "r", buffering=1)
            self._to_coordinator = os.fdopen(write_fd, "w", buffering=1)
        self.waited_seconds = 0.0

    def wait(self, label: str) -> None:
        if not self.enabled:
            return
        started = time.perf_counter()
        self._to_coordinator.write(f"{label}\n")
        if self._from_coordinator.readline().strip() != "go":
            raise SystemExit("the benchmark's coordinator went away")
        self.waited_seconds += time.perf_counter() - started


def run_taking_turns(script: Path, arguments: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Run `script --worker-output FILE ARGUMENTS` for every contender at once, letting one at a time
    run from one `Turns.wait` to its next (an epoch, with its validation); the order rotates each
    round. Returns each contender's JSON result, as `run_in_fresh_process` does."""
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-") as folder:
        workers = {name: _start_turn_taker(script, Path(folder) / f"{name}.json", extra)
                   for name, extra in arguments.items()}
        waiting = {name: worker for name, worker in workers.items() if _next_request(worker)}
        names, round_number = list(waiting), 0
        while waiting:
            order = names[round_number % len(names):] + names[:round_number % len(names)]
            for name in (name for name in order if name in waiting):
                worker = waiting[name]
                worker["to"].write("go\n")
                worker["to"].flush()
                if not _next_request(worker):  # it finished (or failed) during this turn
                    del waiting[name]
            round_number += 1
        return {name: _turn_taker_result(worker) for name, worker in workers.items()}


def _start_turn_taker(script: Path, output: Path, arguments: list[str]) -> dict[str, Any]:
    to_worker_read, to_worker_write = os.pipe()
    from_worker_read, from_worker_write = os.pipe()
    environment = {**os.environ, TURNS_ENVIRONMENT: f"{to_worker_read},{from_worker_write}"}
    command = [sys.executable, str(script), "--worker-output", str(output), *arguments]
    process = subprocess.Popen(command, stdout=sys.stderr, env=environment,
                               pass_fds=(to_worker_read, from_worker_write))
    os.close(to_worker_read)
    os.close(from_worker_write)  # so that reading sees the end when the worker exits
    return {"process": process, "command": command, "output": output, "requests": [],
            "to": os.fdopen(to_worker_write, "w"), "from": os.fdopen(from_worker_read, "r")}


def _next_request(worker: dict[str, Any]) -> bool:
    """Block until the worker asks for its next turn (True) or exits (False)."""
    line = worker["from"].readline()
    if not line:
        worker["process"].wait()
        return False
    worker["requests"].append(line.strip())
    return True


def _turn_taker_result(worker: dict[str, Any]) -> dict[str, Any]:
    return _worker_result(worker["command"], worker["process"].wait(), worker["output"])


def write_worker_output(path: str, result: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


# --- command line and result files ---------------------------------------------------------------

def device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cpu",
                        help="where PyTorch trains: cpu, cuda or cuda:N (the test split is scored on the CPU) "
                             "[default: %(default)s]")


def common_arguments(parser: argparse.ArgumentParser, *, default_output: str) -> None:
    parser.add_argument("--threads", type=int, default=cores(),
                        help="threads for every framework [default: the cores this process may use]")
    parser.add_argument("--output", type=Path, default=RESULTS / default_output,
                        help="where to write OUTPUT.json and OUTPUT.md [default: %(default)s]")
    parser.add_argument("--note", default="",
                        help="a remark stored with the results, e.g. about machine load")
    parser.add_argument("--worker-output", help=argparse.SUPPRESS)  # internal: run one contender


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_markdown(machine: dict[str, Any], note: str) -> str:
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items() if version)
    gpu = machine.get("gpu")
    on_gpu = (f"the GPU {gpu['name']} ({gpu['memory_gib']} GiB, CUDA {gpu['cuda']}, driver {gpu['driver']}) "
              f"and ") if gpu else ""
    text = (f"Measured {machine['date']} on {on_gpu}{machine['cpu']}, {machine['cores']} cores used, "
            f"{machine['memory_gib']} GiB RAM, {machine['platform']}, Python {machine['python']}; "
            f"{versions} (cnnlab revision {machine.get('cnnlab_revision') or 'unknown'}). Load average (1 min) {machine['load_average_1m_at_start']} at the start, "
            f"{machine.get('load_average_1m_at_end', '?')} at the end.")
    return text + (f"\n\nNote: {note}" if note else "")


def write_results(output: Path, title: str, results: dict[str, Any], body: str) -> None:
    """OUTPUT.json (everything measured) and OUTPUT.md (the tables the README quotes)."""
    results["machine"]["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    output.parent.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = output.with_suffix(".json"), output.with_suffix(".md")
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    markdown = f"# {title}\n\n{body}\n\n{machine_markdown(results['machine'], results.get('note', ''))}\n"
    markdown_path.write_text(markdown)
    print(f"\nresults written to {json_path} and {markdown_path}", file=sys.stderr)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator
