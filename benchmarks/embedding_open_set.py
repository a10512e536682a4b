"""Open-set verification on Fashion-MNIST, and the speed of `identify` over a large gallery.

    python benchmarks/embedding_open_set.py                      # make bench-embedding
    python benchmarks/embedding_open_set.py --train-per-class 500 --epochs 3 --seeds 0 --output /tmp/quick
    python benchmarks/embedding_open_set.py --skip-open-set       # identify's speed only

Protocol: the identities are Fashion-MNIST's classes. Training sees classes 0–6 only
(--train-per-class images of each from the training split); verification is scored on every test
image of the unseen classes 7–9 (Sneaker, Bag, Ankle boot), on the same seeded pairs for every
contender (3,000 genuine and 3,000 impostor pairs, `cnnlab.tasks.embedding.meter.pair_metrics`):

    embedding    `cnnlab train --task embedding` with its defaults (ArcFace + the two-view instance term,
                 128 values read from the convolution features) + --epochs
                 (+ --embedding-flags)
    classifier   `cnnlab train` (classification, guide-cnn) on the same images and epochs; its
                 penultimate layer (the 64 values before the classifier) as the embedding
    pixels       the raw pixels, 784 values

each compared by cosine similarity: TAR at FAR 1e-2 over every pair of the 3,000 images (4.5 million:
no sampling noise) and on the seeded pairs, TAR at FAR 1e-3, EER, 10-fold accuracy and rank-1, for
each of --seeds (the seed of the training images chosen, the initialisation and the shuffling; the
unseen images and their pairs stay the same), then their mean.

Speed: `identify` (`cnnlab.tasks.embedding.search.identify`: embed the probe file, then search) and
`search` alone, of one probe over --gallery random unit vectors (of the run's length, 10 per
identity), the median of --repeats timings on --threads threads (target: ≤ 50 ms for 100,000 vectors
on 2 cores). The run is the first seed's embedding run; with --skip-open-set, a tiny run trained for
the purpose (64 images, 1 epoch: its speed is that of any guide-cnn embedding run).
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
        "ten_fold_accuracy": metrics["ten_fold_accuracy"]["mean"],
        "all_pairs_tar_at_far_1e-2": _tar_at_far_over_all_pairs(vectors, labels)}


def _tar_at_far_over_all_pairs(vectors: np.ndarray, labels: np.ndarray, far: float = 1e-2) -> float:
    """TAR at FAR over every pair of the images (4.5 million for 3,000): free of the pair sampling's noise,
    which at FAR 1e-2 (the 30 most alike of 3,000 sampled impostors) is as large as the differences."""
    units = vectors.astype(np.float64) / np.linalg.norm(vectors, axis=1, keepdims=True)
    upper = np.triu_indices(len(labels), 1)
    similarities = (units @ units.T)[upper]
    same = (labels[:, None] == labels[None, :])[upper]
    return float((similarities[same] > np.quantile(similarities[~same], 1 - far)).mean())


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


def open_set(arguments: argparse.Namespace, work: Path, seed: int) -> dict[str, Any]:
    from cnnlab.tasks.embedding.search import embed_files

    seen, unseen = _data(work / f"data-{seed}", arguments.train_per_class, seed)
    pixels, labels, paths = _unseen_images(unseen)
    runs = work / "runs"
    common = ["--data", seen, "--epochs", arguments.epochs, "--seed", seed, "--precision",
              arguments.precision, "--runs-dir", runs, "--quiet"]
    seconds = {"embedding": _cnnlab("train", "--task", "embedding", *arguments.embedding_flags.split(), *common,
                                    "--name", f"embedding-{seed}"),
               "classifier": _cnnlab("train", "--model", "guide-cnn", *common, "--name", f"classifier-{seed}")}
    embedded = embed_files(runs / f"embedding-{seed}", paths, precision="fp32")
    assert embedded.names == [str(path) for path in paths]
    results = {"embedding": _scores(embedded.vectors, labels),
               "classifier penultimate": _scores(_penultimate(runs / f"classifier-{seed}", pixels), labels),
               "raw pixels": _scores(pixels.reshape(len(pixels), -1).astype(np.float32), labels)}
    results["embedding"]["train_seconds"] = seconds["embedding"]
    results["classifier penultimate"]["train_seconds"] = seconds["classifier"]
    return results


def _means(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, float]]:
    contenders = next(iter(per_seed.values()))
    return {name: {key: statistics.fmean(seed[name][key] for seed in per_seed.values())
                   for key in contenders[name] if key != "pairs"} for name in contenders}


def _random_index(gallery: int, dimensions: int) -> tuple[Any, np.ndarray]:
    from cnnlab.tasks.embedding.search import Index

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(gallery, dimensions)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    identities = max(1, gallery // 10)
    return Index(vectors, np.arange(gallery) % identities, [f"person{i}" for i in range(identities)]), vectors


def _timed(call: Any, repeats: int) -> list[float]:
    call()  # warm-up: first-call allocation and thread start
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def search_speed(run: Path, probe: Path, gallery: int, repeats: int, threads: int) -> dict[str, Any]:
    import os

    import torch

    from cnnlab.tasks.embedding.search import identify, load_embedding_run, search

    torch.set_num_threads(threads)
    trained = load_embedding_run(run, precision="auto")
    dimensions = trained.task.embedding_dim
    index, vectors = _random_index(gallery, dimensions)
    rng = np.random.default_rng(1)
    query = vectors[123] + 0.05 * rng.normal(size=dimensions).astype(np.float32)
    load_before = os.getloadavg()[0]
    searched = _timed(lambda: search(index, query[None], 5), repeats)
    _, found = search(index, query[None], 5)
    assert int(found[0, 0]) == 123 % len(index.identities)
    identified = _timed(lambda: identify(trained, index, probe, top_k=5), repeats)
    load_after = os.getloadavg()[0]

    def summary(timings: list[float]) -> dict[str, float]:
        return {"median_ms": statistics.median(timings), "p90_ms": sorted(timings)[int(0.9 * len(timings))]}

    return {"gallery_vectors": gallery, "identities": len(index.identities), "dimensions": dimensions,
            "threads": threads, "repeats": repeats, "search": summary(searched), "identify": summary(identified),
            "model": trained.info.architecture.name, "load_average_1m": [round(load_before, 2), round(load_after, 2)]}


def _timing_run(work: Path, precision: str) -> tuple[Path, Path]:
    """A tiny guide-cnn embedding run (64 images of 7 classes, 1 epoch) and a probe image: its speed is
    any guide-cnn embedding run's, whatever it learnt."""
    images, labels = _common.fashion_mnist("test", limit=64)
    from cnnlab.data.named import dataset_spec

    folder = _save_pngs(work / "tiny", images, labels, list(dataset_spec("fashion-mnist").class_names))
    _cnnlab("train", "--task", "embedding", "--data", folder, "--epochs", 1, "--precision", precision,
            "--runs-dir", work / "runs", "--name", "timing", "--quiet")
    return work / "runs" / "timing", next(iter(sorted(folder.rglob("*.png"))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train-per-class", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds [default: %(default)s]")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--embedding-flags", default="", help="extra flags for the embedding run, in one string")
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--skip-open-set", action="store_true", help="time identify and the search only")
    _common.common_arguments(parser, default_output="embedding_open_set")
    arguments = parser.parse_args()
    import tempfile

    seeds = [int(seed) for seed in arguments.seeds.split(",")]
    results: dict[str, Any] = {"machine": _common.machine_info(), "note": arguments.note,
                               "command": " ".join(sys.argv), "arguments": {k: str(v) for k, v in vars(arguments).items()}}
    body = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-embedding-") as work_folder:
        work = Path(work_folder)
        if not arguments.skip_open_set:
            per_seed = {seed: open_set(arguments, work, seed) for seed in seeds}
            results["open_set"] = {"per_seed": {str(seed): values for seed, values in per_seed.items()},
                                   "mean": _means(per_seed)}
            rows = []
            for name in results["open_set"]["mean"]:
                for label, metrics in [*((f"seed {seed}", per_seed[seed][name]) for seed in seeds),
                                       *([("mean", results["open_set"]["mean"][name])] if len(seeds) > 1 else [])]:
                    rows.append([f"{name}, {label}" if label != "mean" else f"**{name}, mean**",
                                 *(f"{metrics[key]:.2%}" for key in ("all_pairs_tar_at_far_1e-2", "tar_at_far_1e-2",
                                                                      "tar_at_far_1e-3", "eer", "ten_fold_accuracy",
                                                                      "rank_1"))])
            body.append(f"Trained on Fashion-MNIST classes 0–6 ({arguments.train_per_class} images each, "
                        f"{arguments.epochs} epochs, seeds {', '.join(map(str, seeds))}, precision "
                        f"{arguments.precision}); verified on all 3,000 test images of the unseen classes 7–9, "
                        f"{per_seed[seeds[0]]['embedding']['pairs']:,} seeded pairs (the same for every "
                        f"contender and seed).\n")
            body.append(_common.markdown_table(["", "TAR @ FAR 1e-2, every pair", "TAR @ FAR 1e-2", "TAR @ FAR 1e-3",
                                                "EER", "10-fold accuracy", "rank-1"], rows))
            run = work / "runs" / f"embedding-{seeds[0]}"
            probe = next(iter(sorted((work / f"data-{seeds[0]}" / "unseen").rglob("*.png"))))
        else:
            run, probe = _timing_run(work, arguments.precision)
        speed = search_speed(run, probe, arguments.gallery, arguments.repeats, arguments.threads)
    results["search"] = speed
    body.append(f"\n`identify` of one probe file (embed it with {speed['model']}, then search) over "
                f"{speed['gallery_vectors']:,} enrolled vectors of {speed['dimensions']} values "
                f"({speed['identities']:,} identities) on {speed['threads']} thread(s): median "
                f"{speed['identify']['median_ms']:.1f} ms, 90th percentile {speed['identify']['p90_ms']:.1f} ms; "
                f"the search alone (`search.search`, exact, torch): median {speed['search']['median_ms']:.1f} ms, "
                f"90th percentile {speed['search']['p90_ms']:.1f} ms ({speed['repeats']} repeats each; load "
                f"average {speed['load_average_1m'][0]} before, {speed['load_average_1m'][1]} after).")
    body.append(f"\nCommand: `python {' '.join(sys.argv)}`")
    print("\n".join(body))
    _common.write_results(arguments.output, "Embeddings: open-set verification and identify's speed", results,
                          "\n".join(body))


if __name__ == "__main__":
    main()
