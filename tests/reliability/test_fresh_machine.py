"""`make test` alone prepares a fresh Debian machine for the whole suite (issue 20, item 2)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_test_installs_chromium_for_the_browser_tests(tmp_path):
    """Hazard: `make test` skipped the three Chromium report tests on a fresh machine, because only
    .ci/run installed Chromium. Here `make chromium` (a prerequisite of `make test`) runs with a PATH
    on which there is no chromium and apt-get is a stand-in that writes down what it was asked."""
    assert "chromium" in _prerequisites("test")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "apt-get.log"
    stand_in = bin_dir / "apt-get"
    stand_in.write_text(f'#!/bin/sh\necho "$DEBIAN_FRONTEND $*" >> {asked}\n')
    stand_in.chmod(0o755)
    for tool in ("sh", "env", "echo"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    outcome = subprocess.run([shutil.which("make"), "--no-print-directory", "-C", str(ROOT), "chromium", "SUDO="],
                             env={**os.environ, "PATH": str(bin_dir)}, capture_output=True, text=True, timeout=60)
    assert outcome.returncode == 0, outcome.stderr
    assert asked.read_text().splitlines()[0] == "noninteractive install -y chromium chromium-driver"


def _prerequisites(target: str) -> list[str]:
    for line in (ROOT / "Makefile").read_text().splitlines():
        if line.startswith(f"{target}:"):
            return line.split(":", 1)[1].split()
    raise AssertionError(f"no {target} target in the Makefile")
