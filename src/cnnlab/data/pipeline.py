"""The data side of a training run: sources → subset → validation split → images at one size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from cnnlab.config import TrainConfig, parse_image_size
from cnnlab.console import Console
from cnnlab.data.images import check_max_image_pixels
from cnnlab.data.prepare import Geometry, ImageSet, LoadReport, infer_geometry, load_images
from cnnlab.data.source import Source
from cnnlab.data.sources import open_data
from cnnlab.data.split import split_indices
from cnnlab.errors import DataError


@dataclass
class TrainingData:
    train: ImageSet
    val: ImageSet | None
    geometry: Geometry
    val_origin: str  # how the validation set was chosen, for data.json and the log
    reports: dict[str, LoadReport]

    def summary(self) -> dict[str, Any]:
        """What data.json records about the data a run was trained on."""
        def describe(imageset: ImageSet | None) -> dict[str, Any] | None:
            if imageset is None:
                return None
            described = {"source": imageset.source.description, "images": len(imageset),
                         "class_counts": imageset.source.class_counts(), "in_memory": imageset.in_memory}
            targets = imageset.source.targets
            if hasattr(targets, "summary"):  # a target container: how many boxes, what reading them fixed
                described["targets"] = targets.summary()
            return described

        return {
            "geometry": {"channels": self.geometry.channels, "height": self.geometry.height,
                         "width": self.geometry.width, "fit": self.geometry.fit},
            "train": describe(self.train),
            "val": describe(self.val),
            "val_origin": self.val_origin,
            "skipped_files": {split: [{"path": e.path, "reason": e.reason} for e in report.unreadable]
                              for split, report in self.reports.items() if report.unreadable},
        }


def _split(source: Source, fraction: float, seed: int):
    """(taken, rest) indices: `fraction` of the images, each class keeping its share where images
    have one class each."""
    labels = source.stratify_labels
    if labels is None:
        return split_indices(np.arange(len(source)), fraction, seed, stratify=False)
    return split_indices(labels, fraction, seed, stratify=True)


def limit_source(source: Source, limit: int, seed: int) -> Source:
    """A seeded subset of `limit` images (stratified by class when there are classes)."""
    if limit >= len(source):
        return source
    taken, _ = _split(source, limit / len(source), seed)
    return source.subset(taken, f"{source.description}, limited to {len(taken):,}")


def _validation_source(config: TrainConfig, source: Source) -> tuple[Source, Source | None, str]:
    """(train, val, how val was chosen): --val-data, a val/ folder beside train/, or a held-out fraction."""
    if config.val_data:
        val = open_data(config.val_data, split="val", task=config.task, data_dir=config.data_dir)
        return source, val, f"--val-data {config.val_data}"
    if not _holds_out(config):
        val = open_data(config.data, split="val", task=config.task, data_dir=config.data_dir)
        return source, val, f"the val split of {config.data}"
    taken, rest = _split(source, config.val_fraction, config.seed)
    if len(rest) == 0 or len(taken) == 0:
        return source, None, "none (too few images to hold any out)"
    origin = f"{config.val_fraction:.0%} of --data held out ({'stratified, ' if source.stratify_labels is not None else ''}" \
             f"seed {config.seed})"
    return source.subset(rest), source.subset(taken), origin


def _holds_out(config: TrainConfig) -> bool:
    """Whether the validation images are a fraction of --data (not --val-data, not a val/ folder)."""
    from cnnlab.tasks import task_class

    if config.val_data:
        return False
    return not (config.split == "train" and "val" in task_class(config.task).data_splits(config.data))


def _training_source(config: TrainConfig) -> Source:
    source = open_data(config.data, split=config.split, task=config.task, data_dir=config.data_dir)
    return limit_source(source, config.limit, config.seed) if config.limit else source


def held_out_validation(config: TrainConfig) -> tuple[Source, str]:
    """(the validation images a run with `config` trained beside, how they were chosen).

    They are chosen again exactly as training chose them: the same data, --limit, --val-fraction
    and seed give the same images, so a run can be scored on them after the fact.
    """
    _, val, origin = _validation_source(config, _training_source(config))
    if val is None:
        raise DataError(f"the run held out no validation images from {config.data} ({origin}); "
                        "pass --data with images to evaluate on")
    return val, origin


def images_trained_on(config: TrainConfig) -> tuple[Source, str]:
    """(the images a run with `config` trained on, how they were chosen): the counterpart of
    `held_out_validation`, chosen again the same way."""
    train, val, origin = _validation_source(config, _training_source(config))
    chosen = f"--data {config.data}" + (f" (--limit {config.limit})" if config.limit else "")
    if val is not None and _holds_out(config):
        chosen += f" less the validation images, {origin}"
    return train, chosen


def prepare_training_data(config: TrainConfig, console: Console,
                          before_loading: Callable[[Geometry, Source, Source | None], None] | None = None
                          ) -> TrainingData:
    """`before_loading(geometry, train, val)` runs once the size is known, before any image is
    converted to it (the trainer's memory check)."""
    source = _training_source(config)
    train_source, val_source, val_origin = _validation_source(config, source)
    empty_classes = _classes_without_images(train_source)
    geometry = infer_geometry(train_source, channels=config.channels,
                              image_size=parse_image_size(config.image_size), fit=config.fit,
                              max_pixels=check_max_image_pixels(config.max_image_pixels))
    console.info(f"data: {source.description} → images as {geometry.describe()}")
    if before_loading is not None:
        before_loading(geometry, train_source, val_source)
    if empty_classes:
        console.warn(f"no training images for class {', '.join(empty_classes)}: the model still gets an output "
                     "for it, which it never learns to use; remove the empty class folder if it is a mistake")
    _warn_if_mirroring_changes_the_class(config, console)
    reports: dict[str, LoadReport] = {}
    train_set, reports["train"] = _load(train_source, geometry, config, console, "training")
    _note_if_imbalanced(config, train_set.source, console)  # the images loaded, not files that failed
    val_set = None
    if val_source is not None:
        val_set, reports["val"] = _load(val_source, geometry, config, console, "validation")
    console.info(f"train: {len(train_set):,} images; validation: "
                 f"{len(val_set) if val_set is not None else 0:,} images, {val_origin}")
    return TrainingData(train_set, val_set, geometry, val_origin, reports)


def _warn_if_mirroring_changes_the_class(config: TrainConfig, console: Console) -> None:
    """Flips teach the network that an image and its mirror image are the same class, which is
    wrong for digits (and for text or signs with a direction); only named datasets say which they are."""
    from cnnlab.config import RECIPES
    from cnnlab.data.sources import named_dataset

    spec = named_dataset(config.data)
    if spec is None or spec.mirror_invariant:
        return
    mirroring = [name for name, mirrors in (("augment", config.augment in ("flip", "standard")),
                                            ("tta", config.tta == "flip")) if mirrors]
    if not mirroring:
        return
    recipe = RECIPES.get(config.recipe or "")
    from_recipe = recipe is not None and all(recipe.get(name) == getattr(config, name) for name in mirroring)
    flags = " and ".join(f"--{name} {getattr(config, name)}" for name in mirroring)
    # 'light' keeps standard's shifts and zoom, without its flips
    without = {"augment": "light" if config.augment == "standard" else "none", "tta": "none"}
    switch_off = " ".join(f"--{name} {without[name]}" for name in mirroring)
    console.warn(f"{flags}{f' (from --recipe {config.recipe})' if from_recipe else ''} "
                 f"{'mirrors' if len(mirroring) == 1 else 'mirror'} images, but in {spec.name} a mirror image is "
                 f"not the same class (a mirrored 2 or 7 is no digit); add {switch_off} to train without mirror images")


IMBALANCE_RATIO = 3  # largest class / smallest, from which accuracy alone misleads


def imbalanced_classes(counts: dict[str, int]) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """((largest class, images), (smallest class, images)) when the largest has `IMBALANCE_RATIO`
    times the images of the smallest or more (classes without images left out); else None."""
    present = {name: count for name, count in counts.items() if count}
    if len(present) < 2:
        return None
    largest, smallest = max(present, key=present.__getitem__), min(present, key=present.__getitem__)
    if present[largest] < IMBALANCE_RATIO * present[smallest]:
        return None
    return (largest, present[largest]), (smallest, present[smallest])


def _note_if_imbalanced(config: TrainConfig, train: Source, console: Console) -> None:
    """Say when one class has many times the images of another: a model that favours the large
    class then scores a high accuracy while missing most of the small one (the X-ray case)."""
    from cnnlab.tasks import task_class

    imbalance = imbalanced_classes(train.class_counts())
    if config.class_weights != "none" or imbalance is None:
        return
    (largest, most), (smallest, fewest) = imbalance
    counted = task_class(config.task).counted
    console.warn(f"the classes are imbalanced: {largest} has {most:,} training {counted}, {smallest} "
                 f"{fewest:,}. Scores over all {counted} then favour the large classes: look at each class's "
                 f"own score (cnnlab evaluate), or train with --class-weights balanced")


def _classes_without_images(train: Source) -> list[str]:
    """The classes with no training images; refused, before any image is decoded, unless at least
    two classes have some: a classifier learns to tell classes apart."""
    if train.stratify_labels is None:
        return []
    counts = train.class_counts()
    present = [name for name, count in counts.items() if count]
    if len(present) < 2:
        found = f"only {present[0]} has" if present else "no class has"
        raise DataError(f"--data {train.description}: {found} training images; a classifier learns to tell "
                        "classes apart, so it needs images of at least 2 (one sub-folder per class, e.g. "
                        "photos/cats/ and photos/dogs/)")
    return [name for name, count in counts.items() if not count]


def _load(source: Source, geometry: Geometry, config: TrainConfig, console: Console, label: str):
    from tqdm.auto import tqdm

    bar = None
    if source.paths is not None and not console.quiet:
        bar = tqdm(total=len(source), unit="img", desc=f"decoding {label} images", leave=False, disable=None)
    try:
        imageset, report = load_images(source, geometry, cache=config.cache, workers=config.workers,
                                       strict=config.strict, progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    if report.unreadable:
        console.warn(report.summary(label))
    return imageset, report
