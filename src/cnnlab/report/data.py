"""What `cnnlab report` shows, gathered from a run folder: config, data, curves, evaluation, mistakes.

The evaluation is read from the newest `RUN/eval-*/` folder (metrics.json + predictions.csv)
that matches `--data`/`--split` when given; without one, `evaluate()` is run on the run's own
test split (or `--data`). Images named in predictions.csv are found again on disk (folder and
CSV datasets name their files) or in the dataset (named datasets call them `fashion-mnist/test/00042`).
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnlab.console import Console
from cnnlab.data.source import Source
from cnnlab.errors import CnnlabError
from cnnlab.io import read_json
from cnnlab.trained import TrainedModel


@dataclass
class Evaluation:
    folder: Path
    metrics: dict[str, Any]
    rows: list[dict[str, str]]  # predictions.csv
    data: str | None  # the --data it was run on, when known (else the run's own data)

    @property
    def split(self) -> str:
        return str(self.metrics.get("split", "test"))


@dataclass
class RunRecord:
    run_dir: Path
    config: dict[str, Any]
    data_summary: dict[str, Any]
    history: list[dict[str, str]]  # metrics.csv
    curves: Path | None
    notes: list[str] = field(default_factory=list)
    sessions: list[dict[str, Any]] = field(default_factory=list)  # run.json: where and how each session trained


def read_run(run_dir: Path) -> RunRecord:
    def read(name: str, parse):
        path = run_dir / name
        return parse(path.read_text(encoding="utf-8")) if path.is_file() else None

    config = _read_config(run_dir / "config.yaml")
    data_json = run_dir / "data.json"
    data_summary = (read_json(data_json) if data_json.is_file() else None) or {}
    if not isinstance(data_summary, dict):
        raise CnnlabError(f"{data_json}: not what cnnlab writes there (a JSON object); restore it or delete it")
    history = read("metrics.csv", lambda text: list(csv.DictReader(text.splitlines()))) or []
    curves = run_dir / "training_curves.png"
    sessions = (read("run.json", _json_or_none) or {}).get("sessions") or []
    return RunRecord(run_dir, config, data_summary, history, curves if curves.is_file() else None,
                     sessions=[entry for entry in sessions if isinstance(entry, dict)])


def _read_config(path: Path) -> dict[str, Any]:
    """The run's config.yaml, checked as `cnnlab train -c` checks it: a broken one is named with what
    is wrong (not YAML, not a mapping, an unknown field, a value of the wrong type)."""
    from cnnlab.config import TrainConfig, load_config_file

    if not path.is_file():
        return {}
    values = load_config_file(path)
    TrainConfig.from_dict(values, origin=str(path))
    return values


def _json_or_none(text: str) -> Any:
    """run.json is a record, not an input: an unreadable one leaves the report without it."""
    try:
        return json.loads(text)
    except ValueError:
        return None


def _eval_folders(run_dir: Path) -> list[Path]:
    folders = [path.parent for path in run_dir.glob("eval-*/metrics.json")
               if (path.parent / "predictions.csv").is_file()]
    return sorted(folders, key=lambda folder: (folder / "metrics.json").stat().st_mtime, reverse=True)


def load_evaluation(folder: Path, data: str | None) -> Evaluation:
    metrics = read_json(folder / "metrics.json")
    with (folder / "predictions.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return Evaluation(folder, metrics, rows, data)


def find_or_run_evaluation(trained: TrainedModel, *, data: str | None, split: str | None, limit: int | None,
                           data_dir: str | None, console: Console, max_image_pixels: int | None = None) -> Evaluation:
    """The newest matching RUN/eval-*/ folder (not one of the training images unless `split` asks for
    them), or a fresh `evaluate()` when there is none."""
    from cnnlab.evaluate.evaluate import evaluate

    if data and not split:
        split = "test"  # what `evaluate --data` scores; not an earlier run's held-out images of the same data
    for folder in _eval_folders(trained.run_dir):
        metrics = read_json(folder / "metrics.json")
        if split and metrics.get("split") != split:
            continue
        if not split and metrics.get("split") == "train":
            continue  # a score on the training images says little about the model; only when asked for
        if data and not folder.name.startswith(f"eval-{_data_slug(data)}-"):
            continue
        console.info(f"using the evaluation in {folder}")
        return load_evaluation(folder, data)
    console.info("no evaluation in the run folder yet: evaluating now")
    result = evaluate(trained.checkpoint, data, split=split or "test", limit=limit, data_dir=data_dir,
                      device=str(trained.device), quiet=console.quiet,
                      **({"max_image_pixels": max_image_pixels} if max_image_pixels else {}))
    return load_evaluation(result.output_dir, data)


def _data_slug(data: str) -> str:
    """How `evaluate` names its folders: eval-<this>-<split>."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(data).rstrip("/")).stem).strip("-") or "data"


def source_images(source: Source, indices: Sequence[int], trained: TrainedModel,
                  max_pixels: int | None = None) -> list[np.ndarray]:
    """Images of a Source as uint8 (C, H, W) at the model's geometry (in-memory ones converted in one go)."""
    from cnnlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, load_image_array

    if not len(indices):
        return []
    if source.pixels is not None:
        from cnnlab.data.prepare import array_to_tensor

        geometry = trained.input.geometry
        return list(array_to_tensor(source.pixels[np.asarray(indices)], geometry).numpy())
    assert source.paths is not None
    return [load_image_array(source.paths[index], channels=trained.input.channels, size=trained.input.size,
                             fit=trained.input.fit, max_pixels=max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
            for index in indices]


def open_source(trained: TrainedModel, data: str | None, split: str, data_dir: str | None) -> Source | None:
    """The dataset `data` (default: the run's own) at `split`, or None when it cannot be opened."""
    from cnnlab.data.sources import open_data

    from cnnlab.evaluate.evaluate import own_data

    try:
        if not data and split == "val":
            return own_data(trained, split, data_dir)[2]  # the images the run held out
        data = data or trained.info.config.get("data")
        return open_data(data, split=split, task=trained.task.name, data_dir=data_dir) if data else None
    except CnnlabError:
        return None


def images_by_name(trained: TrainedModel, names: Sequence[str], source: Source | None,
                   max_pixels: int | None = None) -> dict[str, np.ndarray]:
    """uint8 (C, H, W) pixels for each name found, from its file or from `source`."""
    from cnnlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, load_image_array

    found: dict[str, np.ndarray] = {}
    if source is not None and source.pixels is not None:  # a dataset in memory: convert them in one go
        index = {name: position for position, name in enumerate(source.names)}
        wanted = [name for name in names if name in index]
        found.update(zip(wanted, source_images(source, [index[name] for name in wanted], trained)))
    paths = dict(zip(source.names, source.paths)) if source is not None and source.paths else {}
    for name in names:
        path = paths.get(name, Path(name))
        if name not in found and Path(path).is_file():
            try:
                found[name] = load_image_array(path, channels=trained.input.channels, size=trained.input.size,
                                               fit=trained.input.fit, max_pixels=max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
            except CnnlabError:
                continue  # unreadable now: left out, and the report says the image was not found
    return found


def samples_per_class(source: Source, per_class: int, seed: int = 0) -> list[tuple[str, list[int]]]:
    """(class name, indices of up to `per_class` seeded-random images) for each class."""
    rng = np.random.default_rng(seed)
    labels = source.stratify_labels
    if labels is None:
        count = min(len(source), per_class * 2)
        return [("", sorted(rng.choice(len(source), size=count, replace=False).tolist()))]
    chosen = []
    for number, name in enumerate(source.class_names):
        members = np.flatnonzero(labels == number)
        take = min(per_class, len(members))
        chosen.append((name, sorted(rng.choice(members, size=take, replace=False).tolist()) if take else []))
    return chosen
