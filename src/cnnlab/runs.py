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
      export/model.onnx      written by `cnnlab export` (model.pt for TorchScript)
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from cnnlab.errors import CnnlabError, ConfigError
from cnnlab.io import remove_stale_temporary_files, write_text_atomic

log = logging.getLogger(__name__)

WEIGHTS = "weights"
TRAIN_STATE = "train-state.safetensors"
RUN_MARKER = ".cnnlab-run"
"""Written first into every run folder cnnlab creates: what proves a folder is a run of cnnlab's own."""
_MARKER_FORMAT = "cnnlab.run/1"

# What cnnlab writes into a run folder (paths relative to it, `*` within one name). `--exist-ok`
# removes these and nothing else: a file of the user's in a run folder is kept.
_OWN_FILES = (
    RUN_MARKER, "config.yaml", "data.json", "run.json", "metrics.csv", "training_curves.png", "transfer.json",
    "lr_find.png", "lr_find.csv", "report.html",
    "weights/best.safetensors", "weights/best.json", "weights/last.safetensors", "weights/last.json",
    f"weights/{TRAIN_STATE}",
    "eval-*/metrics.json", "eval-*/predictions.csv", "eval-*/confusion_matrix.png", "eval-*/confusion_matrix.json",
    "eval-*/roc_curves.png", "eval-*/predicted_vs_true.png",
    "explain/*/filters.png", "explain/*/gradcam.png", "explain/*/feature-maps/[0-9][0-9]-*.png",
    "export/model.onnx", "export/model.pt",
)
_OWN_FOLDERS = ("weights", "eval-*", "explain", "explain/*", "explain/*/feature-maps", "export")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "run"


def default_run_name(model_label: str, data: str) -> str:
    return _slug(f"{Path(model_label).stem}-{Path(data.rstrip('/')).stem}")


def create_run_dir(runs_dir: str | Path, name: str | None, default_name: str, *, exist_ok: bool) -> Path:
    """A new run folder strictly inside `runs_dir`, created atomically (two runs starting at once
    never share one). An explicit --name that exists is an error unless --exist-ok, which replaces
    it only if it is a cnnlab run (`is_cnnlab_run`), removing only the files cnnlab wrote; the
    default name is numbered (-2, -3, ...) instead, so earlier runs are never overwritten."""
    runs_dir = Path(runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    if name is None:
        folder = _new_numbered_folder(runs_dir, default_name)
    else:
        folder = _named_folder(runs_dir, name)
        try:
            folder.mkdir()
        except FileExistsError:
            if not exist_ok:
                raise CnnlabError(
                    f"run folder {folder} already exists: choose another --name, continue it with "
                    f"--resume {folder}, or replace it with --exist-ok"
                ) from None
            _clear_run(folder)
    if (folder / WEIGHTS).is_symlink():
        raise CnnlabError(f"{folder / WEIGHTS} is a link to another folder; the run's weights go into a folder "
                          "of its own: remove the link or choose another --name")
    (folder / WEIGHTS).mkdir(exist_ok=True)
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_text_atomic(folder / RUN_MARKER, json.dumps({"format": _MARKER_FORMAT, "created": created}) + "\n")
    return folder


def _named_folder(runs_dir: Path, name: str) -> Path:
    """runs_dir/NAME for a --name that is one folder name and stays inside `runs_dir` once resolved."""
    inside = f"a run name is one folder name inside {runs_dir}/ (letters, digits, '.', '_', '-')"
    if not name.strip() or "/" in name or "\\" in name or os.sep in name or name.strip() in (".", ".."):
        raise ConfigError(f"--name {name!r}: {inside}; choose another --name")
    folder = runs_dir / _slug(name)
    if folder.resolve().parent != runs_dir.resolve():
        raise ConfigError(f"--name {name!r}: {folder} leads outside {runs_dir}/ (to {folder.resolve()}); "
                          f"{inside}")
    return folder


def _new_numbered_folder(runs_dir: Path, default_name: str) -> Path:
    """runs_dir/NAME, or NAME-2, NAME-3, ...: the first that this process creates itself."""
    folder, number = runs_dir / default_name, 2
    while True:
        try:
            folder.mkdir()
            return folder
        except FileExistsError:  # taken, perhaps a moment ago by another run starting
            folder = runs_dir / f"{default_name}-{number}"
            number += 1


def is_cnnlab_run(folder: Path) -> bool:
    """Whether `folder` is a run folder cnnlab made: it holds cnnlab's marker (`RUN_MARKER`), or, for
    runs made before the marker, the config.yaml cnnlab wrote (a mapping with the run's model and
    data whose `name` is the folder's own name); or it is empty but for an empty weights/ (a start
    that failed). A config.yaml of someone else's does not make a folder a run."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    if _holds_marker(folder) or _holds_nothing(folder):
        return True
    try:
        import yaml

        config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(config, dict) and config.get("name") == folder.name and {"model", "data"} <= set(config)


def _holds_marker(folder: Path) -> bool:
    marker = folder / RUN_MARKER
    try:
        return marker.is_file() and not marker.is_symlink() and \
            json.loads(marker.read_text(encoding="utf-8")).get("format") == _MARKER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _holds_nothing(folder: Path) -> bool:
    """An empty folder, or one holding only an empty weights/ (a run that failed as it started)."""
    contents = list(folder.iterdir())
    return not contents or (len(contents) == 1 and contents[0].name == WEIGHTS and contents[0].is_dir()
                            and not any(contents[0].iterdir()))


def _is_own(relative: str, patterns: tuple[str, ...]) -> bool:
    parts = relative.split("/")
    return any(len(parts) == len(pattern.split("/")) and
               all(fnmatch.fnmatchcase(part, piece) for part, piece in zip(parts, pattern.split("/")))
               for pattern in patterns)


def clear_stale_writes(run_dir: Path) -> None:
    """Remove the temporary files that writers killed mid-write left anywhere in a run folder (see
    `cnnlab.io`); run when a run is resumed."""
    for root, subfolders, _ in os.walk(run_dir):
        remove_stale_temporary_files(Path(root))
        subfolders[:] = [name for name in subfolders if (Path(root) / name).is_dir()]


def _clear_run(folder: Path) -> None:
    """Remove what cnnlab wrote into the run `folder` (its files, its temporary files, folders it
    made that are empty then); refuse a folder that is not a cnnlab run. Other files stay, named."""
    if not is_cnnlab_run(folder):
        raise CnnlabError(f"{folder} exists and is not a cnnlab run folder; refusing to replace it "
                          "(choose another --name)")
    clear_stale_writes(folder)
    kept: list[str] = []
    for root, subfolders, names in os.walk(folder, topdown=False):
        base = Path(root)
        for name in names:
            path, relative = base / name, (base / name).relative_to(folder).as_posix()
            if _is_own(relative, _OWN_FILES) and not path.is_symlink():
                path.unlink()
            else:
                kept.append(relative)
        for name in subfolders:
            path, relative = base / name, (base / name).relative_to(folder).as_posix()
            if path.is_symlink():
                kept.append(relative)  # a link is the user's: neither followed nor removed
            elif _is_own(relative, _OWN_FOLDERS):
                try:
                    path.rmdir()
                except OSError:  # the user's files are in it
                    pass
    if kept:
        listed = ", ".join(sorted(kept)[:10]) + (", ..." if len(kept) > 10 else "")
        log.warning(f"--exist-ok: replaced the run in {folder}, and kept {len(kept)} file(s) cnnlab did not "
                    f"write: {listed}")


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
