"""Freed batch-sized tensors are reused instead of faulting in fresh pages (glibc Linux)."""

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux" or platform.libc_ver()[0] != "glibc",
                                reason="the tuning applies to glibc's malloc only")

# guide-cnn's inference on 20 batches of 64 images; how many page faults does it cost? glibc
# adapts its thresholds to the sizes a process freed before, so whether a program pays depends on
# its history (importing matplotlib with a font cache is enough to hide it for this model). The
# baseline is made deterministic by pinning glibc's thresholds to their start-up values (128 KiB).
_FAULTS = """
import json, resource, torch
from torch import nn
from cnnlab.train.host_memory import keep_freed_memory
import ctypes
libc = ctypes.CDLL("libc.so.6")
libc.mallopt(-3, 128 * 1024), libc.mallopt(-1, 128 * 1024)  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
torch.set_num_threads(1)
model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                      nn.MaxPool2d(2), nn.Conv2d(64, 64, 3), nn.ReLU(), nn.Flatten(), nn.Linear(576, 64),
                      nn.ReLU(), nn.Linear(64, 10)).eval()
images = torch.rand(64, 1, 28, 28)
@torch.inference_mode()
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        model(images)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()  # torch's own one-time set-up
untuned = faults()
outcome = keep_freed_memory()
print(json.dumps({"outcome": outcome, "untuned": untuned, "tuned": faults()}))
"""


def _measure(**environment: str) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    env.update(environment)
    completed = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True, env=env,
                               check=True)
    return json.loads(completed.stdout)


def test_freed_tensors_no_longer_fault_in_fresh_pages():
    measured = _measure()
    assert measured["outcome"] == "kept"
    # A batch's activations are ~14 MiB: fresh pages for them every batch is thousands of faults
    # of 4 KiB each; kept memory is faulted in once.
    assert measured["untuned"] > 20_000
    assert measured["tuned"] < measured["untuned"] / 10


def test_opt_out_leaves_malloc_alone():
    measured = _measure(CNNLAB_KEEP_FREED_MEMORY="0")
    assert measured["outcome"] == "skipped: CNNLAB_KEEP_FREED_MEMORY=0"
    assert measured["tuned"] > 20_000


def test_users_own_allocator_settings_win():
    measured = _measure(MALLOC_TRIM_THRESHOLD_="100000")
    assert measured["outcome"].startswith("skipped: the user chose")



def test_cpu_performance_applies_it():
    import torch

    from cnnlab.train import host_memory
    from cnnlab.performance import resolve_performance

    resolve_performance(torch.device("cpu"))
    assert host_memory._outcome is not None  # decided once, by the first CPU set-up
