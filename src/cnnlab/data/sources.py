"""From a `--data` argument to a `Source`.

`--data` may be:
  * a named dataset: fashion-mnist, mnist, cifar10, digits (standard splits, offline first);
  * a folder with one sub-folder per class (`cats/…`, `dogs/…`), optionally inside split folders
    (`train/cats/…`, `test/cats/…`, `val/cats/…`) chosen with `--split`;
  * a CSV file with a header row: `path,label` for classification, `path,target[,target…]` for
    regression; relative paths are relative to the CSV's folder;
  * an IDX images file (MNIST format; its labels file beside it) or a folder of IDX files.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnlab.data.images import image_files_below
from cnnlab.data.source import Source
from cnnlab.errors import DataError

if TYPE_CHECKING:
    from cnnlab.data.named import DatasetSpec

SPLIT_FOLDER_NAMES = {
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing"),
}
_IDX_IMAGES = re.compile(r"images[-.]idx\d-ubyte(\.gz)?$")


def named_dataset(spec: str | Path) -> "DatasetSpec | None":
    """The named dataset `--data` means, or None for a folder or file (one of that name wins)."""
    from cnnlab.data import named

    from cnnlab.data.generated import is_generated

    text = str(spec)
    if Path(text).expanduser().exists() or not named.is_named(text) or is_generated(text):
        return None
    return named.dataset_spec(text)


def named_splits(spec: str | Path) -> tuple[str, ...]:
    """The splits of the named (or generated) dataset `spec`; () for a folder or file."""
    from cnnlab.data.generated import generated_dataset, is_generated

    text = str(spec)
    if Path(text).expanduser().exists():
        return ()
    if is_generated(text):
        return generated_dataset(text).splits
    found = named_dataset(text)
    return tuple(found.splits) if found is not None else ()


def open_data(
    spec: str | Path,
    *,
    split: str = "train",
    task: str = "classification",
    data_dir: str | Path | None = None,
) -> Source:
    """Resolve a `--data` argument into a Source, as the task `task` reads it (its `open_data`)."""
    from cnnlab.tasks import open_data as open_for_task

    return open_for_task(spec, task=task, split=split, data_dir=data_dir)


def open_labelled_images(spec: str | Path, *, split: str = "train", data_dir: str | Path | None = None) -> Source:
    """Images with one class label each (see the module docstring for the layouts)."""
    from cnnlab.data import named

    from cnnlab.data.generated import is_generated, refuse_for_task

    text = str(spec)
    path = Path(text).expanduser()
    if not path.exists() and is_generated(text):
        refuse_for_task(text, "classification")
    if not path.exists() and named.is_named(text):
        return named.open_named(text, split=split, data_dir=data_dir)
    if path.is_file() and path.suffix.lower() == ".csv":
        return open_label_csv(path)
    if path.is_file() and _IDX_IMAGES.search(path.name):
        return _open_idx_file(path)
    if path.is_dir():
        return _open_folder(path, split=split)
    if path.exists():
        raise DataError(
            f"--data {text}: not a folder, a .csv file or an IDX images file "
            "(expected e.g. train-images-idx3-ubyte.gz)"
        )
    raise not_found(text)


def not_found(text: str) -> DataError:
    """--data names nothing on disk and no named dataset."""
    from cnnlab.data import named

    known = ", ".join(named.DATASETS.names())
    return DataError(f"--data {text}: no such file or folder, and not a named dataset ({known})")


def recorded_data(spec: str) -> str:
    """--data as a run records it: a folder or file that shares a named dataset's name ("digits")
    becomes "./digits", so that opening the run elsewhere can never mean the named dataset instead."""
    from cnnlab.data import named

    if named.is_named(spec) and Path(spec).expanduser().exists():
        return f"./{spec}"
    return spec


def check_recorded_data(data: str, *, then: str) -> None:
    """A run's recorded --data, checked before it is opened again. A relative path only works from
    the folder the run was trained in: say that, `then` what to do, rather than report a --data
    the user never typed."""
    from cnnlab.data import named

    if not Path(data).expanduser().exists() and not named.is_named(data):
        raise DataError(f"the run was trained on {data}, which is not there from {Path.cwd()}; {then}")


def _open_idx_file(images_path: Path) -> Source:
    from cnnlab.data import idx

    labels_path = idx.labels_file_for(images_path)
    return idx.open_idx_pair(
        images_path, labels_path, description=f"{images_path.name}", name_prefix=images_path.name
    )


def _open_folder(root: Path, *, split: str) -> Source:
    from cnnlab.data import idx

    idx_splits = idx.find_idx_splits(root)
    if idx_splits:
        if split not in idx_splits:
            raise DataError(f"--split {split}: {root} has IDX files for {', '.join(idx_splits)} only")
        images_path, labels_path = idx_splits[split]
        return idx.open_idx_pair(
            images_path, labels_path, description=f"{root} ({split} split)", name_prefix=f"{root.name}/{split}"
        )
    split_folders = find_split_folders(root)
    if split_folders:
        if split not in split_folders:
            raise DataError(
                f"--split {split}: {root} is laid out in split folders "
                f"({', '.join(p.name for p in split_folders.values())}); choose one of {', '.join(split_folders)}"
            )
        return open_class_folders(split_folders[split])
    return open_class_folders(root)


def find_split_folders(root: Path) -> dict[str, Path]:
    """{'train': root/train, 'test': root/test, ...} when root is organised by split."""
    found: dict[str, Path] = {}
    for split, aliases in SPLIT_FOLDER_NAMES.items():
        for alias in aliases:
            candidate = root / alias
            if candidate.is_dir() and any(child.is_dir() for child in candidate.iterdir()):
                found[split] = candidate
                break
    return found if "train" in found or len(found) >= 2 else {}


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def open_class_folders(root: Path) -> Source:
    """A folder with one sub-folder per class; images anywhere below each class folder."""
    class_dirs = sorted((p for p in root.iterdir() if p.is_dir() and _visible(p)), key=lambda p: p.name)
    if not class_dirs:
        raise DataError(
            f"--data {root}: expected one sub-folder per class (e.g. {root}/cats/*.jpg, {root}/dogs/*.jpg), "
            "found none"
        )
    paths: list[Path] = []
    targets: list[int] = []
    for index, class_dir in enumerate(class_dirs):
        files = image_files_below(class_dir)
        paths.extend(files)
        targets.extend([index] * len(files))
    if not paths:
        raise DataError(f"--data {root}: the class folders hold no image files (.png, .jpg, .bmp, ...)")
    return Source(
        description=f"{root} ({_classes(len(class_dirs))}, {len(paths):,} images)",
        names=[str(p) for p in paths],
        targets=np.asarray(targets, dtype=np.int64),
        class_names=[p.name for p in class_dirs],
        paths=paths,
    )


def _classes(count: int) -> str:
    return f"{count} class" if count == 1 else f"{count} classes"


def open_label_csv(csv_path: Path) -> Source:
    """A CSV of `path,label` rows under a header row; labels become classes (numeric ones in order)."""
    header, rows = _read_csv_rows(csv_path)
    if len(header) != 2:
        raise DataError(
            f"{csv_path}: a classification CSV needs exactly two columns, path,label "
            f"(found {len(header)}: {', '.join(header)}); for numeric targets use --task regression"
        )
    paths = [_resolve_csv_path(csv_path, row[0]) for row in rows]
    labels = [row[1] for row in rows]
    class_names = _sorted_labels(set(labels))
    lookup = {name: i for i, name in enumerate(class_names)}
    targets = np.asarray([lookup[label] for label in labels], dtype=np.int64)
    return Source(f"{csv_path} ({_classes(len(class_names))}, {len(rows):,} images)", [str(p) for p in paths],
                  targets, class_names=class_names, paths=paths)


def open_value_csv(csv_path: Path) -> Source:
    """A CSV of `path,target[,target...]` rows under a header row naming the targets."""
    header, rows = _read_csv_rows(csv_path)
    paths = [_resolve_csv_path(csv_path, row[0]) for row in rows]
    targets = np.asarray([_numbers(csv_path, line, row[1:], header) for line, row in enumerate(rows, 2)],
                         dtype=np.float32)
    count = len(header) - 1
    return Source(f"{csv_path} ({count} target{'' if count == 1 else 's'}, {len(rows):,} images)",
                  [str(p) for p in paths], targets, target_names=header[1:], paths=paths)


def _read_csv_rows(csv_path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            table = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except UnicodeDecodeError as error:
        raise DataError(f"{csv_path}: not a UTF-8 text CSV ({error})") from None
    if len(table) < 2:
        raise DataError(f"{csv_path}: needs a header row (e.g. path,label) and at least one data row")
    header = [cell.strip() for cell in table[0]]
    if len(header) < 2:
        raise DataError(f"{csv_path}: needs at least two columns: path, then label or target(s)")
    for line, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            raise DataError(f"{csv_path}, line {line}: {len(row)} columns, but the header has {len(header)}")
    return header, [[cell.strip() for cell in row] for row in table[1:]]


def _resolve_csv_path(csv_path: Path, value: str) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else csv_path.parent / path


_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _numbers(csv_path: Path, line: int, cells: list[str], header: list[str]) -> list[float]:
    """The targets of one row; each must be a number that stays finite as the float32 training uses."""
    values = []
    for number, (column, cell) in enumerate(zip(header[1:], cells), start=2):
        try:
            value = float(cell)
        except ValueError:
            raise DataError(f"{csv_path}, line {line}: {column} = {cell!r} is not a number") from None
        if not np.isfinite(value):
            raise DataError(f"{csv_path}, line {line}: {column} = {cell!r} is not a finite number")
        if abs(value) > _FLOAT32_MAX:
            raise DataError(f"{csv_path}, line {line}, column {number} ({column}): {cell!r} is beyond what training's "
                            f"32-bit floats hold (±{_FLOAT32_MAX:.2e}); rescale the targets (e.g. to other units)")
        values.append(value)
    return values


def _sorted_labels(labels: set[str]) -> list[str]:
    """Numeric labels in numeric order (2 before 10), others alphabetically."""
    try:
        return sorted(labels, key=float)
    except ValueError:
        return sorted(labels)
