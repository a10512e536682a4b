"""What every detection reader produces, and the checks every box goes through on the way in.

The COCO, YOLO and VOC readers (formats_coco.py, formats_yolo.py, formats_voc.py) each turn their
layout into the same `DetectionDataset`: image paths, one `ImageBoxes` per image, class names and
the original id of each class. Boxes are `x1, y1, x2, y2` in pixels of the upright image, with
continuous coordinates: a box covering pixel columns 0..9 has x1=0 and x2=10.

Every box passes `checked_boxes`, which never changes anything without saying so in the
`BoxReport`: a box reaching outside the image is clipped to it (counted, with examples), and a box
left without width or height, or with a coordinate that is not a finite number, is dropped
(counted, with examples). The one exception is stated here: a coordinate outside the image by less
than `EDGE_TOLERANCE_PX` is set to the edge without being counted, because YOLO's normalised
coordinates, rounded to 6 decimals, put boxes that touch the edge a hair outside it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from cnnlab.errors import UnreadableImageError

NORMAL, CROWD, DIFFICULT = 0, 1, 2  # ImageBoxes.flags; crowd and difficult boxes are ignored when matching
FLAG_NAMES = {NORMAL: "normal", CROWD: "crowd", DIFFICULT: "difficult"}
EXAMPLES_KEPT = 10  # named examples kept per kind of problem; every one is counted
EDGE_TOLERANCE_PX = 0.01


@dataclass(frozen=True)
class ImageBoxes:
    """The boxes of one image: (k, 4) float32 x1, y1, x2, y2 pixels, (k,) int64 labels, (k,) uint8 flags."""

    boxes: np.ndarray
    labels: np.ndarray
    flags: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls) -> ImageBoxes:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), np.zeros(0, np.uint8))

    @classmethod
    def of(cls, boxes: Sequence[Sequence[float]], labels: Sequence[int],
           flags: Sequence[int] | None = None) -> ImageBoxes:
        """ImageBoxes from plain lists, in the dtypes every consumer expects.

        >>> ImageBoxes.of([[0, 0, 10, 5]], [2]).boxes.tolist(), ImageBoxes.of([], []).boxes.shape
        ([[0.0, 0.0, 10.0, 5.0]], (0, 4))
        """
        box_array = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        flag_array = np.zeros(len(box_array), np.uint8) if flags is None else np.asarray(flags, np.uint8)
        return cls(box_array, np.asarray(labels, dtype=np.int64).reshape(-1), flag_array.reshape(-1))


@dataclass
class Tally:
    """How many times one thing happened, with the first few occurrences named."""

    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, example: str) -> None:
        self.count += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(example)


# BoxReport field -> how the summary says it; the order is the summary's.
_TALLY_TITLES = {
    "missing_images": "images listed in the annotations but not on disk (skipped)",
    "unreadable_files": "annotation files that could not be read (their images skipped)",
    "unreadable_images": "image files whose size could not be read (skipped)",
    "malformed": "malformed annotations (dropped)",
    "unknown_classes": "boxes of an unknown class (dropped)",
    "degenerate": "degenerate boxes: no width or height after clipping, or not finite (dropped)",
    "clipped": "boxes clipped to the image",
    "polygons": "polygon (segmentation) labels read as their bounding box",
    "missing_label_files": "images without a label file (read as background images)",
    "background_images": "images without boxes (background images)",
    "crowd": "crowd boxes (ignored when matching)",
    "difficult": "difficult boxes (ignored when matching)",
}
# The tallies of data changed on the way in: what a user is warned about. The others (background
# images, a YOLO image without a label file, crowd and difficult boxes) are what such data holds.
_CHANGES = ("missing_images", "unreadable_files", "unreadable_images", "malformed", "unknown_classes",
            "degenerate", "clipped", "polygons")


@dataclass
class BoxReport:
    """Everything a reader fixed, dropped or noticed, counted and named: nothing changes silently."""

    images: int = 0  # images in the dataset, after skipping
    boxes: int = 0  # boxes kept
    missing_images: Tally = field(default_factory=Tally)
    unreadable_files: Tally = field(default_factory=Tally)
    unreadable_images: Tally = field(default_factory=Tally)
    malformed: Tally = field(default_factory=Tally)
    unknown_classes: Tally = field(default_factory=Tally)
    degenerate: Tally = field(default_factory=Tally)
    clipped: Tally = field(default_factory=Tally)
    polygons: Tally = field(default_factory=Tally)
    missing_label_files: Tally = field(default_factory=Tally)
    background_images: Tally = field(default_factory=Tally)
    crowd: Tally = field(default_factory=Tally)
    difficult: Tally = field(default_factory=Tally)
    notes: list[str] = field(default_factory=list)  # decisions taken about the whole dataset

    def tallies(self) -> dict[str, Tally]:
        return {name: getattr(self, name) for name in _TALLY_TITLES}

    def changes(self) -> int:
        """How many images, files and boxes reading skipped, dropped or changed (0: read as they are)."""
        return sum(getattr(self, name).count for name in _CHANGES)

    def summary(self, examples: int = 3) -> str:
        """A few lines for the console: the totals, then each non-zero tally with `examples` named."""
        lines = [f"{self.images:,} images, {self.boxes:,} boxes"]
        for name, tally in self.tallies().items():
            if tally.count:
                shown = "; ".join(tally.examples[:examples])
                more = ", ..." if tally.count > min(examples, len(tally.examples)) else ""
                lines.append(f"  {_TALLY_TITLES[name]}: {tally.count:,} (e.g. {shown}{more})")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        values: dict[str, Any] = {"images": self.images, "boxes": self.boxes}
        for name, tally in self.tallies().items():
            values[name] = {"count": tally.count, "examples": list(tally.examples)}
        values["notes"] = list(self.notes)
        return values

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> BoxReport:
        report = cls(images=int(values.get("images", 0)), boxes=int(values.get("boxes", 0)),
                     notes=list(values.get("notes", [])))
        for name in _TALLY_TITLES:
            saved = values.get(name) or {}
            setattr(report, name, Tally(int(saved.get("count", 0)), list(saved.get("examples", []))))
        return report


@dataclass
class DetectionDataset:
    """One split of a detection dataset, as read from disk (see the module docstring for the boxes)."""

    description: str  # e.g. "data/coco (COCO JSON, 3 classes, 120 images, train split)"
    image_paths: list[Path]
    annotations: list[ImageBoxes]  # one per image, same order
    image_sizes: list[tuple[int, int]]  # (width, height) of each upright image, as the annotations use it
    class_names: list[str]  # index order
    category_ids: list[int]  # the original id of each class: COCO category id, YOLO class number, VOC index
    report: BoxReport
    format: str  # "coco" | "yolo" | "voc"

    def __len__(self) -> int:
        return len(self.image_paths)


class LabelledImages(Protocol):
    """What the writers need: a DetectionDataset, or anything holding these four lists."""

    image_paths: Sequence[Path]
    annotations: Sequence[ImageBoxes]
    image_sizes: Sequence[tuple[int, int]]
    class_names: Sequence[str]


# --- checking boxes -----------------------------------------------------------------------------


def checked_boxes(where: str, boxes: np.ndarray, labels: Sequence[int], flags: Sequence[int],
                  size: tuple[int, int], report: BoxReport) -> ImageBoxes:
    """The boxes of one image, clipped to its `size` (width, height), degenerate ones dropped.

    `boxes` are (k, 4) x1, y1, x2, y2 pixels as read; `where` names the image or file in the report.
    Also counts the image's crowd and difficult boxes, the image if it ends without boxes, and the
    kept boxes in `report.boxes`.
    """
    raw = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width, height = size
    with np.errstate(invalid="ignore"):  # NaN and inf are dealt with below, by name
        finite = np.isfinite(raw).all(axis=1)
        inside = np.minimum(np.maximum(raw, 0.0), [width, height, width, height])
        keep = finite & (inside[:, 2] > inside[:, 0]) & (inside[:, 3] > inside[:, 1])
        moved = keep & (np.abs(inside - raw).max(axis=1) >= EDGE_TOLERANCE_PX)
    for index in np.flatnonzero(~keep):  # the loops run over problems only: most boxes have none
        if not finite[index]:
            report.degenerate.add(f"{where}: box {format_box(raw[index])} (not a finite number)")
        else:
            change = "" if np.array_equal(inside[index], raw[index]) else f" → {format_box(inside[index])}"
            report.degenerate.add(f"{where}: box {format_box(raw[index])}{change}")
    for index in np.flatnonzero(moved):
        report.clipped.add(f"{where}: {format_box(raw[index])} → {format_box(inside[index])}")
    kept = ImageBoxes.of(inside[keep], np.asarray(labels, np.int64)[keep], np.asarray(flags, np.uint8)[keep])
    for flag in kept.flags[kept.flags != NORMAL]:
        (report.crowd if flag == CROWD else report.difficult).add(where)
    if not len(kept):
        report.background_images.add(where)
    report.boxes += len(kept)
    return kept


def format_box(box: Sequence[float] | np.ndarray) -> str:
    """`(x1, y1, x2, y2)` with up to 6 significant digits, for messages.

    >>> format_box([-5.0, 2.0, 40.5, 30.25])
    '(-5, 2, 40.5, 30.25)'
    """
    return "(" + ", ".join(f"{float(value):.6g}" for value in box) + ")"


# --- small shared readers -----------------------------------------------------------------------


def upright_size(path: Path) -> tuple[int, int, bool]:
    """(width, height, turned) of an image from its header, without decoding the pixels.

    `turned` is True when the file's orientation tag (EXIF, or XMP, which Pillow folds into it)
    rotates the image by 90° or 270°: the size returned is then the upright one, swapped from the
    stored one, because that is how cnnlab decodes the pixels and how labelling tools show them.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image, warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns on some broken EXIF blocks
            width, height = image.size
            try:
                orientation = image.getexif().get(0x0112, 1)
            except Exception:  # a corrupt EXIF block: the decoder will not turn the image either
                orientation = 1
    except FileNotFoundError:
        raise UnreadableImageError(path, "file does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        empty = path.is_file() and path.stat().st_size == 0
        raise UnreadableImageError(path, "file is empty (0 bytes)" if empty else str(error)) from None
    if orientation in (5, 6, 7, 8):
        return height, width, True
    return width, height, False


def counted(count: int, noun: str) -> str:
    """`1 class`, `3 classes`, `1,200 images`: a count with its noun, for descriptions.

    >>> counted(1, "class"), counted(1200, "image")
    ('1 class', '1,200 images')
    """
    plural = noun + ("es" if noun.endswith(("s", "x")) else "s")
    return f"{count:,} {noun if count == 1 else plural}"


def display_path(path: Path, root: Path) -> str:
    """`path` relative to `root` when it is below it (shorter messages), else as given."""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def read_names_file(path: Path) -> list[str]:
    """One class name per non-empty line (classes.txt, labels.txt)."""
    from cnnlab.errors import DataError

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read the class names ({error})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise DataError(f"{path}: class names must be distinct; repeated: {', '.join(duplicates)}")
    return names


def copy_image(source: Path, destination: Path) -> None:
    """Put `source` at `destination` (nothing to do when it is already there), bytes only, no metadata."""
    import shutil

    from cnnlab.errors import DataError

    if destination.exists():
        if destination.samefile(source):
            return
        if destination.read_bytes() != source.read_bytes():
            raise DataError(f"{destination} already exists with other content; write to an empty folder")
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, destination)  # copyfile, not copy2: no timestamps, same bytes every time


def writable_boxes(boxes: ImageBoxes, supported_flags: set[int], policy: str, where: str,
                   format_name: str) -> ImageBoxes:
    """`boxes` with the flags `format_name` cannot store handled by `policy`.

    "error" refuses them (DataError naming `where`), "drop" leaves those boxes out, "plain" writes
    them as ordinary boxes. Writers take the policy as `flagged_boxes=`.
    """
    from cnnlab.errors import ConfigError, DataError

    if policy not in ("error", "drop", "plain"):
        raise ConfigError(f"flagged_boxes={policy!r}: use 'error', 'drop' or 'plain'")
    if not boxes.flags.any():
        return boxes
    unsupported = ~np.isin(boxes.flags, sorted(supported_flags | {NORMAL}))
    if not unsupported.any():
        return boxes
    if policy == "error":
        kinds = sorted({FLAG_NAMES.get(int(flag), str(flag)) for flag in boxes.flags[unsupported]})
        raise DataError(
            f"{where}: {format_name} cannot mark a box {' or '.join(kinds)}; pass flagged_boxes='drop' "
            "to leave such boxes out or flagged_boxes='plain' to write them as ordinary boxes"
        )
    if policy == "drop":
        return ImageBoxes(boxes.boxes[~unsupported], boxes.labels[~unsupported], boxes.flags[~unsupported])
    return ImageBoxes(boxes.boxes, boxes.labels, np.where(unsupported, NORMAL, boxes.flags).astype(np.uint8))


def check_writable(dataset: LabelledImages) -> None:
    """Refuse lists of different lengths and labels outside the class names, before writing anything."""
    from cnnlab.errors import DataError

    counts = {len(dataset.image_paths), len(dataset.annotations), len(dataset.image_sizes)}
    if len(counts) != 1:
        raise DataError(
            f"{len(dataset.image_paths)} images, {len(dataset.annotations)} annotations and "
            f"{len(dataset.image_sizes)} sizes: there must be one of each per image"
        )
    for path, boxes in zip(dataset.image_paths, dataset.annotations):
        if len(boxes) and (boxes.labels.min() < 0 or boxes.labels.max() >= len(dataset.class_names)):
            raise DataError(f"{path}: label {boxes.labels.max()} but only {len(dataset.class_names)} class names")
    names = list(dataset.class_names)
    if len(set(names)) != len(names):
        raise DataError(f"class names must be distinct: {names}")


def check_unique_file_names(names: Sequence[str], folder: Path) -> None:
    """Refuse two images that would land on the same file name in `folder`."""
    from cnnlab.errors import DataError

    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{folder}: two images would share the file name {name}; rename one")
        seen.add(name)
