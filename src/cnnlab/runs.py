"""Run folders: where a training run keeps everything it produced.

    runs/NAME/
      config.yaml            the resolved TrainConfig (reload with -c to reproduce the run)
      data.json              what was trained on: sources, class counts, image size, skipped files
      run.json               how and where each session trained: what every auto became (precision,
                             layout, batch threads), the machine, PyTorch's version, outcome, images/s
      metrics.csv            one row per epoch
      training_curves.png    loss and accuracy per epoch
      weights/best.safetensors + best.json     lowest validation loss
      weights/last.safetensors + last.json     the latest epoch
      weights/train-state.safetensors          model + optimizer + schedule, for --resume
      eval-<split>/          written by `cnnlab evaluate`
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from cnnlab.errors import CnnlabError

WEIGHTS = "weights"
TRAIN_STATE = "train-state.safetensors"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def default_run_name(model_label: str, data: str) -> str:
    return _slug(f"{Path(model_label).stem}-{Path(data.rstrip('/')).stem}")


def create_run_dir(runs_dir: str | Path, name: str | None, default_name: str, *, exist_ok: bool) -> Path:
    """A new, empty run folder. An explicit --name that exists is an error unless --exist-ok;
    the default name is numbered (-2, -3, ...) instead, so earlier runs are never overwritten."""
    runs_dir = Path(runs_dir)
    if name is not None:
        folder = runs_dir / _slug(name)
        if folder.exists():
            if not exist_ok:
                raise CnnlabError(
                    f"run folder {folder} already exists: choose another --name, continue it with "
                    f"--resume {folder}, or replace it with --exist-ok"
                )
            _remove_run(folder)
    else:
        folder = runs_dir / default_name
        number = 2
        while folder.exists():
            folder = runs_dir / f"{default_name}-{number}"
            number += 1
    (folder / WEIGHTS).mkdir(parents=True)
    return folder


def _remove_run(folder: Path) -> None:
    if not (folder / "config.yaml").exists() and not _holds_nothing(folder):
        raise CnnlabError(f"{folder} exists and is not a cnnlab run folder; refusing to replace it")
    shutil.rmtree(folder)


def _holds_nothing(folder: Path) -> bool:
    """An empty folder, or one holding only an empty weights/ (a run that failed as it started)."""
    contents = list(folder.iterdir())
    return not contents or (len(contents) == 1 and contents[0].name == WEIGHTS and contents[0].is_dir()
                            and not any(contents[0].iterdir()))


def find_run(run: str | Path, runs_dir: str | Path = "runs") -> Path:
    """A run folder from a path or a name under `runs_dir`."""
    for candidate in (Path(run), Path(runs_dir) / str(run)):
        if (candidate / WEIGHTS).is_dir():
            return candidate
    raise CnnlabError(f"{run}: not a run folder (expected {run}/{WEIGHTS}/best.safetensors); "
                      f"runs are under {runs_dir}/ unless --runs-dir says otherwise")


def find_checkpoint(run: str | Path, which: str = "best", runs_dir: str | Path = "runs") -> Path:
    """The model checkpoint for a run folder, run name, or a .safetensors path given directly."""
    path = Path(run)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise CnnlabError(f"checkpoint {path} does not exist")
        return path
    folder = find_run(run, runs_dir)
    checkpoint = folder / WEIGHTS / f"{which}.safetensors"
    if not checkpoint.is_file():
        raise CnnlabError(f"{folder} has no {which} checkpoint yet ({checkpoint}); did training finish an epoch?")
    return checkpoint
