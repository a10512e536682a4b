"""Impossible sizes: a run that cannot fit in memory is refused before anything is allocated, with the
figures (issue 20, item 9); a model's smallest input is asked for consistently (item 18)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_cli

# The command runs under a cap on its heap, so that a check that fails to refuse ends in a MemoryError
# here instead of the machine's out-of-memory killer; cnnlab's own figure comes from /proc/meminfo.
CAP_BYTES = 3 * 1024**3
# It reports its own peak memory at exit, VmHWM of /proc/self/status: the high-water mark of the
# command's own address space. Neither RUSAGE_CHILDREN (this test process's other children too) nor the
# command's RUSAGE_SELF will do: Linux carries ru_maxrss across exec, so a command started from a
# pytest-xdist worker holding 2.4 GiB reported 2.4 GiB.
LAUNCH = ("import atexit, re, resource, runpy, sys; resource.setrlimit(resource.RLIMIT_DATA, ({cap}, {cap})); "
          "atexit.register(lambda: print('peak-rss-kib', re.search(r'VmHWM:\\s+(\\d+) kB', "
          "open('/proc/self/status').read()).group(1), file=sys.stdout)); "
          "sys.argv[0] = 'cnnlab'; runpy.run_module('cnnlab', run_name='__main__')")


def _capped(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LAUNCH.format(cap=CAP_BYTES), *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _peak_rss(outcome: subprocess.CompletedProcess) -> int:
    """The command's own peak resident memory in bytes, as it reported it at exit."""
    return int(outcome.stdout.rsplit("peak-rss-kib ", 1)[1].split()[0]) * 1024


@pytest.mark.parametrize("data", ["digits", "png-folder"])
def test_an_image_size_of_100000_is_refused_with_the_figure_before_any_allocation(data, tmp_path):
    """Hazard: `--image-size 100000` got the process OOM-killed (23 GB): nothing estimated what the
    run needed before resizing the images to it. Here both kinds of data: decoded arrays (a named
    dataset, converted in memory) and a folder of PNG files (streamed: more than 2 GiB at that size)."""
    if data == "png-folder":
        from tests.conftest import write_digits_folder

        data = write_digits_folder(tmp_path / "pngs")
    outcome = _capped("train", "--data", data, "--image-size", 100000, "--epochs", 1, "--runs-dir", "runs",
                      cwd=tmp_path)
    assert outcome.returncode == 2, outcome.stderr[-3000:]
    error = outcome.stderr.strip().splitlines()[-1]
    said = re.match(r"error: --image-size 100000: training would need at least ([\d.]+) (TiB|PiB) of memory, "
                    r"and this machine has ([\d.]+) (GiB|MiB) available \(", error)
    assert said, error
    assert "at 1×100000×100000 take " in error and "Pass a smaller --image-size" in error
    assert "Traceback" not in outcome.stderr
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
    assert _peak_rss(outcome) < 2 * 1024**3  # and before any image or weight was allocated


def test_a_batch_too_large_for_memory_names_the_batch_size(tmp_path):
    """A fitting image size with an impossible batch: the activations dominate, and the advice says
    --batch-size (fast-cnn's activations at 1000×1000, 4,096 images a step: hundreds of GiB)."""
    outcome = _capped("train", "--data", "digits", "--model", "fast-cnn", "--image-size", 1000, "--batch-size",
                      4096, "--limit", 200, "--runs-dir", "runs", cwd=tmp_path)
    assert outcome.returncode == 2, outcome.stderr[-3000:]
    error = outcome.stderr.strip().splitlines()[-1]
    assert "one batch of 4096 through it" in error and "or a smaller --batch-size" in error, error


def test_an_ordinary_run_is_not_refused_and_says_nothing_about_memory(tmp_path):
    outcome = run_cli("train", "--data", "digits", "--image-size", 18, "--limit", 100, "--epochs", 1,
                      "--runs-dir", tmp_path)
    assert outcome.exit_code == 0, outcome.stderr
    assert "memory" not in outcome.stderr


def test_the_smallest_image_size_a_model_asks_for_is_the_one_it_needs(tmp_path):
    """Hazard: "needs images of at least 18×18 … pass --image-size 32": the advice did not match the need."""
    small = run_cli("train", "--data", "digits", "--limit", 100, "--epochs", 1, "--runs-dir", tmp_path)
    assert small.exit_code == 2
    assert ("model 'guide-cnn' needs images of at least 18×18 pixels, but they are 8×8: pass --image-size 18 or "
            "larger to resize them") in small.stderr
    following = run_cli("train", "--data", "digits", "--limit", 100, "--epochs", 1, "--image-size", 18,
                        "--runs-dir", tmp_path)
    assert following.exit_code == 0, following.stderr
