"""Named datasets that cnnlab generates from data it already has offline, for tasks beyond labels.

`fashion-mnist-boxes` (detection) is Fashion-MNIST items placed on canvases, written in YOLO's
layout with their boxes (`cnnlab.data.canvases`). It is generated on first use into the dataset
cache (`$XDG_CACHE_HOME/cnnlab/datasets/<name>/`, or `--data-dir`), from the Fashion-MNIST copy
cnnlab finds (Debian's, or a download), and generated again only when the generator or its settings
change (its fingerprint, kept in the copy). The same settings give the same bytes on every machine.

A generated dataset is opened by its task (`--task detection --data fashion-mnist-boxes`); it
also shows in `cnnlab datasets`, and the same name given with another task is refused with the
task it belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from cnnlab.errors import DataError
from cnnlab.registry import Registry


@dataclass(frozen=True)
class GeneratedDataset:
    name: str
    description: str
    task: str  # the task whose data it is
    splits: tuple[str, ...]
    fingerprint: Callable[[], str]  # what the current generator would write
    existing: Callable[[Path], str | None]  # the fingerprint of a copy on disk, None when there is none
    write: Callable[[Path, Path], Path]  # (folder to write, Fashion-MNIST's folder) -> the dataset's root


def _canvases() -> GeneratedDataset:
    from cnnlab.data import canvases

    return GeneratedDataset(
        "fashion-mnist-boxes",
        "Fashion-MNIST items on 96×96 canvases with their boxes, 0-4 per canvas, YOLO layout "
        "(2,000 train / 300 val / 500 test canvases); generated offline (detection)",
        task="detection",
        splits=("train", "val", "test"),
        fingerprint=canvases.canvases_fingerprint,
        existing=canvases.existing_fingerprint,
        write=lambda root, fashion: canvases.write_fashion_canvases(root, fashion_mnist_dir=fashion),
    )


def _mask_canvases() -> GeneratedDataset:
    from cnnlab.data import mask_canvases

    return GeneratedDataset(
        "fashion-mnist-masks",
        "Fashion-MNIST items on 64×64 canvases with a mask of their silhouettes (class per pixel, 0 = "
        "background), 0-3 per canvas, images/ + masks/ (2,000 train / 300 val / 500 test); generated "
        "offline (segmentation)",
        task="segmentation",
        splits=("train", "val", "test"),
        fingerprint=mask_canvases.masks_fingerprint,
        existing=mask_canvases.existing_fingerprint,
        write=lambda root, fashion: mask_canvases.write_mask_canvases(root, fashion_mnist_dir=fashion),
    )


def _instance_canvases() -> GeneratedDataset:
    from cnnlab.data import instance_canvases

    return GeneratedDataset(
        "fashion-mnist-instances",
        "Fashion-MNIST items on 64×64 canvases (fashion-mnist-masks' canvases), a mask per item (its silhouette), "
        "0-3 per canvas, COCO layout with RLE masks (2,000 train / 300 val / 500 test); generated offline "
        "(instance-segmentation)",
        task="instance-segmentation",
        splits=("train", "val", "test"),
        fingerprint=instance_canvases.instances_fingerprint,
        existing=instance_canvases.existing_fingerprint,
        write=lambda root, fashion: instance_canvases.write_instance_canvases(root, fashion_mnist_dir=fashion),
    )


def _register() -> None:
    for make in (_canvases, _mask_canvases, _instance_canvases):
        spec = make()
        GENERATED.add(spec.name, spec, description=spec.description)


GENERATED: Registry[GeneratedDataset] = Registry("generated dataset", loader=_register)
_NAMES = ("fashion-mnist-boxes", "fashion-mnist-masks", "fashion-mnist-instances")  # known without importing the generators (is_generated stays cheap)


def is_generated(name: str) -> bool:
    return name in _NAMES


def generated_dataset(name: str) -> GeneratedDataset:
    return GENERATED.get(name).builder


def refuse_for_task(name: str, task: str) -> None:
    """A generated dataset opened by another task than its own: a DataError saying which task it is for."""
    spec = generated_dataset(name)
    if spec.task != task:
        raise DataError(f"--data {name} is a {spec.task} dataset ({spec.description}); train on it with "
                        f"--task {spec.task}")


def materialise(name: str, data_dir: str | Path | None = None) -> Path:
    """The folder holding the generated dataset `name`, generating it first when there is no current copy."""
    from cnnlab.console import Console
    from cnnlab.data.named import dataset_cache_dir

    spec = generated_dataset(name)
    folder = Path(data_dir).expanduser() / name if data_dir else dataset_cache_dir(name)
    if spec.existing(folder) == spec.fingerprint():
        return folder
    Console().info(f"generating {name} into {folder} (once; {spec.description})")
    return spec.write(folder, _fashion_mnist_folder(data_dir))


def _fashion_mnist_folder(data_dir: str | Path | None) -> Path:
    """A folder with Fashion-MNIST's four IDX files: a local copy, or the download cache after fetching it."""
    from cnnlab.data import named

    folder = named.local_copy("fashion-mnist", data_dir)
    if folder is None:
        for split in ("train", "test"):
            named.open_named("fashion-mnist", split=split, data_dir=data_dir)  # downloads what is missing
        folder = named.local_copy("fashion-mnist", data_dir)
    if folder is None:
        raise DataError("generating the canvases needs Fashion-MNIST, which could not be found or downloaded; "
                        "apt-get install dataset-fashion-mnist, or put its four .gz files in "
                        f"{named.dataset_cache_dir('fashion-mnist')}")
    return folder
