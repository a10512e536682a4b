"""Imbalanced classes, measured: T-shirts against shirts from Fashion-MNIST, 20 to 1, as an X-ray set
has far more normal scans than positive ones. Trains `--recipe fast` with and without
`--class-weights balanced` and scores both on a balanced test set (1,000 images of each class), the
unweighted model also with `--threshold Shirt=0.1`.

    python examples/imbalanced.py [--seeds 0 1 2] [--ratio 20] [--out /tmp/imbalanced]

Writes the images as PNG folders under --out (train/<class>/, test/<class>/) and prints, per run,
each class's recall, the macro F1, the ROC AUC and the accuracy.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

MAJORITY, MINORITY = "T-shirt", "Shirt"  # Fashion-MNIST classes 0 and 6, the pair most often confused


def write_folders(out: Path, ratio: int) -> tuple[Path, Path]:
    from PIL import Image

    from cnnlab.data.named import open_named

    for split in ("train", "test"):
        if (out / split).exists():
            continue
        source = open_named("fashion-mnist", split=split)
        rng = np.random.default_rng(0)
        for label, name in ((0, MAJORITY), (6, MINORITY)):
            indices = np.flatnonzero(np.asarray(source.targets) == label)
            if split == "train" and name == MINORITY:
                indices = rng.choice(indices, size=len(indices) // ratio, replace=False)
            folder = out / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in indices:
                Image.fromarray(source.pixels[index]).save(folder / f"{index:05d}.png")
    return out / "train", out / "test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--ratio", type=int, default=20, help="majority images per minority image in training")
    parser.add_argument("--out", type=Path, default=Path("/tmp/imbalanced"))
    args = parser.parse_args()

    import cnnlab

    train, test = write_folders(args.out, args.ratio)
    for weights in ("none", "balanced"):
        for seed in args.seeds:
            result = cnnlab.train(data=str(train), recipe="fast", class_weights=weights, seed=seed,
                                  runs_dir=str(args.out / "runs"), name=f"{weights}-{seed}", exist_ok=True,
                                  quiet=True)
            # The unweighted model also with a lower bar for the rare class: 0.1, the one value tried.
            thresholds = [None] + ([f"{MINORITY}=0.1"] if weights == "none" else [])
            for threshold in thresholds:
                metrics = cnnlab.evaluate(result.run_dir, data=str(test), threshold=threshold, quiet=True).metrics
                recalls = ", ".join(f"{name} {scores['recall']:.1%}" for name, scores in metrics["per_class"].items())
                at = f" --threshold {threshold}" if threshold else ""
                print(f"--class-weights {weights:8} seed {seed}{at}: recall {recalls}; macro F1 "
                      f"{metrics['macro_avg']['f1']:.4f}; ROC AUC {metrics['roc_auc']['macro']:.4f}; "
                      f"accuracy {metrics['accuracy']:.2%}", flush=True)


if __name__ == "__main__":
    main()
