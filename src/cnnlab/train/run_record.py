"""`run.json`: where and how each session of a run trained.

`config.yaml` keeps what was asked — `precision: auto`, `batch_threads: auto` — so that `-c` asks
the same on another machine. What `auto` became here (bf16 or fp32, channels-last or not, each
batch whole or in parts on threads), on which CPU or GPU, with which PyTorch, is written to
`run.json`, one entry per session: the first `cnnlab train`, then one per `--resume`, which may
run on another machine. A run that trained at half the speed you expected, or whose accuracy
moved after an upgrade, can then be explained from its folder alone.

    {"format": "cnnlab.run/1",
     "sessions": [{"started": "...", "finished": "...", "outcome": "completed",
                   "epochs": {"first": 1, "last": 10}, "training_seconds": 49.5, "images_per_s": 10903.1,
                   "arithmetic": {"summary": "bf16, channels-last, each batch in 2 parts on 2 threads", ...},
                   "machine": {...}, "software": {...}, "argv": [...]}]}

The entry is written when the session starts ("outcome": "running") and again when it ends
(completed, stopped early, interrupted or failed), each time atomically. A session killed
outright cannot close its entry; the next `--resume` marks it so (`KILLED`).
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from cnnlab.io import write_text_atomic
from cnnlab.strict_json import to_json_text

RUN_RECORD = "run.json"
FORMAT = "cnnlab.run/1"
KILLED = "ended without closing its entry: the process was killed or the machine stopped"


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def software() -> dict[str, Any]:
    """Versions that change results: cnnlab's, PyTorch's and the Python underneath."""
    # Not platform.platform(): it runs `uname -p` in a subprocess to name the processor.
    system = f"{platform.system()}-{platform.release()}-{platform.machine()}"
    return {"cnnlab": _version("cnnlab"), "torch": torch.__version__, "torchvision": _version("torchvision"),
            "python": platform.python_version(), "platform": system}


def cpu_name() -> str:
    """The processor's model name ("AMD EPYC 9R14 ..."), or what the platform says where
    /proc/cpuinfo does not exist."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown"  # not platform.processor(): a subprocess on Linux


def machine(device: torch.device, processes: int) -> dict[str, Any]:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return {"device": str(device), "name": name, "cpu_threads": torch.get_num_threads(), "processes": processes}


def arithmetic(performance: Any) -> dict[str, Any]:
    """What the steps ran as, every `auto` resolved (a `cnnlab.performance.Performance`)."""
    return {"summary": performance.describe(), "precision": performance.precision_name,
            "channels_last": performance.channels_last, "compile": performance.compile,
            "batch_threads": performance.batch_threads}


def _sessions(path: Path) -> list[dict[str, Any]]:
    """The sessions already recorded; a run.json that cannot be read is set aside, never lost."""
    if not path.exists():
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        sessions = record["sessions"]
        if not isinstance(sessions, list):
            raise TypeError("sessions is not a list")
    except (OSError, ValueError, KeyError, TypeError):
        path.replace(_free_name(path.with_name(path.name + ".unreadable")))
        return []
    for entry in sessions:
        # A session still "running" when the next one starts never closed its entry: its process
        # was killed (SIGKILL, out of memory, the machine went down) before it could.
        if isinstance(entry, dict) and entry.get("outcome") == "running":
            entry["outcome"] = KILLED
    return sessions


def _free_name(path: Path) -> Path:
    """`path`, or `path-2`, `path-3`, ... : the first that does not exist (an earlier copy is kept)."""
    candidate, number = path, 2
    while candidate.exists():
        candidate, number = path.with_name(f"{path.name}-{number}"), number + 1
    return candidate


class RunRecord:
    """This session's entry in `run_dir/run.json`, after any earlier sessions' entries."""

    def __init__(self, run_dir: Path, *, performance: Any, device: torch.device, processes: int, first_epoch: int):
        self.path = Path(run_dir) / RUN_RECORD
        self._earlier = _sessions(self.path)
        self._first_epoch = first_epoch
        self.session: dict[str, Any] = {
            "started": _now(), "finished": None, "outcome": "running",
            "epochs": {"first": first_epoch, "last": None}, "training_seconds": 0.0, "images_per_s": None,
            "arithmetic": arithmetic(performance), "machine": machine(device, processes),
            "software": software(), "argv": list(sys.argv),
        }
        self._write()

    def finish(self, history: list[dict[str, Any]], outcome: str) -> None:
        """Close the entry: `outcome` is "completed", "stopped early: ...", "interrupted" or "failed: ..."."""
        rows = [row for row in history if row.get("epoch", 0) >= self._first_epoch]
        seconds = sum(float(row.get("seconds", 0.0)) for row in rows)
        images = sum(float(row.get("seconds", 0.0)) * float(row.get("images_per_s", 0.0)) for row in rows)
        self.session.update(
            finished=_now(), outcome=outcome,
            epochs={"first": self._first_epoch, "last": rows[-1]["epoch"] if rows else None},
            training_seconds=round(seconds, 3), images_per_s=round(images / seconds, 1) if seconds > 0 else None)
        self._write()

    def _write(self) -> None:
        record = {"format": FORMAT, "sessions": [*self._earlier, self.session]}
        write_text_atomic(self.path, to_json_text(record))

