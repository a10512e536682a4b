"""cnnlab's detector against Ultralytics YOLOv8n, both trained from scratch on the same canvases, on
the same CPU, for the same training time: the test mAP@[.5:.95] each reaches, and how soon.

    python benchmarks/detection_vs_yolo.py                          # 240 s of training each
    python benchmarks/detection_vs_yolo.py --budget-seconds 600 --target-map 0.3,0.4
    python benchmarks/detection_vs_yolo.py --cnnlab-set lr=0.005 --cnnlab-set augment=light
    python benchmarks/detection_vs_yolo.py --cnnlab-epochs 6 --yolo-epochs 10   # no calibration
    python benchmarks/detection_vs_yolo.py --budget-seconds 20 --limit 200 --output /tmp/dvy  # a quick check

The data is cnnlab's generated `fashion-mnist-boxes` (Fashion-MNIST items on 96×96 canvases, 10
classes, YOLO layout; generated on first use): both train on its train split (2,000 canvases),
cnnlab validates on its val split as it always does, YOLO does not validate between epochs, and
both are scored on the 500 test canvases after every epoch.

cnnlab: `cnnlab.train(task="detection", model="cnnlab-det", ...)` with cnnlab's defaults
(`--cnnlab-set KEY=VALUE` changes any `cnnlab train` option). YOLO: `YOLO("yolov8n.yaml")` (random
weights; nothing pretrained is ever loaded) trained with Ultralytics' defaults except imgsz 96, the
same batch size as cnnlab, images cached in memory as cnnlab holds them, and no validation between
epochs (`--yolo-set KEY=VALUE` changes any Ultralytics train argument). Ultralytics is AGPL: it is
installed in the bench venv only and imported only by this script's YOLO worker.

The budget. Each contender's learning-rate schedule spans its run, so a run cut short by a clock
is not what its user would train for that time. Each is therefore first timed for one short epoch
(a calibration run on `--calibration-images` training images, not counted), and its real run is
given the number of epochs that fill `--budget-seconds` at that speed (or `--cnnlab-epochs` /
`--yolo-epochs`). A run also stops after the first epoch whose end, plus one more epoch at the mean
pace, would pass the budget by more than `--budget-slack`. "mAP at the budget" is the mAP after
the last epoch that ended within budget × (1 + slack); the table gives the end of each run too.

Training seconds are the epochs' batches only (cnnlab: images ÷ `images_per_s` from metrics.csv;
YOLO: from its `on_train_epoch_start` to its `on_train_epoch_end` callback); validation, checkpoints
and the test scoring are left out for both. The two run in separate processes and take turns one
epoch at a time (as train_throughput.py's contenders do, `_common.run_taking_turns`), so both meet
every phase of the machine's speed drift and of other work on it.

One metric for both: each contender's test predictions after every epoch (cnnlab: `cnnlab.predict`
on the test images with conf 0.001; YOLO: `model.predict` with conf 0.001, as `yolo val` keeps)
are written as COCO detection results with the same image ids, and pycocotools' COCOeval scores
them against ground truth converted from the YOLO label files. Each keeps its own NMS (cnnlab IoU
0.6, Ultralytics 0.7) and at most 100 boxes per image (COCO's maxDets).

No network: Ultralytics is run with YOLO_OFFLINE=1, its settings (sync off) in a scratch
YOLO_CONFIG_DIR and plots off (they would fetch a font); an audit hook in each worker records any
socket connection or DNS look-up anyway, and the results list them (none is expected).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from _common import (Turns, common_arguments, machine_info, markdown_table, run_taking_turns, use_threads,
                     write_results)

DATASET = "fashion-mnist-boxes"
TEST_SPLIT = "test"
EVALUATION_CONF = 0.001  # the lowest score kept for the mAP, as `yolo val` and COCO evaluation keep
MAX_DETECTIONS = 100  # COCO's maxDets
CONTENDERS = ("cnnlab", "yolo")
LABELS = {"cnnlab": "cnnlab cnnlab-det", "yolo": "Ultralytics YOLOv8n"}


# --- COCO conversion and scoring (pure; tests/benchmarks/test_detection_vs_yolo.py) -------------

def image_ids(image_names: Iterable[str]) -> dict[str, int]:
    """File name -> COCO image id, 1, 2, ... in sorted name order: both contenders use these ids."""
    return {name: index for index, name in enumerate(sorted(image_names), start=1)}


def yolo_labels_to_annotations(text: str, image_id: int, width: int, height: int,
                               first_id: int) -> list[dict[str, Any]]:
    """A YOLO label file's lines (class cx cy w h, 0-1) -> COCO annotations in pixels, ids from
    `first_id`. COCO category ids are the YOLO class + 1 (COCO's ids start at 1)."""
    annotations = []
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise ValueError(f"image {image_id}: YOLO label line {line!r} has {len(fields)} fields, not 5")
        label, cx, cy, w, h = int(fields[0]), *(float(value) for value in fields[1:])
        box = [round(value, 3) for value in ((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)]
        annotations.append({"id": first_id + len(annotations), "image_id": image_id, "category_id": label + 1,
                            "bbox": box, "area": round(box[2] * box[3], 3), "iscrowd": 0})
    return annotations


def coco_ground_truth(root: Path, split: str, class_names: list[str], size: tuple[int, int]) -> dict[str, Any]:
    """The split's ground truth as a COCO dataset dict, from a YOLO layout (images/, labels/)."""
    width, height = size
    names = sorted(path.name for path in (root / "images" / split).iterdir() if path.is_file())
    ids = image_ids(names)
    images, annotations = [], []
    for name in names:
        images.append({"id": ids[name], "file_name": name, "width": width, "height": height})
        label_file = root / "labels" / split / (Path(name).stem + ".txt")
        text = label_file.read_text() if label_file.is_file() else ""
        annotations += yolo_labels_to_annotations(text, ids[name], width, height, len(annotations) + 1)
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}


def xyxy_to_coco(image_id: int, boxes: Iterable[Iterable[float]], scores: Iterable[float],
                 classes: Iterable[int]) -> list[dict[str, Any]]:
    """One image's detections (x1, y1, x2, y2 in the file's pixels, score, 0-based class) -> COCO results."""
    results = []
    for (x1, y1, x2, y2), score, label in zip(boxes, scores, classes):
        results.append({"image_id": image_id, "category_id": int(label) + 1,
                        "bbox": [round(float(x1), 3), round(float(y1), 3), round(float(x2 - x1), 3),
                                 round(float(y2 - y1), 3)], "score": round(float(score), 5)})
    return results


def coco_map(ground_truth: dict[str, Any], detections: list[dict[str, Any]]) -> dict[str, float]:
    """pycocotools' COCOeval (bbox) of `detections` against `ground_truth`: mAP@[.5:.95], @.5 and @.75."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not detections:
        return {"map": 0.0, "map50": 0.0, "map75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress and summary
        truth = COCO()
        truth.dataset = json.loads(json.dumps(ground_truth))
        truth.createIndex()
        found = truth.loadRes(json.loads(json.dumps(detections)))
        evaluation = COCOeval(truth, found, "bbox")
        evaluation.params.maxDets = [1, 10, MAX_DETECTIONS]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [max(float(value), 0.0) for value in evaluation.stats[:3]]  # -1: no ground truth at all
    return {"map": stats[0], "map50": stats[1], "map75": stats[2]}


def first_reaching(curve: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    """The first epoch of a curve whose test mAP@[.5:.95] is at least `target`."""
    return next((row for row in curve if row["map"] >= target), None)


def at_budget(curve: list[dict[str, Any]], budget: float, slack: float) -> dict[str, Any] | None:
    """The last epoch that ended within the budget (with its slack)."""
    within = [row for row in curve if row["train_seconds"] <= budget * (1 + slack)]
    return within[-1] if within else None


def fitted_epochs(budget: float, images_per_s: float, train_images: int) -> int:
    """The epochs of `train_images` that fill `budget` seconds at `images_per_s` (at least 1)."""
    return max(1, round(budget * images_per_s / train_images))


def should_stop(train_seconds: list[float], budget: float, slack: float) -> bool:
    """After these epochs' seconds: would one more epoch at the mean pace pass the budget's slack?"""
    elapsed = sum(train_seconds)
    return elapsed + elapsed / len(train_seconds) > budget * (1 + slack)


# --- network guard -------------------------------------------------------------------------------

class NetworkAudit:
    """Records every socket connection and DNS look-up this process attempts, and refuses them
    (an audit hook cannot be removed: it stays for the worker's life)."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        sys.addaudithook(self._hook)

    def _hook(self, event: str, arguments: tuple) -> None:
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request"):
            self.attempts.append(f"{event} {arguments[1] if event == 'socket.connect' else arguments[0]!r}")
            raise OSError(f"detection_vs_yolo.py: no network in a benchmark ({event})")


# --- the dataset ---------------------------------------------------------------------------------

def dataset_root(data_dir: str | None) -> Path:
    from cnnlab.data.generated import materialise

    return materialise(DATASET, data_dir)


def dataset_classes(root: Path) -> list[str]:
    import yaml

    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    return [names[index] for index in sorted(names)] if isinstance(names, dict) else list(names)


def test_files(root: Path) -> list[Path]:
    return sorted(path for path in (root / "images" / TEST_SPLIT).iterdir() if path.is_file())


def train_image_count(root: Path, limit: int | None) -> int:
    """The training canvases each contender trains on: the train split, or `--limit` of them."""
    count = sum(1 for path in (root / "images" / "train").iterdir() if path.is_file())
    return min(count, limit) if limit else count


# --- the cnnlab worker ---------------------------------------------------------------------------

def cnnlab_fields(args: argparse.Namespace) -> dict[str, Any]:
    from train_throughput import parse_settings

    fields = {"task": "detection", "model": "cnnlab-det", "batch_size": args.batch_size, "seed": args.seed,
              "device": "cpu", "data_dir": args.data_dir}
    fields.update(parse_settings(args.cnnlab_set))
    return fields


def cnnlab_calibration(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One epoch on `--calibration-images` training images: cnnlab's training images/s."""
    import csv

    import cnnlab

    fields = {**cnnlab_fields(args), "epochs": 1}
    result = cnnlab.train(data=DATASET, limit=args.calibration_images, runs_dir=str(work), name="calibration",
                          quiet=True, **fields)
    row = next(csv.DictReader((result.run_dir / "metrics.csv").open()))
    return {"images": args.calibration_images, "images_per_s": float(row["images_per_s"])}


def run_cnnlab(args: argparse.Namespace, work: Path, turns: Turns) -> dict[str, Any]:
    import csv

    import yaml

    import cnnlab

    turns.wait("cnnlab calibration")
    calibration = None
    epochs = args.cnnlab_epochs
    train_images = train_image_count(Path(args.dataset_root), args.limit)
    if epochs is None:
        calibration = cnnlab_calibration(args, work)
        epochs = fitted_epochs(args.budget_seconds, calibration["images_per_s"], train_images)
    snapshots = work / "snapshots"
    snapshots.mkdir()
    run_dir = work / "run"
    watcher = _CnnlabWatcher(turns, run_dir / "weights", snapshots, train_images, args.budget_seconds,
                             args.budget_slack)
    fields = {**cnnlab_fields(args), "epochs": epochs}
    started = time.perf_counter()
    result = cnnlab.train(data=DATASET, limit=args.limit, runs_dir=str(work), name="run", quiet=True,
                          callbacks=[watcher], **fields)
    wall = time.perf_counter() - started
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    turns.wait("cnnlab test predictions")
    curve, elapsed = [], 0.0
    for row, (epoch, snapshot) in zip(rows, watcher.found):
        elapsed += train_images / float(row["images_per_s"])
        predictions = work / f"predictions-{epoch}.json"
        predictions.write_text(json.dumps(cnnlab_test_predictions(snapshot, Path(args.dataset_root))))
        curve.append({"epoch": epoch, "train_seconds": elapsed, "val_map_cnnlab": float(row["val_map"]),
                      "predictions": str(predictions)})
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    return {"epochs_planned": epochs, "calibration": calibration, "train_images": train_images,
            "wall_seconds": wall, "stopped_by_budget": len(rows) < epochs, "curve": curve,
            "settings": {key: config.get(key) for key in
                         ("model", "epochs", "batch_size", "optimizer", "lr", "schedule", "warmup",
                          "weight_decay", "augment", "precision", "workers", "seed")}}


class _CnnlabWatcher:
    """cnnlab callback: its turn before each epoch's clock; a hard link to each epoch's weights (saved
    by the time user callbacks run); the run stopped when one more epoch would pass the budget."""

    def __init__(self, turns: Turns, weights: Path, snapshots: Path, train_images: int, budget: float,
                 slack: float):
        self.turns, self.weights, self.snapshots = turns, weights, snapshots
        self.train_images, self.budget, self.slack = train_images, budget, slack
        self.batch_seconds: list[float] = []
        self.found: list[tuple[int, Path]] = []

    def on_epoch_begin(self, state: Any, epoch: int, num_images: int) -> None:
        self.turns.wait(f"cnnlab epoch {epoch}")

    def on_epoch_end(self, state: Any, row: dict[str, Any]) -> None:
        epoch = int(row["epoch"])
        snapshot = self.snapshots / f"epoch-{epoch}.safetensors"
        os.link(self.weights / "last.safetensors", snapshot)
        self.found.append((epoch, snapshot))
        self.batch_seconds.append(self.train_images / float(row["images_per_s"]))
        if should_stop(self.batch_seconds, self.budget, self.slack):
            state.stop_reason = "training budget spent"


def cnnlab_test_predictions(snapshot: Path, root: Path) -> list[dict[str, Any]]:
    """A cnnlab checkpoint's detections on the test canvases, as COCO results."""
    import cnnlab

    trained = cnnlab.load(snapshot, device="cpu")
    trained.task.configure(conf=EVALUATION_CONF)
    trained.task.max_detections = MAX_DETECTIONS
    files = test_files(root)
    ids = image_ids(path.name for path in files)
    detections = []
    for row in cnnlab.predict(trained, [str(path) for path in files]):
        if "error" in row:
            raise RuntimeError(f"cnnlab could not predict {row['file']}: {row['error']}")
        objects = row["objects"]
        detections += xyxy_to_coco(ids[Path(row["file"]).name], [o["box"] for o in objects],
                                   [o["score"] for o in objects], [o["category_id"] for o in objects])
    return detections


# --- the YOLO worker -----------------------------------------------------------------------------

def offline_ultralytics(config_dir: Path) -> None:
    """Before importing ultralytics: no online checks, its settings file in a scratch folder."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    _stand_in_font(USER_CONFIG_DIR)

    # No analytics or crash reports, no logging integrations, and nothing written outside `config_dir`.
    SETTINGS.update({"sync": False, "clearml": False, "comet": False, "dvc": False, "mlflow": False,
                     "raytune": False, "tensorboard": False, "wandb": False,
                     "datasets_dir": str(config_dir / "datasets"), "weights_dir": str(config_dir / "weights"),
                     "runs_dir": str(config_dir / "runs")})


def _stand_in_font(user_config_dir: Path) -> None:
    """Ultralytics checks every dataset's font for its plots (Arial.ttf, in its config folder) and
    would fetch it from GitHub even offline; matplotlib's DejaVu Sans stands in (no plot is drawn)."""
    import matplotlib

    font = Path(user_config_dir) / "Arial.ttf"
    if not font.exists():
        font.parent.mkdir(parents=True, exist_ok=True)
        font.symlink_to(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


def yolo_data_yaml(root: Path, work: Path, class_names: list[str]) -> Path:
    """A data.yaml with an absolute path (Ultralytics resolves relative paths against its own folders)."""
    import yaml

    path = work / "data.yaml"
    path.write_text(yaml.safe_dump({"path": str(root), "train": "images/train", "val": "images/val",
                                    "test": "images/test", "names": dict(enumerate(class_names))}))
    return path


def yolo_train_arguments(args: argparse.Namespace, data: Path, work: Path, name: str) -> dict[str, Any]:
    from train_throughput import parse_settings

    arguments = {"data": str(data), "imgsz": 96, "batch": args.batch_size, "workers": args.threads,
                 "device": "cpu", "cache": "ram", "pretrained": False, "val": False, "plots": False,
                 "seed": args.seed, "project": str(work), "name": name, "exist_ok": True, "verbose": False,
                 "amp": False}
    if args.limit:
        arguments["fraction"] = train_image_count(Path(args.dataset_root), args.limit) / \
            train_image_count(Path(args.dataset_root), None)
    arguments.update(parse_settings(args.yolo_set))
    return arguments


class _YoloClock:
    """Ultralytics callbacks: its turn before each epoch's clock, the epoch's batch seconds, and a
    stop when one more epoch would pass the budget."""

    def __init__(self, turns: Any, budget: float | None, slack: float):
        self.turns, self.budget, self.slack = turns, budget, slack
        self.batch_seconds: list[float] = []
        self._started = 0.0

    def epoch_start(self, trainer: Any) -> None:
        self.turns.wait(f"yolo epoch {trainer.epoch + 1}")
        self._started = time.perf_counter()

    def epoch_end(self, trainer: Any) -> None:
        self.batch_seconds.append(time.perf_counter() - self._started)
        if self.budget is not None and should_stop(self.batch_seconds, self.budget, self.slack):
            trainer.stop = True

    def attach(self, model: Any) -> None:
        model.add_callback("on_train_epoch_start", self.epoch_start)
        model.add_callback("on_train_epoch_end", self.epoch_end)


def yolo_train(args: argparse.Namespace, data: Path, work: Path, name: str, epochs: int, turns: Any,
               budget: float | None, **extra: Any) -> tuple[_YoloClock, Path]:
    from ultralytics import YOLO

    model = YOLO("yolov8n.yaml")  # the architecture only: random weights
    clock = _YoloClock(turns, budget, args.budget_slack)
    clock.attach(model)
    arguments = {**yolo_train_arguments(args, data, work, name), "epochs": epochs, **extra}
    model.train(**arguments)
    return clock, work / name


def run_yolo(args: argparse.Namespace, work: Path, turns: Turns) -> dict[str, Any]:
    import torch

    offline_ultralytics(work / "ultralytics-config")
    root = Path(args.dataset_root)
    data = yolo_data_yaml(root, work, dataset_classes(root))
    train_images = train_image_count(root, args.limit)
    turns.wait("yolo calibration")
    calibration, epochs = None, args.yolo_epochs
    if epochs is None:
        images = args.calibration_images
        clock, _ = yolo_train(args, data, work, "calibration", 1, NoTurns(), None,
                              fraction=images / train_image_count(root, None), save=False)
        calibration = {"images": images, "images_per_s": images / clock.batch_seconds[0]}
        epochs = fitted_epochs(args.budget_seconds, calibration["images_per_s"], train_images)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    clock, run_dir = yolo_train(args, data, work, "run", epochs, turns, args.budget_seconds, save_period=1)
    wall = time.perf_counter() - started
    turns.wait("yolo test predictions")
    curve, elapsed = [], 0.0
    for epoch, seconds in enumerate(clock.batch_seconds, start=1):
        elapsed += seconds
        weights = run_dir / "weights" / f"epoch{epoch - 1}.pt"  # Ultralytics counts epochs from 0 there
        predictions = work / f"predictions-{epoch}.json"
        predictions.write_text(json.dumps(yolo_test_predictions(weights, root, args.batch_size)))
        curve.append({"epoch": epoch, "train_seconds": elapsed, "predictions": str(predictions)})
    arguments = yolo_train_arguments(args, data, work, "run")
    return {"epochs_planned": epochs, "calibration": calibration, "train_images": train_images,
            "wall_seconds": wall, "stopped_by_budget": len(clock.batch_seconds) < epochs, "curve": curve,
            "settings": {key: value for key, value in arguments.items()
                         if key not in ("data", "project", "name", "exist_ok", "verbose")}}


class NoTurns:
    """Turns that never wait: the calibration runs inside the turn taken for it."""

    def wait(self, label: str) -> None:
        return


def yolo_test_predictions(weights: Path, root: Path, batch: int) -> list[dict[str, Any]]:
    """A YOLO checkpoint's detections on the test canvases, as COCO results."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    files = test_files(root)
    ids = image_ids(path.name for path in files)
    detections = []
    for start in range(0, len(files), batch):
        chunk = [str(path) for path in files[start:start + batch]]
        for path, result in zip(chunk, model.predict(chunk, imgsz=96, conf=EVALUATION_CONF, max_det=MAX_DETECTIONS,
                                                     device="cpu", verbose=False)):
            boxes = result.boxes
            detections += xyxy_to_coco(ids[Path(path).name], boxes.xyxy.tolist(), boxes.conf.tolist(),
                                       [int(value) for value in boxes.cls.tolist()])
    return detections


# --- a worker process ----------------------------------------------------------------------------

def worker(args: argparse.Namespace) -> None:
    audit = NetworkAudit()
    use_threads(args.threads)
    turns = Turns()
    work = Path(args.work_dir) / args.contender
    work.mkdir(parents=True, exist_ok=True)
    run = run_cnnlab if args.contender == "cnnlab" else run_yolo
    result = run(args, work, turns)
    result["network_attempts"] = audit.attempts
    Path(args.worker_output).write_text(json.dumps(result, indent=2) + "\n")


# --- the coordinator -----------------------------------------------------------------------------

def score_curves(results: dict[str, dict[str, Any]], ground_truth: dict[str, Any]) -> None:
    """Adds the COCO mAPs of every epoch's test predictions to each contender's curve (one scorer for both)."""
    for result in results.values():
        for row in result.get("curve", []):
            row.update(coco_map(ground_truth, json.loads(Path(row.pop("predictions")).read_text())))


def summary(results: dict[str, dict[str, Any]], budget: float, slack: float,
            targets: list[float]) -> dict[str, Any]:
    curves = {name: result.get("curve", []) for name, result in results.items()}
    best = {name: max((row["map"] for row in curve), default=0.0) for name, curve in curves.items()}
    common = min(best.values())
    goals = []
    for target in [*targets, common]:
        reached = {name: first_reaching(curve, target) for name, curve in curves.items()}
        goals.append({"target": target, "both_reach": target == common,
                      **{name: (row["train_seconds"] if row else None) for name, row in reached.items()}})
    return {"at_budget": {name: at_budget(curve, budget, slack) for name, curve in curves.items()},
            "end_of_run": {name: (curve[-1] if curve else None) for name, curve in curves.items()},
            "best": best, "targets": goals}


def report(results: dict[str, Any]) -> str:
    budget, slack = results["budget_seconds"], results["budget_slack"]
    contenders, overview = results["contenders"], results["summary"]
    lines = [f"Same CPU ({results['threads']} threads), same canvases ({DATASET}: "
             f"{results['train_images']:,} training, {results['test_images']} test canvases of 96×96, 10 classes), "
             "from scratch, "
             f"a training budget of {budget:.0f} s each; test mAP by pycocotools for both.", ""]
    header = ["", "epochs planned (run)", "mAP@[.5:.95] at the budget", "mAP@.5 at the budget",
              "end of run: training s, mAP@[.5:.95]", "best mAP@[.5:.95]", "network attempts"]
    rows = []
    for name in CONTENDERS:
        result = contenders[name]
        if "error" in result:
            rows.append([LABELS[name], result["error"], "", "", "", "", ""])
            continue
        at, end = overview["at_budget"][name], overview["end_of_run"][name]
        rows.append([LABELS[name], f"{result['epochs_planned']} ({len(result['curve'])})",
                     _map(at, "map"), _map(at, "map50"),
                     f"{end['train_seconds']:.0f} s, {end['map']:.3f}" if end else "–",
                     f"{overview['best'][name]:.3f}", len(result.get("network_attempts", [])) or "none"])
    lines += [markdown_table(header, rows), "", "Training seconds to a test mAP@[.5:.95] (first epoch at or above it):", ""]
    target_rows = []
    for goal in overview["targets"]:
        label = f"{goal['target']:.3f}" + (" (the lower of the two best)" if goal["both_reach"] else "")
        cnnlab_s, yolo_s = goal.get("cnnlab"), goal.get("yolo")
        ratio = f"{yolo_s / cnnlab_s:.2f}×" if cnnlab_s and yolo_s else "–"
        target_rows.append([label, _seconds(cnnlab_s), _seconds(yolo_s), ratio])
    lines += [markdown_table(["mAP@[.5:.95]", "cnnlab s", "YOLOv8n s", "YOLO s ÷ cnnlab s"], target_rows), ""]
    lines.append("Per epoch (cumulative training seconds, test mAP@[.5:.95] / mAP@.5):")
    lines.append("")
    for name in CONTENDERS:
        curve = contenders[name].get("curve", [])
        points = "; ".join(f"{row['train_seconds']:.0f} s {row['map']:.3f}/{row['map50']:.3f}" for row in curve)
        calibration = contenders[name].get("calibration")
        pace = (f" (epochs from a calibration epoch of {calibration['images']} images at "
                f"{calibration['images_per_s']:.1f} img/s)") if calibration else ""
        lines.append(f"- {LABELS[name]}{pace}: {points or 'no epoch'}")
    lines += ["", f"\"At the budget\": the last epoch that ended within {budget:.0f} s × {1 + slack:.2f}."]
    return "\n".join(lines)


def _map(row: dict[str, Any] | None, key: str) -> str:
    return "– (no epoch within the budget)" if row is None else f"**{row[key]:.3f}** ({row['train_seconds']:.0f} s)"


def _seconds(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f}"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget-seconds", type=float, default=240.0,
                        help="training seconds for each contender [default: %(default)s]")
    parser.add_argument("--budget-slack", type=float, default=0.1,
                        help="an epoch ending this share past the budget still counts [default: %(default)s]")
    parser.add_argument("--target-map", default="0.2,0.3",
                        help="test mAP@[.5:.95] values to time, comma-separated (the lower of the two best "
                             "is always timed too) [default: %(default)s]")
    parser.add_argument("--batch-size", type=int, default=32, help="both contenders [default: %(default)s]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=None,
                        help="train on N canvases (quick checks: cnnlab a seeded subset, YOLO its `fraction`)")
    parser.add_argument("--calibration-images", type=int, default=320,
                        help="training images in each calibration epoch [default: %(default)s]")
    parser.add_argument("--cnnlab-epochs", type=int, default=None, help="[default: fitted to the budget]")
    parser.add_argument("--yolo-epochs", type=int, default=None, help="[default: fitted to the budget]")
    parser.add_argument("--cnnlab-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a `cnnlab train` option for cnnlab, e.g. --cnnlab-set lr=0.005 (repeatable)")
    parser.add_argument("--yolo-set", action="append", default=[], metavar="KEY=VALUE",
                        help="an Ultralytics train argument, e.g. --yolo-set lr0=0.02 (repeatable)")
    parser.add_argument("--only", choices=CONTENDERS, action="append", help="run only this contender")
    parser.add_argument("--data-dir", default=None, help="where cnnlab keeps its datasets (as --data-dir)")
    parser.add_argument("--contender", choices=CONTENDERS, help=argparse.SUPPRESS)  # internal: a worker
    parser.add_argument("--work-dir", help=argparse.SUPPRESS)
    parser.add_argument("--dataset-root", help=argparse.SUPPRESS)
    common_arguments(parser, default_output="detection_vs_yolo")
    return parser.parse_args()


def worker_arguments(args: argparse.Namespace, name: str, work: Path, root: Path) -> list[str]:
    passed = ["--contender", name, "--work-dir", str(work), "--dataset-root", str(root),
              "--budget-seconds", str(args.budget_seconds), "--budget-slack", str(args.budget_slack),
              "--batch-size", str(args.batch_size), "--seed", str(args.seed), "--threads", str(args.threads),
              "--calibration-images", str(args.calibration_images)]
    for flag, value in (("--limit", args.limit), ("--cnnlab-epochs", args.cnnlab_epochs),
                        ("--yolo-epochs", args.yolo_epochs), ("--data-dir", args.data_dir)):
        if value is not None:
            passed += [flag, str(value)]
    for flag, values in (("--cnnlab-set", args.cnnlab_set), ("--yolo-set", args.yolo_set)):
        for value in values:
            passed += [flag, value]
    return passed


def main() -> None:
    args = parse_arguments()
    if args.worker_output:
        worker(args)
        return
    use_threads(args.threads)
    machine = machine_info("cpu")
    machine["versions"]["ultralytics"] = _version("ultralytics")
    machine["versions"]["pycocotools"] = _version("pycocotools")
    root = dataset_root(args.data_dir)
    ground_truth = coco_ground_truth(root, TEST_SPLIT, dataset_classes(root), (96, 96))
    names = args.only or list(CONTENDERS)
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-dvy-") as folder:
        work = Path(folder)
        started = time.perf_counter()
        contenders = run_taking_turns(Path(__file__), {name: worker_arguments(args, name, work, root)
                                                       for name in names})
        print(f"both trained and predicted in {time.perf_counter() - started:.0f} s; scoring", file=sys.stderr)
        score_curves(contenders, ground_truth)
    for name in CONTENDERS:
        contenders.setdefault(name, {"error": "not run (--only)"})
    targets = [float(value) for value in args.target_map.split(",") if value.strip()]
    results = {"benchmark": "detection_vs_yolo", "dataset": DATASET, "budget_seconds": args.budget_seconds,
               "budget_slack": args.budget_slack, "batch_size": args.batch_size, "threads": args.threads,
               "limit": args.limit, "train_images": train_image_count(root, args.limit),
               "test_images": len(ground_truth["images"]), "command": " ".join(sys.argv),
               "note": args.note, "machine": machine, "contenders": contenders,
               "summary": summary({name: result for name, result in contenders.items() if "error" not in result},
                                  args.budget_seconds, args.budget_slack, targets)}
    text = report(results)
    print("\n" + text)
    write_results(args.output, "Detection: cnnlab against YOLOv8n, both from scratch, same training time",
                  results, text)


def _version(package: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
