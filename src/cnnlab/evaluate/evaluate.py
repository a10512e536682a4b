"""`evaluate()`: score a trained model on a labelled dataset and write the evidence.

Writes into `RUN/eval-<data>-<split>/`:
  metrics.json           every metric (accuracy, top-5, per-class precision/recall/F1, macro and
                         weighted averages — or MAE/RMSE/R² for regression)
  confusion_matrix.png   + confusion_matrix.json (classification)
  roc_curves.png         ROC and precision-recall curves, each class against the rest, with the model's
                         own answers marked (classification; ROC AUC and average precision in metrics.json)
  predicted_vs_true.png  (regression)
  predictions.csv        one row per image: file, true label, predicted label, confidence
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.console import Console
from cnnlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, check_max_image_pixels
from cnnlab.data.loader import Batches
from cnnlab.data.prepare import load_images
from cnnlab.data.source import Source
from cnnlab.data.sources import check_recorded_data, open_data
from cnnlab.errors import CnnlabError, DataError
from cnnlab.io import read_json, write_text_atomic
from cnnlab.trained import TrainedModel, load


@dataclass
class EvaluationResult:
    metrics: dict[str, Any]
    output_dir: Path
    files: dict[str, Path] = field(default_factory=dict)

    summary: str = ""  # the task's one line about the metrics
    details: list[str] = field(default_factory=list)  # lines shown before it (a per-class table)


def _images(count: int) -> str:
    return f"{count:,} image" if count == 1 else f"{count:,} images"


def evaluate(run: str | Path, data: str | None = None, *, split: str = "test", batch_size: int = 256,
             device: str = "auto", limit: int | None = None, data_dir: str | None = None,
             output_dir: str | Path | None = None, workers: int | None = None, runs_dir: str | Path = "runs",
             tta: str | None = None, precision: str = "auto", threshold: str | None = None,
             quiet: bool = False, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, conf: float | None = None,
             iou: float | None = None) -> EvaluationResult:
    """Evaluate a run's best model on `data` (default: the data it was trained on) at `split`.

    `data` that is the run's own (the same folder, file or named dataset) is scored as without it:
    `split` test of data with no test split is the validation images the run held out. Other data
    without splits (a plain folder of class folders, a CSV) is scored whole, as its test split.
    Images the run trained on are counted (`overlaps_training` in the metrics) and flagged.

    `tta` overrides the model's own test-time augmentation ("none" or "flip"). `threshold`
    ("NAME=P") gives NAME to every image whose probability for it is at least P (see
    `TrainedModel.set_threshold`); its results go to a folder of their own. `conf` and `iou`: a
    detector's thresholds for its predictions table (mAP scores every box regardless).
    `max_image_pixels`: files of more pixels are skipped and named (--max-image-pixels)."""
    console = Console(quiet=quiet)
    check_max_image_pixels(max_image_pixels)
    trained = load(run, device=device, runs_dir=runs_dir, tta=tta, precision=precision, conf=conf, iou=iou)
    trained.set_threshold(threshold)
    if data and not is_own_data(trained, data):
        source = _other_data(data, split, trained, data_dir)
    else:
        data, split, source = own_data(trained, split, data_dir, console)
    source = _align_classes(source, trained)
    if limit:
        from cnnlab.data.pipeline import limit_source

        source = limit_source(source, limit, seed=0)
    geometry = replace(trained.input.geometry, max_pixels=max_image_pixels)
    imageset, report = load_images(source, geometry, workers=workers)
    if report.unreadable:
        console.warn(report.summary(f"{split}"))
    overlap = training_overlap(trained, imageset.source, data, split, data_dir)
    _flag_overlap(overlap, split, console)
    batches = Batches(imageset, batch_size=batch_size, device=trained.device, shuffle=False, workers=workers)
    at = "-" + re.sub(r"[^A-Za-z0-9._]+", "-", threshold).strip("-") if threshold else ""  # eval-x-test-PNEUMONIA-0.3
    default = f"eval-{trained.evaluation_prefix}{_slug(data)}-{split}{at}"  # eval-model.onnx-x-test for a file
    folder = Path(output_dir) if output_dir else trained.run_dir / default
    folder.mkdir(parents=True, exist_ok=True)
    meter, table = _score(trained, batches, imageset)
    metrics = meter.compute()
    metrics.update({"data": source.description, "split": split, "checkpoint": str(trained.checkpoint),
                    "tta": trained.tta, "overlaps_training": overlap,
                    "skipped_files": [{"path": e.path, "reason": e.reason} for e in report.unreadable]})
    files = _write_outputs(trained, table, meter, metrics, folder)
    result = EvaluationResult(metrics, folder, files, trained.task.summary_line(metrics),
                              trained.task.metric_lines(metrics))
    console.info(f"evaluation written to {folder}")
    return result


def is_own_data(trained: TrainedModel, data: str) -> bool:
    """Whether `data` is what the run trained on: the same named dataset, or the same folder or file."""
    from cnnlab.data.sources import named_dataset

    recorded = trained.info.config.get("data")
    if not recorded:
        return False
    named, named_recorded = named_dataset(data), named_dataset(recorded)
    if named is not None or named_recorded is not None:
        return named is not None and named_recorded is not None and named.name == named_recorded.name
    return Path(data).expanduser().resolve() == Path(recorded).expanduser().resolve()


def _other_data(data: str, split: str, trained: TrainedModel, data_dir: str | None) -> Source:
    """`split` of data the run did not train on; data without splits only as a whole ("test")."""
    splits = trained.task.data_splits(data) or None
    if splits is None and split != "test" and Path(data).expanduser().exists():
        raise DataError(f"--split {split}: {data} is not divided into splits (it has no train/, val/ or test/ "
                        "folders), so all of its images are scored: leave --split out (it means test)")
    if splits is not None and split not in splits:
        raise DataError(f"--split {split}: {data} has the splits {', '.join(splits)}; choose one of them")
    return open_data(data, split=split, task=trained.task.name, data_dir=data_dir)


def training_overlap(trained: TrainedModel, source: Source, data: str, split: str,
                     data_dir: str | None) -> dict[str, int] | None:
    """{"images": N, "of": M}: how many of the M images scored are ones the run trained on, by
    resolved path (files) or by name (datasets in memory), with the training images chosen again as
    training chose them; None when they cannot be chosen again here (the data has moved)."""
    from cnnlab.data.pipeline import images_trained_on

    scored = len(source)
    config = trained.info.config
    if source.paths is None and not (is_own_data(trained, data) and split == config.get("split", "train")):
        return {"images": 0, "of": scored}  # another dataset, or another split of it: none of its images
    try:
        trained_on, _ = images_trained_on(_training_config(trained, data_dir))
    except (CnnlabError, OSError):
        return None
    if source.paths is None or trained_on.paths is None:
        names = set(trained_on.names) if trained_on.paths is None and source.paths is None else set()
        return {"images": sum(name in names for name in source.names), "of": scored}
    seen = {os.path.realpath(path) for path in trained_on.paths}
    return {"images": sum(os.path.realpath(path) in seen for path in source.paths), "of": scored}


def _flag_overlap(overlap: dict[str, int] | None, split: str, console: Console) -> None:
    if not overlap or not overlap["images"]:
        return
    count, scored = overlap["images"], overlap["of"]
    if split == "train":  # asked for: say what the score means
        console.info(f"note: these are the {count:,} images the run trained on: a score far above the validation "
                     "one means it memorised them")
        return
    console.warn(f"{count:,} of the {scored:,} images scored are images the run trained on, so the score leans "
                 "optimistic (metrics.json: overlaps_training); pass --data with images the model has never seen "
                 "for an unbiased one")


def _score(trained: TrainedModel, batches: Batches, imageset) -> tuple[Any, str]:
    """Run the model over every batch in order (with its test-time augmentation), feeding the task's
    meter and writing predictions.csv's lines as they come: nothing holds the whole set's outputs."""
    task = trained.task
    meter = task.meter(full=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    names, origins = imageset.source.names, imageset.origins
    position = 0
    for images, targets in batches.epoch(0):
        outputs = trained.outputs(images)
        meter.update(outputs, targets)
        count = len(targets)
        header, lines = task.prediction_table(outputs.cpu(), targets.cpu(),
                                              origins[position:position + count] if origins else None)
        if position == 0:
            writer.writerow(["file", *header])
        for name, image_lines in zip(names[position:position + count], lines):
            for line in image_lines:
                writer.writerow([name, *line])
        position += count
    if position == 0:
        raise DataError("no image could be evaluated")
    return meter, buffer.getvalue()


def own_data(trained: TrainedModel, split: str, data_dir: str | None,
             console: Console | None = None) -> tuple[str, str, Source]:
    """(data, split, images) for scoring a run on the data it was trained on.

    `split` "val" means the validation images the run held out. A run whose data has no test split
    (a plain folder of class folders, a CSV) is scored on those too, with a warning: they chose the
    best epoch, so the score leans optimistic.
    """
    config = trained.info.config
    data = config.get("data")
    if not data:
        raise DataError("this checkpoint does not record its training data; pass --data")
    check_recorded_data(data, then="run this from the folder you trained in, or pass --data with the "
                                   "images to evaluate on")
    splits = trained.task.data_splits(data)
    if split != "val" and split in splits:
        return data, split, open_data(data, split=split, task=trained.task.name, data_dir=data_dir)
    if split == "train":
        return data, split, _trained_on(trained, data_dir)
    named = splits if not Path(data).expanduser().exists() else ()
    if named and split not in ("val", "test"):
        raise DataError(f"{data} has no '{split}' split: its splits are {', '.join(named)}, and --split val is "
                        "the validation images the run held out")
    if split not in ("val", "test"):
        raise DataError(f"the run was trained on {data}, which has no '{split}' split; pass --data with the "
                        "images to evaluate on, --split train for the images the run trained on, or --split val "
                        "for the validation images it held out")
    source, origin = _held_out(trained, data_dir)
    if split == "test" and console is not None:
        console.warn(f"{data} has no test split, so this scores the {len(source):,} validation images the run "
                     f"held out: {origin}. They chose the best epoch, so the score leans optimistic; pass "
                     "--data with images the model has never seen for an unbiased one")
    return data, "val", source


def _training_config(trained: TrainedModel, data_dir: str | None):
    from cnnlab.config import TrainConfig

    config = TrainConfig.from_dict(trained.info.config, origin=f"{trained.checkpoint} (its training config)")
    return replace(config, data_dir=data_dir) if data_dir else config


def _held_out(trained: TrainedModel, data_dir: str | None) -> tuple[Source, str]:
    """The run's validation images, chosen again as in training, checked against its data.json."""
    from cnnlab.data.pipeline import held_out_validation

    config = _training_config(trained, data_dir)
    source, origin = held_out_validation(config)
    source = _check_unchanged(source, trained, "val", config.data)
    return replace(source, description=f"{source.description}, validation images: {origin}"), origin


def _trained_on(trained: TrainedModel, data_dir: str | None) -> Source:
    """The images the run trained on, chosen again as in training, checked against its data.json."""
    from cnnlab.data.pipeline import images_trained_on

    config = _training_config(trained, data_dir)
    source, origin = images_trained_on(config)
    source = _check_unchanged(source, trained, "train", config.data)
    return replace(source, description=f"{source.description}, training images: {origin}")


def _check_unchanged(source: Source, trained: TrainedModel, part: str, data: str) -> Source:
    """`source` less the files training skipped as unreadable; refused if its image and class counts
    differ from the run's data.json (the folder changed since, so the seed no longer picks the same
    images)."""
    data_json = trained.run_dir / "data.json"
    recorded = _recorded(data_json, part)
    if recorded is None:
        return source
    skipped = {entry["path"] for entry in (_recorded(data_json, "skipped_files") or {}).get(part, [])}
    if skipped and source.paths is not None:
        source = source.subset([index for index, path in enumerate(source.paths) if str(path) not in skipped])
    if recorded.get("images") != len(source) or \
            (recorded.get("class_counts") or None) != (source.class_counts() or None):
        which = "validation" if part == "val" else "training"
        raise DataError(f"{data} has changed since the run was trained: its {which} images were "
                        f"{recorded.get('images')} ({recorded.get('class_counts')}), the same split of it now "
                        f"gives {len(source)} ({source.class_counts()}); pass --data with the images to evaluate on")
    return source


def _recorded(data_json: Path, key: str) -> Any:
    if not data_json.is_file():
        return None  # a checkpoint moved out of its run folder: nothing to check against
    recorded = read_json(data_json)
    if not isinstance(recorded, dict):
        raise DataError(f"{data_json}: not what cnnlab writes there (a JSON object); restore it or delete it")
    return recorded.get(key)


def _align_classes(source: Source, trained: TrainedModel) -> Source:
    """Map the data's class indices onto the model's, by class name."""
    model_classes = trained.class_names
    if model_classes is None or source.class_names is None or source.class_names == model_classes:
        return source
    lookup = {name: index for index, name in enumerate(model_classes)}
    unknown = [name for name in source.class_names if name not in lookup]
    if unknown:
        raise DataError(f"{source.description}: classes {', '.join(unknown)} are not among the model's classes "
                        f"({', '.join(model_classes)})")
    mapping = np.array([lookup[name] for name in source.class_names], dtype=np.int64)
    # Labels index the class list; a target container (boxes) maps its own.
    targets = source.targets.relabelled(mapping) if hasattr(source.targets, "relabelled") else mapping[source.targets]
    return replace(source, targets=targets, class_names=list(model_classes))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(text).rstrip("/")).stem).strip("-") or "data"


def _write_outputs(trained: TrainedModel, table: str, meter: Any, metrics: dict[str, Any],
                   folder: Path) -> dict[str, Path]:
    files = {"metrics": folder / "metrics.json", "predictions": folder / "predictions.csv"}
    write_text_atomic(files["metrics"], json.dumps(metrics, indent=2) + "\n")
    write_text_atomic(files["predictions"], table)
    if "confusion_matrix" in metrics:
        files["confusion_matrix_json"] = folder / "confusion_matrix.json"
        write_text_atomic(files["confusion_matrix_json"], json.dumps(metrics["confusion_matrix"], indent=2) + "\n")
    for path in trained.task.plots(metrics, meter, folder):
        files[path.stem] = path
    return files
