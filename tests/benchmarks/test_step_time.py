"""benchmarks/step_time.py: models timed side by side, each step a real training step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_step_time_writes_each_models_median_and_ratio_to_the_first(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "step_time.py"), "guide-cnn", "fast-cnn-v2",
                           "--rounds", "2", "--steps", "2", "--batch-size", "8", "--threads", "1",
                           "--output", str(tmp_path / "steps")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads((tmp_path / "steps.json").read_text())
    models = results["models"]
    assert list(models) == ["guide-cnn", "fast-cnn-v2"]
    assert models["guide-cnn"]["ratio_to_first"] == 1.0
    assert (models["guide-cnn"]["parameters"], models["fast-cnn-v2"]["parameters"]) == (93_322, 192_082)
    for timing in models.values():
        assert len(timing["rounds_ms"]) == 2 and all(ms > 0 for ms in timing["rounds_ms"])
        assert timing["median_ms"] > 0
    ratio = models["fast-cnn-v2"]["median_ms"] / models["guide-cnn"]["median_ms"]
    assert abs(models["fast-cnn-v2"]["ratio_to_first"] - ratio) < 1e-9
    assert "| `fast-cnn-v2` | 192,082 | " in (tmp_path / "steps.md").read_text()


def test_one_model_at_two_batch_sizes_is_compared_per_image(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "step_time.py"), "guide-cnn@4", "guide-cnn@12",
                           "--rounds", "2", "--steps", "2", "--threads", "1", "--output", str(tmp_path / "steps")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    models = json.loads((tmp_path / "steps.json").read_text())["models"]
    small, large = models["guide-cnn@4"], models["guide-cnn@12"]
    assert (small["batch_size"], large["batch_size"]) == (4, 12)
    assert abs(large["median_us_per_image"] - large["median_ms"] / 12 * 1000) < 1e-9
    assert abs(large["ratio_to_first"] - large["median_us_per_image"] / small["median_us_per_image"]) < 1e-9


def test_a_batch_after_the_at_sign_must_be_a_number(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "step_time.py"), "guide-cnn@big", "guide-cnn",
                           "--output", str(tmp_path / "steps")], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "guide-cnn@big: the batch size after '@' must be a positive whole number" \
        in done.stderr


def test_step_time_needs_two_models(tmp_path):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "step_time.py"), "guide-cnn", "--output",
                           str(tmp_path / "steps")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "give at least two models" in done.stderr
