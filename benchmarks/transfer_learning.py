"""Does transfer learning help with cnnlab's default flags? Scratch against transfer, few-shot, over seeds.

    python benchmarks/transfer_learning.py --protocol fashion --precision fp32 --seeds 0 1 2 3 4
    python benchmarks/transfer_learning.py --protocol digits --precision bf16 --seeds 0 1 2

Two protocols (docs/transfer-learning.md, section 6):

fashion  guide-cnn pretrained on Fashion-MNIST's classes 0–4 (their 30,000 training images, 2 epochs);
         then classes 5–9 from 50 training and 50 validation images per class, 3 epochs; scored on
         all 5,000 test images of classes 5–9 (tests/train/test_transfer_learning.py does the same).
digits   guide-cnn pretrained on scikit-learn's digits 0–4 at 28×28 (their training-split images,
         10 epochs); then digits 5–9 from 10 training and 10 validation images per class, with
         `cnnlab train`'s defaults otherwise (10 epochs); scored on every other image of digits 5–9
         (796). 50 training images are 2 batches an epoch: cnnlab's few-shot rules apply (a fresh fc1,
         3× the default rate instead of a range test).

Each variant is a set of extra flags; `scratch` and `transfer` add none (`transfer` only
`--init-from` the pretrained run), so they measure the defaults. Results are printed as a Markdown
table and kept as JSON (--output, with the machine's load; variants already in that file for the same
protocol, precision and seeds are kept, so scratch and transfer can be measured by separate runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS: dict[str, list[str]] = {
    "scratch": [],
    "scratch-lr-auto": ["--lr", "auto"],
    "transfer": ["--init-from", "PRE"],  # the defaults: --fine-tune 1 --lr auto (few-shot: --freeze --label-smoothing 0.2)
    "transfer-lr-auto-fine-tune-1": ["--init-from", "PRE", "--lr", "auto", "--fine-tune", "1"],
    "transfer-backbone-0.3": ["--init-from", "PRE", "--backbone-lr-factor", "0.3"],
    "transfer-backbone-1": ["--init-from", "PRE", "--backbone-lr-factor", "1"],
    # the defaults before they were chosen for pretrained weights: every layer at 0.003 throughout
    "transfer-all-0.003": ["--init-from", "PRE", "--fine-tune", "0", "--backbone-lr-factor", "1", "--lr", "0.003"],
    "transfer-ft0-0.003": ["--init-from", "PRE", "--fine-tune", "0", "--lr", "0.003"],
    "transfer-ft0-0.01": ["--init-from", "PRE", "--fine-tune", "0", "--lr", "0.01"],
    "transfer-ft0-0.03": ["--init-from", "PRE", "--fine-tune", "0", "--lr", "0.03"],
    "transfer-ft1-0.003": ["--init-from", "PRE", "--fine-tune", "1", "--lr", "0.003"],
    "transfer-ft1-0.01": ["--init-from", "PRE", "--fine-tune", "1", "--lr", "0.01"],
    "transfer-ft1-0.03": ["--init-from", "PRE", "--fine-tune", "1", "--lr", "0.03"],
    # the few-shot rule's alternatives (digits: explicit --freeze/--fine-tune/--label-smoothing turn it off)
    "transfer-few-shot-off": ["--init-from", "PRE", "--few-shot", "off"],  # the defaults before the rule
    "transfer-freeze": ["--init-from", "PRE", "--freeze"],
    "transfer-ft3": ["--init-from", "PRE", "--fine-tune", "3"],
    "transfer-ft5": ["--init-from", "PRE", "--fine-tune", "5"],
    "transfer-freeze-wd": ["--init-from", "PRE", "--freeze", "--weight-decay", "0.05"],
    "transfer-freeze-ls": ["--init-from", "PRE", "--freeze", "--label-smoothing", "0.1"],
    "transfer-freeze-ls0.2-wd": ["--init-from", "PRE", "--freeze", "--label-smoothing", "0.2", "--weight-decay", "0.05"],
    "transfer-freeze-ls0.3": ["--init-from", "PRE", "--freeze", "--label-smoothing", "0.3"],
    "transfer-ls": ["--init-from", "PRE", "--label-smoothing", "0.1"],
    "transfer-freeze-ls-e20": ["--init-from", "PRE", "--freeze", "--label-smoothing", "0.1", "--epochs", "20"],
}


def _save_pngs(folder: Path, pixels: np.ndarray, names: list[str]) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for image, name in zip(pixels, names):
        Image.fromarray(image).save(folder / f"{name}.png")


def _class_folders(root: Path, pixels: np.ndarray, targets: np.ndarray, class_names: list[str],
                   chosen: dict[int, np.ndarray]) -> None:
    for label, indices in chosen.items():
        _save_pngs(root / class_names[label], pixels[indices], [str(i) for i in indices])


def _write_idx(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    import struct

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, *images.shape) + images.tobytes())
    (folder / "train-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.tobytes())
    return folder / "train-images-idx3-ubyte"


def fashion_data(root: Path) -> tuple[Path, Path]:
    """(pretraining data, new-classes folder with train/ val/ test/), as the test writes them."""
    from cnnlab.data.named import open_named

    new = root / "new"
    if (new / "test").is_dir():
        return root / "pre" / "train-images-idx3-ubyte", new
    train = open_named("fashion-mnist", split="train", download=False)
    test = open_named("fashion-mnist", split="test", download=False)
    old = np.isin(train.targets, range(5))
    pretraining = _write_idx(root / "pre", train.pixels[old], train.targets[old].astype(np.uint8))
    for split, skip in (("train", 0), ("val", 50)):
        rng = np.random.default_rng(0)  # the same order for both: val never overlaps train
        chosen = {c: rng.permutation(np.flatnonzero(train.targets == c))[skip:skip + 50] for c in range(5, 10)}
        _class_folders(new / split, train.pixels, train.targets, train.class_names, chosen)
    rng = np.random.default_rng(0)
    chosen = {c: rng.permutation(np.flatnonzero(test.targets == c)) for c in range(5, 10)}
    _class_folders(new / "test", test.pixels, test.targets, test.class_names, chosen)
    return pretraining, new


def digits_data(root: Path) -> tuple[Path, Path]:
    """(digits 0–4 as class folders, digits 5–9 with train/ 10 per class, val/ 10 per class, test/ the rest)."""
    from cnnlab.data.named import open_named

    new = root / "new"
    if (new / "test").is_dir():
        return root / "pre", new
    train = open_named("digits", split="train")
    test = open_named("digits", split="test")
    names = [str(c) for c in range(10)]
    _class_folders(root / "pre", train.pixels, train.targets, names,
                   {c: np.flatnonzero(train.targets == c) for c in range(5)})
    pixels = np.concatenate([train.pixels, test.pixels])
    targets = np.concatenate([train.targets, test.targets])
    rng = np.random.default_rng(0)
    order = {c: rng.permutation(np.flatnonzero(targets == c)) for c in range(5, 10)}
    for split, part in (("train", slice(0, 10)), ("val", slice(10, 20)), ("test", slice(20, None))):
        _class_folders(new / split, pixels, targets, names, {c: order[c][part] for c in range(5, 10)})
    return root / "pre", new


PROTOCOLS = {
    "fashion": (fashion_data, ["--epochs", "2"], ["--epochs", "3"]),
    "digits": (digits_data, ["--image-size", "28", "--epochs", "10"], ["--image-size", "28"]),
}


def _train(arguments: list[str]) -> None:
    from cnnlab.cli import main

    try:
        main(arguments)
    except SystemExit as done:
        if done.code:
            raise RuntimeError(f"cnnlab {' '.join(arguments)} failed ({done.code})") from None


def _accuracy(run: Path, data: Path, precision: str) -> float:
    import cnnlab

    result = cnnlab.evaluate(run, data=str(data), split="test", precision=precision, quiet=True,
                             output_dir=run / "eval")
    return float(result.metrics["accuracy"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=PROTOCOLS, default="fashion")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=["scratch", "transfer"], choices=VARIANTS)
    parser.add_argument("--work", type=Path, default=Path("/tmp/cnnlab-transfer"),
                        help="folder for the data and runs (reused: the pretrained run is trained once)")
    parser.add_argument("--output", type=Path, default=None, help="JSON file for the results")
    args = parser.parse_args()

    make_data, pretrain_flags, new_flags = PROTOCOLS[args.protocol]
    root = args.work / args.protocol
    pretraining, new = make_data(root / "data")
    runs = root / f"runs-{args.precision}"
    precision = ["--precision", args.precision]
    if not (runs / "pre" / "weights" / "best.safetensors").is_file():
        started = time.perf_counter()
        _train(["train", "--data", str(pretraining), *pretrain_flags, *precision, "--name", "pre",
                "--runs-dir", str(runs), "--exist-ok", "--quiet"])
        print(f"pretrained in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    results: dict[str, dict[int, float]] = {}
    for seed in args.seeds:
        for variant in args.variants:
            name = f"{variant}-{seed}"
            flags = [str(runs / "pre") if flag == "PRE" else flag for flag in VARIANTS[variant]]
            _train(["train", "--data", str(new), *new_flags, *flags, *precision, "--seed", str(seed),
                    "--name", name, "--runs-dir", str(runs), "--exist-ok", "--quiet"])
            accuracy = _accuracy(runs / name, new, args.precision)
            results.setdefault(variant, {})[seed] = accuracy
            print(f"{args.protocol} {args.precision} seed {seed} {variant}: {accuracy:.4f}", file=sys.stderr, flush=True)
    if args.output:
        results = _merged(args.output, args, results)
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"protocol": args.protocol, "precision": args.precision,
                                           "seeds": args.seeds, "load": _load(), "accuracy": results},
                                          indent=2) + "\n")
    print(table(results, args.seeds))


def _merged(path: Path, args: argparse.Namespace, results: dict[str, dict[int, float]]) -> dict:
    """The variants already in `path` (same protocol, precision and seeds) with this run's added:
    scratch and transfer can be measured by separate invocations into one file."""
    if not path.is_file():
        return results
    saved = json.loads(path.read_text())
    if (saved["protocol"], saved["precision"], saved["seeds"]) != (args.protocol, args.precision, args.seeds):
        return results
    merged = {variant: {int(seed): value for seed, value in by_seed.items()}
              for variant, by_seed in saved["accuracy"].items()}
    merged.update(results)
    return merged


def _load() -> str:
    """The machine's load when the measurement ended (the figures' timing context; accuracy does not
    depend on it)."""
    import os

    return f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"


def table(results: dict[str, dict[int, float]], seeds: list[int]) -> str:
    """Markdown: one row per variant, accuracy per seed, mean, and the mean gain over `scratch`."""
    lines = ["| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean | gain over scratch |",
             "|---" * (len(seeds) + 3) + "|"]
    base = results.get("scratch")
    for variant, by_seed in results.items():
        values = [by_seed[s] for s in seeds]
        gain = ""
        if base is not None and variant != "scratch":
            gains = [by_seed[s] - base[s] for s in seeds]
            gain = f"{100 * statistics.mean(gains):+.1f} ({', '.join(f'{100 * g:+.1f}' for g in gains)})"
        lines.append(f"| {variant} | " + " | ".join(f"{100 * v:.1f}%" for v in values)
                     + f" | {100 * statistics.mean(values):.1f}% | {gain} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
