"""Seconds of training until a cnnlab model (guide-cnn unless --set says otherwise) reaches a test
accuracy on Fashion-MNIST, for one cnnlab configuration — and how that compares with the time the
guide's Keras code takes for 10 epochs.

    python benchmarks/time_to_accuracy.py                                 # cnnlab's defaults, 10 epochs
    python benchmarks/time_to_accuracy.py --epochs 4 --set lr=0.01        # any cnnlab.train option
    python benchmarks/time_to_accuracy.py --epochs 1 --limit 3000         # a quick check
    python benchmarks/time_to_accuracy.py --epochs 5 --set recipe=fast    # the fast recipe (fast-cnn)
    python benchmarks/time_to_accuracy.py --device cuda --set recipe=fast-gpu          # on a GPU

One run of `cnnlab.train` with the given epochs; the test accuracy after each epoch comes from
that same run. cnnlab keeps only the best and the last checkpoint, so a thread keeps a hard link to
every epoch's `weights/last.safetensors` as it appears, and each is evaluated on the test split
after training (evaluation is not timed). Why not `train(epochs=1)` then `--resume` with epochs
2, 3, …: the learning-rate schedule spans the run's epochs, so a run extended one epoch at a time
follows a different schedule from the run being measured.

Training seconds per epoch come from the run's metrics.csv (images ÷ `images_per_s`: the batches
only); "wall s" is the time since `cnnlab.train()` was called, with data preparation, validation,
checkpoints and plots. An accuracy reached after epoch k of an E-epoch run is what that run had
at that point — a separate k-epoch run, whose schedule ends sooner, usually does a little better.

The Keras reference (its 10-epoch test accuracy and training seconds) is read from
train_throughput's JSON, which measures it on the same machine (`make bench` runs both).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from _common import (RESULTS, common_arguments, device_argument, machine_info, markdown_table, use_threads,
                     write_results)
from train_throughput import parse_settings


class EpochSnapshots(threading.Thread):
    """Keeps each version of `weights/last.safetensors` while a run trains, with the time it appeared.

    The checkpointer writes a new file and renames it over the old one, so a hard link to the
    current file holds that epoch's weights for good — nothing is copied during training.
    """

    def __init__(self, weights_dir: Path, into: Path, started: float, interval: float = 0.05):
        super().__init__(daemon=True)
        self.last = weights_dir / "last.safetensors"
        self.into, self.started, self.interval = into, started, interval
        self.found: list[tuple[Path, float]] = []  # (snapshot, wall seconds since training started)
        self._inode: int | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.poll()

    def finish(self) -> list[tuple[Path, float]]:
        self._stop_event.set()
        self.join()
        self.poll()  # the last epoch, in case training ended between two polls
        return self.found

    def poll(self) -> None:
        try:
            if os.stat(self.last).st_ino == self._inode:
                return
            snapshot = self.into / f"snapshot-{len(self.found) + 1}.safetensors"
            os.link(self.last, snapshot)
        except FileNotFoundError:  # no epoch finished yet, or replaced between stat and link: next poll
            return
        self._inode = os.stat(snapshot).st_ino  # what was linked, even if it changed since the check above
        self.found.append((snapshot, time.perf_counter() - self.started))


def train_with_snapshots(args: argparse.Namespace,
                         runs_dir: Path) -> tuple[Any, list[tuple[Path, float]], float]:
    import cnnlab

    snapshots_dir = runs_dir / "snapshots"
    snapshots_dir.mkdir()
    started = time.perf_counter()
    watcher = EpochSnapshots(runs_dir / "tta" / "weights", snapshots_dir, started)
    watcher.start()
    try:
        fields = {"device": args.device, "seed": 0, **parse_settings(args.set)}
        # A recipe chooses its own model, epochs and batch size unless --set/--epochs/--batch-size say otherwise.
        given = {"epochs": args.epochs, "batch_size": args.batch_size}
        fields.update({key: value for key, value in given.items() if value is not None})
        if "recipe" not in fields:
            fields.setdefault("model", "guide-cnn")
            fields.setdefault("epochs", 10)
            fields.setdefault("batch_size", 128)
        result = cnnlab.train(data="fashion-mnist", limit=args.limit, runs_dir=str(runs_dir), name="tta",
                              quiet=True, **fields)
    finally:
        snapshots = watcher.finish()
    return result, snapshots, time.perf_counter() - started


def score_epochs(result: Any, snapshots: list[tuple[Path, float]], runs_dir: Path) -> list[dict[str, Any]]:
    """One row per epoch: training seconds so far, wall seconds, validation and test accuracy."""
    import cnnlab

    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    train_images = json.loads((result.run_dir / "data.json").read_text())["train"]["images"]
    test_accuracy, appeared = {}, {}
    for snapshot, wall in snapshots:
        epoch = cnnlab.load(snapshot, device="cpu").info.epoch
        report = cnnlab.evaluate(snapshot, split="test", device="cpu", quiet=True,
                                 output_dir=runs_dir / f"eval-{epoch}")
        test_accuracy[epoch], appeared[epoch] = report.metrics["accuracy"], wall
    epochs, training = [], 0.0
    for row in rows:
        epoch = int(row["epoch"])
        training += train_images / float(row["images_per_s"])
        epochs.append({"epoch": epoch, "train_seconds": training, "wall_seconds": appeared.get(epoch),
                       "val_accuracy": float(row["val_accuracy"]), "test_accuracy": test_accuracy.get(epoch)})
    return epochs


def first_reaching(epochs: list[dict[str, Any]], target: float) -> dict[str, Any] | None:
    scored = (row for row in epochs if row["test_accuracy"] is not None)
    return next((row for row in scored if row["test_accuracy"] >= target), None)


def keras_reference(path: Path | None, epochs: int) -> dict[str, Any] | None:
    """The guide-Keras run of `epochs` epochs recorded by train_throughput.py, if there is one."""
    if path is None or not path.is_file():
        return None
    contenders = json.loads(path.read_text()).get("contenders", {})
    for result in contenders.values():
        if result.get("name") == "guide Keras code" and result.get("epochs") == epochs \
                and "test_accuracy" in result:
            return {"epochs": epochs, "test_accuracy": result["test_accuracy"],
                    "train_seconds": result["train_seconds"], "source": str(path)}
    return None


def targets_reached(epochs: list[dict[str, Any]], targets: list[float],
                    keras: dict[str, Any] | None) -> list[dict[str, Any]]:
    goals = [{"target": target, "label": f"{target:.0%} test accuracy"} for target in targets]
    if keras:
        label = f"guide Keras' {keras['epochs']}-epoch accuracy ({keras['test_accuracy']:.2%})"
        goals.append({"target": keras["test_accuracy"], "label": label,
                      "keras_seconds": keras["train_seconds"]})
    for goal in goals:
        row = first_reaching(epochs, goal["target"])
        if row is None:
            goal["epoch"] = None
            continue
        goal.update({key: row[key] for key in ("epoch", "train_seconds", "wall_seconds")})
        if "keras_seconds" in goal:
            goal["keras_over_cnnlab_time"] = goal["keras_seconds"] / row["train_seconds"]
    return goals


def report(results: dict[str, Any]) -> str:
    settings = ", ".join(f"{k}={v}" for k, v in results["cnnlab_settings"].items()) or "cnnlab's defaults"
    header = ["epoch", "training s (cumulative)", "wall s", "validation accuracy", "test accuracy"]
    rows = [[row["epoch"], f"{row['train_seconds']:.1f}", _seconds(row["wall_seconds"]),
             f"{row['val_accuracy']:.2%}", _percent(row["test_accuracy"])] for row in results["epochs"]]
    lines = [f"cnnlab.train(data='fashion-mnist', model='{results['model']}', "
             f"epochs={results['epochs_requested']}, device='{results.get('device', 'cpu')}', "
             f"batch_size={results['batch_size']}) with {settings}; {results['threads']} thread(s); "
             f"{results['train_images']:,} training images.", "", markdown_table(header, rows), ""]
    for goal in results["targets"]:
        if goal["epoch"] is None:
            lines.append(f"- {goal['label']}: not reached in {results['epochs_requested']} epoch(s)")
            continue
        line = (f"- {goal['label']}: after epoch {goal['epoch']}, **{goal['train_seconds']:.1f} s** of "
                f"training ({_seconds(goal['wall_seconds'])} s wall)")
        if "keras_over_cnnlab_time" in goal:
            line += (f"; Keras' {results['keras_reference']['epochs']} epochs took "
                     f"{goal['keras_seconds']:.1f} s of training: **{goal['keras_over_cnnlab_time']:.2f}×** "
                     f"cnnlab's time to that accuracy")
        lines.append(line)
    if results.get("device", "cpu") != "cpu":
        lines.append(f"- guide Keras reference: not compared (it was timed on the CPU; this run trained on "
                     f"{results['device']})")
    elif results["keras_reference"] is None:
        lines.append("- guide Keras reference: none found "
                     "(run train_throughput.py with TensorFlow installed first)")
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def _percent(value: float | None) -> str:
    return "– (epoch not captured)" if value is None else f"{value:.2%}"


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=None, help="[default: the recipe's, else 10]")
    parser.add_argument("--batch-size", type=int, default=None, help="[default: the recipe's, else 128]")
    parser.add_argument("--limit", type=int, default=None,
                        help="train on a seeded subset of N images (quick checks)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a cnnlab.train option, e.g. --set lr=0.01 --set schedule=cosine (repeatable)")
    parser.add_argument("--targets", default="0.91,0.93,0.94",
                        help="test accuracies to time [default: %(default)s]")
    parser.add_argument("--keras-reference", type=Path, default=RESULTS / "train_throughput.json",
                        help="train_throughput's JSON holding the guide-Keras run [default: %(default)s]")
    parser.add_argument("--keras-epochs", type=int, default=10,
                        help="compare with the guide-Keras run of this many epochs [default: %(default)s]")
    device_argument(parser)
    common_arguments(parser, default_output="time_to_accuracy")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    use_threads(args.threads)
    machine = machine_info(args.device)
    # The guide's Keras code runs on the CPU here: its times are no yardstick for a GPU run.
    keras = keras_reference(args.keras_reference, args.keras_epochs) if args.device == "cpu" else None
    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-tta-") as folder:
        result, snapshots, wall = train_with_snapshots(args, Path(folder))
        print(f"trained {len(result.history)} epoch(s) in {wall:.1f} s; evaluating each on the test split",
              file=sys.stderr)
        epochs = score_epochs(result, snapshots, Path(folder))
        train_images = json.loads((result.run_dir / "data.json").read_text())["train"]["images"]
        config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    results = {"benchmark": "time_to_accuracy", "model": config["model"], "device": args.device,
               "epochs_requested": config["epochs"],
               "batch_size": config["batch_size"], "limit": args.limit, "threads": args.threads,
               "cnnlab_settings": parse_settings(args.set), "train_images": train_images,
               "train_wall_seconds": wall, "note": args.note, "machine": machine,
               "epochs": epochs, "keras_reference": keras,
               "targets": targets_reached(epochs, [float(t) for t in args.targets.split(",")], keras)}
    text = report(results)
    print("\n" + text)
    write_results(args.output, f"Time to accuracy: {results['model']} on Fashion-MNIST with cnnlab", results, text)


if __name__ == "__main__":
    main()
