"""Test helpers: run the real `cnnlab` command in-process or as a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
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
