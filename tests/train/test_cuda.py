"""Training, resuming, evaluating and predicting on a CUDA GPU — the paths CI's CPU never takes.

Skipped without CUDA. `benchmarks/gpu.sh` runs them on a GPU machine before it records the GPU
benchmarks. (Several processes under NCCL need several GPUs; the lent machines have one.)
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from tests.conftest import requires_fashion_mnist
from tests.helpers import run_process

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


def _rows(run):
    return list(csv.DictReader((run / "metrics.csv").open()))


@requires_fashion_mnist
def test_fast_recipe_on_cuda_learns_as_on_the_cpu(tmp_path):
    """The CPU band of tests/train/test_fashion_mnist.py (12,000 images, 2 epochs: ≥ 86.5%), on the GPU
    in bfloat16 (or float16 with loss scaling on GPUs without bfloat16)."""
    import cnnlab

    runs = tmp_path / "runs"
    run = run_process("train", "--data", "fashion-mnist", "--recipe", "fast", "--epochs", 2, "--limit", 12_000,
                      "--seed", 0, "--device", "cuda", "--runs-dir", runs, "--name", "gpu")
    assert run.returncode == 0, run.stderr
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    assert f"arithmetic: {expected}, channels-last" in run.stderr, run.stderr[-2000:]
    on_gpu = cnnlab.evaluate(runs / "gpu", split="test", device="cuda", quiet=True).metrics["accuracy"]
    on_cpu = cnnlab.evaluate(runs / "gpu", split="test", device="cpu", precision="fp32",
                             quiet=True).metrics["accuracy"]
    assert on_gpu >= 0.865, on_gpu
    # Weights trained on the GPU are plain safetensors: the CPU in float32 scores them the same,
    # give or take the few test images whose two best classes are within bfloat16's rounding.
    assert abs(on_gpu - on_cpu) <= 0.003, (on_gpu, on_cpu)


def test_resume_on_cuda_continues_the_run(digits_split_folder, tmp_path):
    """1 epoch, then --resume to 3, ends where 3 straight epochs end (cuDNN may choose kernels that add
    in another order, so the two agree closely rather than bit for bit)."""
    runs = tmp_path / "runs"
    common = ["--data", digits_split_folder, "--image-size", 24, "--batch-size", 32, "--seed", 5,
              "--optimizer", "adamw", "--schedule", "constant", "--device", "cuda", "--runs-dir", runs, "--quiet"]
    straight = run_process("train", *common, "--epochs", 3, "--name", "straight")
    assert straight.returncode == 0, straight.stderr
    first = run_process("train", *common, "--epochs", 1, "--name", "split")
    assert first.returncode == 0, first.stderr
    resumed = run_process("train", "--resume", runs / "split", "--epochs", 3)
    assert resumed.returncode == 0, resumed.stderr
    split, whole = _rows(runs / "split"), _rows(runs / "straight")
    assert [row["epoch"] for row in split] == ["1", "2", "3"]
    assert float(split[-1]["val_accuracy"]) > 0.9
    assert abs(float(split[-1]["val_accuracy"]) - float(whole[-1]["val_accuracy"])) <= 0.03
    assert float(split[-1]["train_loss"]) < float(split[0]["train_loss"])


def test_float16_with_loss_scaling_on_cuda(digits_split_folder, tmp_path):
    """--precision fp16 scales the loss (GradScaler), learns as well, and saves the scale for --resume."""
    import cnnlab
    from cnnlab.checkpoint import load_training_state

    result = cnnlab.train(data=str(digits_split_folder), image_size="24", epochs=4, seed=3, precision="fp16",
                          device="cuda", runs_dir=str(tmp_path), name="fp16", quiet=True)
    state = load_training_state(result.run_dir / "weights" / "train-state.safetensors")
    assert state.loss_scaler is not None and state.loss_scaler["scale"] > 0
    accuracy = cnnlab.evaluate(result.run_dir, device="cuda", quiet=True).metrics["accuracy"]
    assert accuracy > 0.9, accuracy


def test_predict_on_cuda_gives_the_cpu_labels(digits_split_folder, tmp_path):
    import cnnlab

    result = cnnlab.train(data=str(digits_split_folder), image_size="24", epochs=3, seed=1, device="cuda",
                          runs_dir=str(tmp_path), name="p", quiet=True)
    files = sorted((digits_split_folder / "test").rglob("*.png"))[:200]
    on_gpu = cnnlab.predict(result.run_dir, files, device="cuda")
    on_cpu = cnnlab.predict(result.run_dir, files, device="cpu", precision="fp32")
    assert len(on_gpu) == len(on_cpu) == 200
    agree = np.mean([a["label"] == b["label"] for a, b in zip(on_gpu, on_cpu)])
    assert agree >= 0.99, agree
