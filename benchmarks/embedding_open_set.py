"""Open-set verification on Fashion-MNIST, and the speed of `identify` over a large gallery.

    python benchmarks/embedding_open_set.py                      # make bench-embedding
    python benchmarks/embedding_open_set.py --train-per-class 500 --epochs 3 --output /tmp/quick

Protocol: the identities are Fashion-MNIST's classes. Training sees classes 0–6 only
(--train-per-class images of each from the training split); verification is scored on every test
image of the unseen classes 7–9 (Sneaker, Bag, Ankle boot), on the same seeded pairs for every
contender (3,000 genuine and 3,000 impostor pairs, `cnnlab.tasks.embedding.meter.pair_metrics`):

    embedding    `cnnlab train --task embedding` with its defaults (ArcFace, 128 values) + --epochs
    classifier   `cnnlab train` (classification, guide-cnn) on the same images and epochs; its
                 penultimate layer (the 64 values before the classifier) as the embedding
    pixels       the raw pixels, 784 values

each compared by cosine similarity: TAR at FAR 1e-2 and 1e-3, EER, 10-fold accuracy and rank-1.

Search: `cnnlab.tasks.embedding.search.search` of one probe over --gallery random unit vectors
(128 values, 10 per identity), the median of --repeats timings on --threads threads (target: ≤ 50 ms
for 100,000 vectors on 2 cores).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import _common

UNSEEN = (7, 8, 9)
SEEN = tuple(range(7))


def _save_pngs(root: Path, images: np.ndarray, labels: np.ndarray, names: list[str]) -> Path:
    from PIL import Image

    for index, (pixels, label) in enumerate(zip(images, labels)):
        folder = root / names[label].replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / f"{index:05d}.png")
    return root


def _data(root: Path, per_class: int, seed: int) -> tuple[Path, Path]:
    from cnnlab.data.named import dataset_spec

    names = dataset_spec("fashion-mnist").class_names

    images, labels = _common.fashion_mnist("train")
    rng = np.random.default_rng(seed)
    chosen = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in SEEN])
    test_images, test_labels = _common.fashion_mnist("test")
    unseen = np.isin(test_labels, UNSEEN)
    return (_save_pngs(root / "seen", images[chosen], labels[chosen], list(names)),
            _save_pngs(root / "unseen", test_images[unseen], test_labels[unseen], list(names)))


def _cnnlab(*arguments: object) -> float:
    started = time.perf_counter()
    command = [sys.executable, "-m", "cnnlab", *map(str, arguments)]
    print("$ " + " ".join(command[2:]), file=sys.stderr)
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def _unseen_images(folder: Path) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    from PIL import Image

    from cnnlab.data.sources import open_labelled_images

    source = open_labelled_images(folder)
    pixels = np.stack([np.asarray(Image.open(path)) for path in source.paths])
    return pixels, np.asarray(source.targets), list(source.paths)


def _scores(vectors: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from cnnlab.tasks.embedding.meter import pair_metrics
    from cnnlab.tasks.embedding.task import unit_rows

    metrics = pair_metrics(unit_rows(vectors.astype(np.float32)), labels)
    metrics.pop("_roc", None)
    return {key: metrics[key] for key in ("tar_at_far_1e-2", "tar_at_far_1e-3", "eer", "rank_1", "pairs")} | {
        "ten_fold_accuracy": metrics["ten_fold_accuracy"]["mean"]}


def _penultimate(run: Path, pixels: np.ndarray) -> np.ndarray:
    """The classifier's input features (what its last dense layer sees) for uint8 images (N, 28, 28)."""
    import torch

    from cnnlab.models.parts import classifier
    from cnnlab.trained import load

    trained = load(run, precision="fp32")
    captured: list[torch.Tensor] = []
    layer = classifier(trained.model, trained.info.architecture.name)
    hook = layer.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].detach()))
    with torch.inference_mode():
        for start in range(0, len(pixels), 1000):
            trained.outputs(torch.from_numpy(pixels[start:start + 1000, None]))
    hook.remove()
    return torch.cat(captured).float().numpy()


def open_set(arguments: argparse.Namespace, work: Path) -> dict[str, Any]:
    from cnnlab.tasks.embedding.search import embed_files

    seen, unseen = _data(work / "data", arguments.train_per_class, arguments.seed)
    pixels, labels, paths = _unseen_images(unseen)
    runs = work / "runs"
    common = ["--data", seen, "--epochs", arguments.epochs, "--seed", arguments.seed, "--precision",
              arguments.precision, "--runs-dir", runs, "--quiet"]
    seconds = {"embedding": _cnnlab("train", "--task", "embedding", *arguments.embedding_flags.split(), *common,
                                    "--name", "embedding"),
               "classifier": _cnnlab("train", "--model", "guide-cnn", *common, "--name", "classifier")}
    embedded = embed_files(runs / "embedding", paths, precision="fp32")
    assert embedded.names == [str(path) for path in paths]
    results = {"embedding": _scores(embedded.vectors, labels),
               "classifier penultimate": _scores(_penultimate(runs / "classifier", pixels), labels),
               "raw pixels": _scores(pixels.reshape(len(pixels), -1).astype(np.float32), labels)}
    for name in ("embedding", "classifier"):
        results["embedding" if name == "embedding" else "classifier penultimate"]["train_seconds"] = seconds[name]
    return results


def search_speed(gallery: int, dimensions: int, repeats: int, threads: int) -> dict[str, Any]:
    import torch

    from cnnlab.tasks.embedding.search import Index, search

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(gallery, dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    identities = max(1, gallery // 10)
    index = Index(vectors, np.arange(gallery) % identities, [f"person{i}" for i in range(identities)])
    probe = vectors[123] + 0.05 * rng.normal(size=dimensions).astype(np.float32)
    search(index, probe[None], 5)  # warm-up: first-call allocation and thread start
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        scores, found = search(index, probe[None], 5)
        timings.append((time.perf_counter() - started) * 1000)
    assert int(found[0, 0]) == 123 % identities
    return {"gallery_vectors": gallery, "identities": identities, "dimensions": dimensions, "threads": threads,
            "median_ms": statistics.median(timings), "p90_ms": sorted(timings)[int(0.9 * len(timings))],
            "repeats": repeats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-per-class", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--embedding-flags", default="", help="extra flags for the embedding run, in one string")
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--skip-open-set", action="store_true", help="time the search only")
    _common.common_arguments(parser, default_output="embedding_open_set")
    arguments = parser.parse_args()
    import tempfile

    results: dict[str, Any] = {"machine": _common.machine_info(), "note": arguments.note,
                               "command": " ".join(sys.argv), "arguments": {k: str(v) for k, v in vars(arguments).items()}}
    body = []
    if not arguments.skip_open_set:
        with tempfile.TemporaryDirectory(prefix="cnnlab-embedding-") as work:
            results["open_set"] = open_set(arguments, Path(work))
        rows = [[name, f"{m['tar_at_far_1e-2']:.2%}", f"{m['tar_at_far_1e-3']:.2%}", f"{m['eer']:.2%}",
                 f"{m['ten_fold_accuracy']:.2%}", f"{m['rank_1']:.2%}"] for name, m in results["open_set"].items()]
        body.append(f"Trained on Fashion-MNIST classes 0–6 ({arguments.train_per_class} images each, "
                    f"{arguments.epochs} epochs, seed {arguments.seed}, precision {arguments.precision}); verified on "
                    f"all 3,000 test images of the unseen classes 7–9, "
                    f"{results['open_set']['embedding']['pairs']:,} seeded pairs.\n")
        body.append(_common.markdown_table(["", "TAR @ FAR 1e-2", "TAR @ FAR 1e-3", "EER", "10-fold accuracy",
                                            "rank-1"], rows))
    speed = search_speed(arguments.gallery, 128, arguments.repeats, arguments.threads)
    results["search"] = speed
    body.append(f"\n`identify`'s search (`search.search`, exact, torch) of one probe over {speed['gallery_vectors']:,} "
                f"vectors of {speed['dimensions']} values ({speed['identities']:,} identities) on {speed['threads']} "
                f"thread(s): median {speed['median_ms']:.1f} ms, 90th percentile {speed['p90_ms']:.1f} ms "
                f"({speed['repeats']} repeats).")
    body.append(f"\nCommand: `python {' '.join(sys.argv)}`")
    print("\n".join(body))
    _common.write_results(arguments.output, "Embeddings: open-set verification and search speed", results,
                          "\n".join(body))


if __name__ == "__main__":
    main()
