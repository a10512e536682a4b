"""The benchmarks' turn-taking (benchmarks/_common.py): contenders started together compute one at a
time, an epoch each, in an order that rotates every round — and a failing one does not stall the rest."""

from __future__ import annotations

import sys
import textwrap
from itertools import combinations
from pathlib import Path

import pytest

from tests.conftest import requires_fashion_mnist

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from _common import run_taking_turns  # noqa: E402
from train_throughput import median_epoch_ratio  # noqa: E402

WORKER = """
import sys, time
sys.path.insert(0, {benchmarks!r})
from _common import Turns, write_worker_output

output, name, rounds, fail_at = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
turns = Turns()
spans = []
for epoch in range(1, rounds + 1):
    turns.wait(f"epoch {{epoch}}")
    if epoch == fail_at:
        raise SystemExit(3)
    started = time.monotonic()
    while time.monotonic() - started < 0.05:  # busy, like an epoch of training
        pass
    spans.append([started, time.monotonic()])
turns.wait("test")
write_worker_output(output, {{"name": name, "spans": spans, "waited": turns.waited_seconds}})
"""


@pytest.fixture
def worker_script(tmp_path) -> Path:
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(WORKER.format(benchmarks=str(BENCHMARKS))))
    return script


def test_contenders_take_turns_one_at_a_time_in_a_rotating_order(worker_script):
    results = run_taking_turns(worker_script, {name: [name, "3", "0"] for name in ("a", "b", "c")})

    spans = [(start, end, name, epoch) for name, result in results.items()
             for epoch, (start, end) in enumerate(result["spans"], start=1)]
    for (start_1, end_1, *_), (start_2, end_2, *_) in combinations(spans, 2):
        assert end_1 <= start_2 or end_2 <= start_1, "two contenders computed at the same time"
    order = [(name, epoch) for _, _, name, epoch in sorted(spans)]
    assert order == [("a", 1), ("b", 1), ("c", 1),
                     ("b", 2), ("c", 2), ("a", 2),
                     ("c", 3), ("a", 3), ("b", 3)]
    # Each waited through the others' turns: at least 2 × 3 busy spans of 0.05 s.
    assert all(result["waited"] >= 0.25 for result in results.values())


def test_a_contender_that_fails_is_reported_and_the_others_finish(worker_script):
    arguments = {"ok": ["ok", "3", "0"], "broken": ["broken", "3", "2"]}
    results = run_taking_turns(worker_script, arguments)
    assert len(results["ok"]["spans"]) == 3
    assert "exited with status 3" in results["broken"]["error"]


def test_the_epoch_by_epoch_ratio_is_the_median_of_pairs_after_the_first_epoch():
    cnnlab = {"train_images": 100, "epoch_train_seconds": [9.0, 1.0, 1.0, 2.0, 1.0]}
    other = {"train_images": 100, "epoch_train_seconds": [1.0, 1.5, 1.6, 2.0, 1.8]}
    # pairs from epoch 2: 1.5, 1.6, 1.0, 1.8 -> median (1.5 + 1.6) / 2
    assert median_epoch_ratio(cnnlab, other) == pytest.approx(1.55)
    assert median_epoch_ratio(cnnlab, {"skipped": "no TensorFlow"}) is None
    assert median_epoch_ratio(cnnlab, {"train_images": 100, "epoch_train_seconds": [1.0]}) is None


@requires_fashion_mnist
def test_the_throughput_benchmark_sets_batch_threads_against_whole_batches(tmp_path):
    """cnnlab_whole is cnnlab with --batch-threads 1, whatever the cnnlab contender was given."""
    import json
    import subprocess

    output = tmp_path / "throughput"
    subprocess.run([sys.executable, str(BENCHMARKS / "train_throughput.py"), "--epochs", "1", "--limit", "600",
                    "--keras-epochs", "0", "--only", "cnnlab", "--only", "cnnlab_whole", "--threads", "2",
                    "--set", "batch_threads=2", "--output", str(output)], check=True, capture_output=True)
    results = json.loads(output.with_suffix(".json").read_text())
    contenders = results["contenders"]
    assert "each batch in 2 parts on 2 threads" in contenders["cnnlab"]["arithmetic"]
    assert "parts" not in contenders["cnnlab_whole"]["arithmetic"]
    assert results["ratios"]["cnnlab_over_cnnlab_whole_images_per_s"] == pytest.approx(
        contenders["cnnlab"]["images_per_s"] / contenders["cnnlab_whole"]["images_per_s"])
    report = output.with_suffix(".md").read_text()
    assert "/ cnnlab with each batch whole (`--batch-threads 1`): **" in report
