"""torchvision's mobile Faster R-CNN against cnnlab-det, both from scratch, on the same canvases for the
same training time: the test mAP each reaches.

    python benchmarks/torchvision_detectors.py                                    # 300 s each
    python benchmarks/torchvision_detectors.py --budget-seconds 120 --limit 400   # a quick check
    python benchmarks/torchvision_detectors.py --weights imagenet                 # Faster R-CNN's backbone
                                                                                  # from torch hub's cache

Both train on `fashion-mnist-boxes` (96×96 canvases, generated offline) through `cnnlab.train`, each
with its own sensible settings (cnnlab-det: the detection defaults; Faster R-CNN: Adam at 0.0005,
batches of 16, as docs/detection.md suggests), for as many epochs as fit the budget: a run stops
after the first epoch whose end passes it (the training seconds of metrics.csv: batches only, no
validation). Its last checkpoint is then scored on the 500 test canvases by `cnnlab.evaluate`
(COCO mAP, identical to pycocotools), at its best epoch (lowest validation loss).

What this cannot measure here: fine-tuning from COCO weights. They are not on this machine and it
has no network; with them (`--weights coco`, the file in torch hub's cache) the comparison would be
the one a user with COCO weights cares about. From scratch on a CPU, a 19M-parameter two-stage
detector is expected to lose to a 0.39M one.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


class _Budget:
    """Stops the run after the first epoch whose training seconds (its images ÷ images/s: the batches,
    not validation) bring the total past the budget."""

    def __init__(self, seconds: float):
        self.seconds, self.spent, self.images = seconds, 0.0, 0

    def on_epoch_begin(self, state: Any, epoch: int, num_images: int) -> None:
        self.images = num_images

    def on_epoch_end(self, state: Any, row: dict[str, Any]) -> None:
        self.spent += self.images / max(row["images_per_s"], 1e-9)
        if self.spent >= self.seconds:
            state.stop_reason = f"benchmark budget of {self.seconds:g} s spent"


def run_one(model: str, fields: dict[str, Any], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import cnnlab

    budget = _Budget(args.budget_seconds)
    started = time.perf_counter()
    result = cnnlab.train(task="detection", data="fashion-mnist-boxes", model=model, epochs=args.max_epochs,
                          runs_dir=str(work), name=model, quiet=True, callbacks=[budget], seed=args.seed,
                          limit=args.limit, **fields)
    wall = time.perf_counter() - started
    with (result.run_dir / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    folder = result.run_dir / "eval-test"
    cnnlab.evaluate(str(result.run_dir), split="test", quiet=True, output_dir=str(folder))  # its best epoch
    scores = json.loads((folder / "metrics.json").read_text())
    return {"model": model, "epochs": len(rows), "best_epoch": result.best_epoch, "train_seconds": round(budget.spent, 1),
            "wall_seconds": round(wall, 1), "images_per_s": round(sum(float(row["images_per_s"]) for row in rows)
                                                                  / max(len(rows), 1), 1),
            "map": scores["map"], "map50": scores["map50"], "settings": fields}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget-seconds", type=float, default=300)
    parser.add_argument("--max-epochs", type=int, default=40, help="the schedules' length (runs stop at the budget)")
    parser.add_argument("--limit", type=int, default=None, help="training canvases (default: all 2,000)")
    parser.add_argument("--weights", default="none", help="Faster R-CNN's starting weights: none, imagenet, coco")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="a folder for the runs (default: a temporary one)")
    args = parser.parse_args(argv)
    contenders = [
        ("cnnlab-det", {}),
        ("fasterrcnn_mobilenet_v3_large_fpn", {"lr": 0.0005, "batch_size": 16, "weights": args.weights,
                                               "augment": "flip"}),
    ]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.output or scratch)
        results = [run_one(model, fields, args, work) for model, fields in contenders]
    print("| from scratch | epochs | training s | images/s | test mAP@[.5:.95] | mAP@.5 |")
    print("|---|---|---|---|---|---|")
    for row in results:
        print(f"| {row['model']} | {row['epochs']} | {row['train_seconds']} | {row['images_per_s']} | "
              f"{row['map']:.3f} | {row['map50']:.3f} |")
    print(json.dumps(results, indent=2), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
