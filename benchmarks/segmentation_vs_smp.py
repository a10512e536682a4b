"""cnnlab's U-Net against segmentation_models_pytorch's U-Net (resnet18 encoder, no pretrained
weights), both trained from scratch on the same canvases, on the same CPU, for the same epochs:
training images/s, test mIoU after every epoch, and peak RSS per epoch (flat = no leak).

    python benchmarks/segmentation_vs_smp.py                                 # 4 epochs, 2,000 canvases
    python benchmarks/segmentation_vs_smp.py --cnnlab-model unet-small --smp-encoder resnet34
    python benchmarks/segmentation_vs_smp.py --epochs 1 --train-images 200 --test-images 50 --output /tmp/svs

The data: cnnlab's generated `fashion-mnist-masks` (Fashion-MNIST items on 64×64 canvases, mask =
each item's silhouette labelled class + 1 over background 0, 11 classes; train canvases from train
items, test canvases from test items; generated into the dataset cache on first use), its first
`--train-images` train and `--test-images` test canvases. `--data DIR` reads another folder of the
same layout (images/{train,test}/NAME.png + masks/{train,test}/NAME.png, class-index masks).
Where cnnlab has no such dataset (before the segmentation task), or with `--data private`, the
canvases are made here in memory instead, alike in both workers: `--size`² canvases of 1-3 items at
seeded random places, silhouette = pixel > 0, a later item covering an earlier one.

One training loop for both, so that the networks are what is compared: AdamW (rate `--lr`, weight
decay 1e-4) with a one-cycle schedule over the run, batch `--batch-size`, pixel cross-entropy,
shuffled by one seed, no augmentation. Both get cnnlab's CPU settings (`cnnlab.performance`:
channels-last memory and, with `--precision auto` on a CPU with AVX512-BF16/AMX, bfloat16 autocast),
so neither pays for a layout or precision the other was spared. cnnlab's contender is any registry
model (`--cnnlab-model`, built by `cnnlab.models.build.create_model`); smp's is
`smp.Unet(--smp-encoder, encoder_weights=None)`. segmentation_models_pytorch is installed in the
bench venv only.

Training seconds are the batches only (forward, loss, backward, step); the test scoring after each
epoch is timed apart. The two run in separate processes and take turns one epoch at a time
(`_common.run_taking_turns`), so both meet the machine's load alike. Peak RSS per epoch is the
process's high-water mark (VmHWM), reset at every epoch's start through /proc/self/clear_refs.

mIoU: the mean over classes (background included) of TP / (TP + FP + FN), from one confusion
matrix over all test pixels; a class absent from both the masks and the predictions is left out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from _common import (Turns, common_arguments, fashion_mnist, machine_info, markdown_table, ratio,
                     run_taking_turns, use_threads, write_results, write_worker_output)

NUM_CLASSES = 11  # background + the 10 Fashion-MNIST classes
CONTENDERS = ("cnnlab", "smp")
MEAN, STD = 0.1, 0.25  # the canvases' rough pixel statistics (mostly background), for both


# --- data and metric (pure) --------------------------------------------------------------------

def make_canvases(items: np.ndarray, labels: np.ndarray, count: int, size: int, seed: int,
                  max_items: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """`count` uint8 canvases (count, size, size) and their uint8 class-index masks.

    >>> items = np.zeros((2, 28, 28), np.uint8); items[:, 10:20, 10:20] = 200
    >>> images, masks = make_canvases(items, np.array([3, 7]), 4, 40, seed=0)
    >>> images.shape, masks.dtype, sorted(set(np.unique(masks)) - {0}) <= [4, 8]
    ((4, 40, 40), dtype('uint8'), True)
    """
    rng = np.random.default_rng(seed)
    item_size = items.shape[-1]
    images = np.zeros((count, size, size), np.uint8)
    masks = np.zeros((count, size, size), np.uint8)
    for canvas in range(count):
        for _ in range(rng.integers(1, max_items + 1)):
            index = rng.integers(len(items))
            top, left = rng.integers(0, size - item_size + 1, size=2)
            item = items[index]
            silhouette = item > 0
            window = (canvas, slice(top, top + item_size), slice(left, left + item_size))
            images[window] = np.where(silhouette, item, images[window])
            masks[window] = np.where(silhouette, labels[index] + 1, masks[window])
    return images, masks


def confusion_matrix(predicted: np.ndarray, target: np.ndarray, classes: int) -> np.ndarray:
    """(classes, classes) counts, rows = true class, columns = predicted."""
    flat = target.astype(np.int64).ravel() * classes + predicted.astype(np.int64).ravel()
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def mean_iou(confusion: np.ndarray) -> float:
    """The mean over classes of TP / (TP + FP + FN); classes with no pixel either way are left out.

    >>> mean_iou(np.array([[3, 1], [0, 4]]))  # IoU 3/(3+1) and 4/(4+1)
    0.775
    """
    true_positives = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - true_positives
    present = union > 0
    return round(float((true_positives[present] / union[present]).mean()), 6)


# --- one contender (a worker process) ------------------------------------------------------------

def peak_rss_mib() -> float:
    """The process's resident-memory high-water mark since the last `reset_peak_rss`."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as handle:  # "5" resets VmHWM to the current RSS (Linux)
        handle.write("5")


def _build(contender: str, args: argparse.Namespace):
    if contender == "cnnlab":
        from cnnlab.models.build import create_model

        return create_model(args.cnnlab_model, in_channels=1, num_outputs=NUM_CLASSES,
                            image_size=(args.size, args.size))
    import segmentation_models_pytorch as smp

    return smp.Unet(args.smp_encoder, encoder_weights=None, in_channels=1, classes=NUM_CLASSES)


def read_mask_folder(root: Path, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `count` images (by name) of images/SPLIT/ as grey uint8, and their masks/SPLIT/ indices."""
    from PIL import Image

    names = sorted(path.name for path in (root / "images" / split).glob("*.png"))[:count]
    images = np.stack([np.asarray(Image.open(root / "images" / split / name).convert("L")) for name in names])
    masks = np.stack([np.asarray(Image.open(root / "masks" / split / name)) for name in names])
    return images, masks


def data_folder(data: str) -> Path | None:
    """Where the canvases are read from, or None for the private generator."""
    if data == "private":
        return None
    if data != "fashion-mnist-masks":
        return Path(data)
    try:
        from cnnlab.data.generated import is_generated, materialise
    except ImportError:
        return None
    return materialise(data) if is_generated(data) else None


def _tensors(args: argparse.Namespace, split: str, count: int, seed: int):
    import torch

    folder = data_folder(args.data)
    if folder is not None:
        images, masks = read_mask_folder(folder, split, count)
    else:
        items, labels = fashion_mnist(split)
        images, masks = make_canvases(items, labels, count, args.size, seed)
    images = (torch.from_numpy(images).float().div_(255).sub_(MEAN).div_(STD)).unsqueeze(1)
    return images, torch.from_numpy(masks).long()


def _evaluate(model, performance, images, masks, batch_size: int) -> float:
    import torch

    model.eval()
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    with torch.no_grad(), performance.autocast():
        for start in range(0, len(images), batch_size):
            logits = model(performance.prepare_inputs(images[start:start + batch_size]))
            predicted = logits.argmax(1).numpy()
            confusion += confusion_matrix(predicted, masks[start:start + batch_size].numpy(), NUM_CLASSES)
    model.train()
    return mean_iou(confusion)


def run_worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.nn import functional as F

    from cnnlab.performance import resolve_performance

    use_threads(args.threads)
    torch.manual_seed(args.seed)
    train_images, train_masks = _tensors(args, "train", args.train_images, args.seed)
    test_images, test_masks = _tensors(args, "test", args.test_images, args.seed + 1)
    performance = resolve_performance(torch.device("cpu"), precision=args.precision)
    model = performance.prepare_model(_build(args.worker, args))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = -(-len(train_images) // args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr,
                                                   total_steps=steps_per_epoch * args.epochs)
    order = torch.Generator().manual_seed(args.seed)
    turns, epochs = Turns(), []
    for epoch in range(1, args.epochs + 1):
        turns.wait(f"epoch {epoch}")
        reset_peak_rss()
        permutation = torch.randperm(len(train_images), generator=order)
        started, total_loss = time.perf_counter(), 0.0
        for start in range(0, len(train_images), args.batch_size):
            batch = permutation[start:start + args.batch_size]
            with performance.autocast():
                loss = F.cross_entropy(model(performance.prepare_inputs(train_images[batch])), train_masks[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss) * len(batch)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        test_miou = _evaluate(model, performance, test_images, test_masks, args.batch_size * 2)
        epochs.append({"epoch": epoch, "train_seconds": round(train_seconds, 3),
                       "images_per_s": round(len(train_images) / train_seconds, 2),
                       "train_loss": round(total_loss / len(train_images), 5), "test_miou": test_miou,
                       "test_seconds": round(time.perf_counter() - started, 3), "peak_rss_mib": peak_rss_mib()})
        print(f"[{args.worker}] {epochs[-1]}", file=sys.stderr, flush=True)
    return {"contender": args.worker, "model": args.cnnlab_model if args.worker == "cnnlab" else
            f"smp.Unet({args.smp_encoder})", "params": sum(p.numel() for p in model.parameters()),
            "precision": performance.describe(), "epochs": epochs,
            "images_per_s": round(len(train_images) * args.epochs / sum(e["train_seconds"] for e in epochs), 2),
            "test_miou": epochs[-1]["test_miou"]}


# --- the coordinator ----------------------------------------------------------------------------

def _worker_arguments(args: argparse.Namespace) -> list[str]:
    return ["--data", args.data, "--epochs", str(args.epochs), "--train-images", str(args.train_images),
            "--test-images", str(args.test_images), "--size", str(args.size), "--batch-size", str(args.batch_size),
            "--lr", str(args.lr), "--seed", str(args.seed), "--threads", str(args.threads),
            "--precision", args.precision, "--cnnlab-model", args.cnnlab_model, "--smp-encoder", args.smp_encoder]


def _markdown(results: dict[str, Any]) -> str:
    rows = []
    for name in CONTENDERS:
        result = results["contenders"][name]
        if "error" in result:
            rows.append([name, result["error"], "", "", "", ""])
            continue
        rss = ", ".join(f"{epoch['peak_rss_mib']:.0f}" for epoch in result["epochs"])
        mious = ", ".join(f"{epoch['test_miou']:.3f}" for epoch in result["epochs"])
        rows.append([result["model"], f"{result['params'] / 1e6:.2f}M", f"{result['images_per_s']:.1f}",
                     f"{result['test_miou']:.3f}", mious, rss])
    table = markdown_table(["model", "params", "train images/s", "test mIoU", "mIoU per epoch",
                            "peak RSS per epoch (MiB)"], rows)
    speedup = results.get("speedup")
    summary = (f"cnnlab's U-Net trains at {speedup:.2f}× smp's images/s, test mIoU "
               f"{results['contenders']['cnnlab']['test_miou']:.3f} against "
               f"{results['contenders']['smp']['test_miou']:.3f}." if speedup else "")
    return f"Command: `{results['command']}`\n\n{table}\n\n{summary}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common_arguments(parser, default_output="segmentation_vs_smp")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-images", type=int, default=2000)
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--data", default="fashion-mnist-masks",
                        help="fashion-mnist-masks, a folder of images/ + masks/, or private [default: %(default)s]")
    parser.add_argument("--size", type=int, default=64,
                        help="canvas side of the private canvases [default: %(default)s]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.003, help="peak learning rate [default: %(default)s]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--cnnlab-model", default="unet", help="a registry name or YAML file [default: unet]")
    parser.add_argument("--smp-encoder", default="resnet18")
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        write_worker_output(args.worker_output, run_worker(args))
        return
    script = Path(__file__).resolve()
    machine = machine_info()
    folder = data_folder(args.data)  # generated here once, before the workers read it
    contenders = run_taking_turns(script, {name: ["--worker", name, *_worker_arguments(args)]
                                           for name in CONTENDERS})
    command = "python benchmarks/segmentation_vs_smp.py " + " ".join(sys.argv[1:])
    results = {"machine": machine, "note": args.note, "data": str(folder) if folder else "private canvases", "command": command.strip(), "contenders": contenders,
               "speedup": ratio(contenders["cnnlab"].get("images_per_s"), contenders["smp"].get("images_per_s"))}
    write_results(args.output, "cnnlab U-Net vs segmentation_models_pytorch U-Net", results, _markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
