"""Test helpers: run the real `cnnlab` command in-process or as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from click.testing import CliRunner

from cnnlab.cli import main


@dataclass
class Outcome:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: object, cwd: Path | None = None) -> Outcome:
    """Invoke `cnnlab ARGS` in this process (through `main`, so errors become exit codes)."""
    previous = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    exit_code = 0
    try:
        with CliRunner().isolation() as (stdout, stderr, _):
            try:
                main([str(a) for a in args])
            except SystemExit as done:
                exit_code = done.code if isinstance(done.code, int) else 1
            output, errors = stdout.getvalue().decode(), stderr.getvalue().decode()
    finally:
        os.chdir(previous)
    return Outcome(exit_code, output, errors)


def run_process(*args: object, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m cnnlab ARGS` as a separate process."""
    return subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def kill_after_first_epoch(args: list[object], run: Path) -> None:
    """Start `cnnlab ARGS` and SIGKILL it (with its data-loading workers) once epoch 1's state is saved."""
    process = subprocess.Popen([sys.executable, "-m", "cnnlab", *map(str, args)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    state = run / "weights" / "train-state.safetensors"
    deadline = time.monotonic() + 300
    while not state.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "epoch 1 never finished"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
