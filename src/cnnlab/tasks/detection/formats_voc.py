"""Pascal VOC: the devkit folder, one XML file per image, 1-based pixel corners.

    root/JPEGImages/000005.jpg
    root/Annotations/000005.xml
    root/ImageSets/Main/train.txt     (val.txt, trainval.txt, test.txt: one image id per line)
    root/classes.txt                  (optional, also labels.txt: the class names, in index order)

Without ImageSets/Main, every file in Annotations/ is one set of images: the train split. An
annotation reads

    <annotation>
      <filename>000005.jpg</filename>
      <size><width>500</width><height>375</height><depth>3</depth></size>
      <object>
        <name>chair</name><difficult>1</difficult>
        <bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox>
      </object>
    </annotation>

VOC counts pixels from 1 and names the first and last pixel a box covers, so the box above is
x1=262, y1=210, x2=324, y2=339 in continuous 0-based coordinates. `difficult` marks a box
ignored when matching. Without classes.txt or labels.txt, the classes are the distinct <name>s of
every file in Annotations/ (all splits, so that train and val agree), sorted.

Files declaring a DOCTYPE or an ENTITY are refused unread: entity expansion ("billion laughs") is
how a small XML file exhausts memory, and no VOC annotation needs one.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnlab.data.images import IMAGE_SUFFIXES
from cnnlab.errors import DataError, UnreadableImageError
from cnnlab.tasks.detection.formats_base import (
    DIFFICULT,
    NORMAL,
    BoxReport,
    DetectionDataset,
    LabelledImages,
    check_unique_file_names,
    check_writable,
    checked_boxes,
    copy_image,
    counted,
    display_path,
    read_names_file,
    upright_size,
    writable_boxes,
)

_SPLIT_ORDER = ("train", "val", "trainval", "test")
_NAMES_FILES = ("classes.txt", "labels.txt")
_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def is_voc_folder(folder: Path) -> bool:
    return (folder / "Annotations").is_dir() and (folder / "JPEGImages").is_dir()


def voc_splits(root: Path) -> dict[str, Path | None]:
    """{split: ImageSets/Main/<split>.txt}, or {"train": None} (every annotation) without split files."""
    main = root / "ImageSets" / "Main"
    # Per-class files (aeroplane_train.txt) hold the same ids with a ±1 column: not splits of their own.
    files = {path.stem: path for path in sorted(main.glob("*.txt")) if "_" not in path.stem} if main.is_dir() else {}
    if not files:
        return {"train": None}
    order = sorted(files, key=lambda split: (_SPLIT_ORDER.index(split) if split in _SPLIT_ORDER else 9, split))
    return {split: files[split] for split in order}


@dataclass
class _Object:
    name: str
    flag: int
    box: tuple[float, float, float, float] | None  # x1, y1, x2, y2 0-based continuous; None if unusable
    problem: str = ""


@dataclass
class _Annotation:
    filename: str | None
    size: tuple[int, int] | None
    objects: list[_Object] = field(default_factory=list)


class _Unreadable(Exception):
    """An annotation file that cannot be used; the message is the reason."""


def read_voc(root: Path, split: str) -> DetectionDataset:
    """One split of a Pascal VOC devkit folder (see the module docstring)."""
    splits = voc_splits(root)
    if split not in splits:
        raise DataError(f"{root}: no split {split!r} (ImageSets/Main/{split}.txt); it has: {', '.join(splits)}")
    report = BoxReport()
    split_file = splits[split]
    ids = _read_ids(split_file) if split_file else sorted(path.stem for path in (root / "Annotations").glob("*.xml"))
    parsed: dict[Path, _Annotation | _Unreadable] = {}
    class_names = _class_names(root, report, parsed)
    class_index = {name: index for index, name in enumerate(class_names)}
    paths, annotations, sizes = [], [], []
    for image_id in ids:
        xml_file = root / "Annotations" / f"{image_id}.xml"
        annotation = parsed[xml_file] if xml_file in parsed else _parse_or_reason(xml_file)
        if isinstance(annotation, _Unreadable):
            report.unreadable_files.add(f"{display_path(xml_file, root)}: {annotation}")
            continue
        image = _image_file(root, image_id, annotation.filename)
        if image is None:
            expected = annotation.filename or f"{image_id}.jpg"
            report.missing_images.add(f"JPEGImages/{expected} (from Annotations/{image_id}.xml)")
            continue
        size = annotation.size
        if size is None:
            try:
                width, height, _ = upright_size(image)
            except UnreadableImageError as error:
                report.unreadable_images.add(f"{display_path(image, root)}: {error.reason}")
                continue
            size = (width, height)
        where = display_path(xml_file, root)
        boxes, labels, flags = _usable_objects(annotation, where, class_index, report)
        annotations.append(checked_boxes(where, boxes, labels, flags, size, report))
        paths.append(image)
        sizes.append(size)
    report.images = len(paths)
    contents = f"{counted(len(class_names), 'class')}, {counted(len(paths), 'image')}"
    return DetectionDataset(
        description=f"{root} (Pascal VOC, {contents}, {split} split)",
        image_paths=paths, annotations=annotations, image_sizes=sizes, class_names=class_names,
        category_ids=list(range(len(class_names))), report=report, format="voc",
    )


def _read_ids(split_file: Path) -> list[str]:
    try:
        lines = split_file.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{split_file}: cannot read the list of image ids ({error})") from None
    return [line.split()[0] for line in lines if line.split()]


def _class_names(root: Path, report: BoxReport, parsed: dict[Path, _Annotation | _Unreadable]) -> list[str]:
    """The class names, from classes.txt or labels.txt, else from every annotation (kept in `parsed`)."""
    names_file = next((root / name for name in _NAMES_FILES if (root / name).is_file()), None)
    if names_file is not None:
        report.notes.append(f"class names from {names_file.name}")
        return read_names_file(names_file)
    files = sorted((root / "Annotations").glob("*.xml"))
    names: set[str] = set()
    for xml_file in files:
        parsed[xml_file] = _parse_or_reason(xml_file)
        if isinstance(parsed[xml_file], _Annotation):  # an unreadable one is named when its split is read
            names.update(item.name for item in parsed[xml_file].objects if item.name)  # type: ignore[union-attr]
    report.notes.append(f"class names: the {len(names)} distinct <name>s of the {len(files)} files in "
                        "Annotations/, sorted (no classes.txt or labels.txt beside them)")
    return sorted(names)


def _image_file(root: Path, image_id: str, filename: str | None) -> Path | None:
    folder = root / "JPEGImages"
    candidates = [folder / filename] if filename else []
    candidates += [folder / f"{image_id}{suffix}" for suffix in (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")]
    found = next((candidate for candidate in candidates if candidate.is_file()), None)
    if found is None and folder.is_dir():  # another image suffix
        found = next((path for path in sorted(folder.glob(f"{image_id}.*"))
                      if path.suffix.lower() in IMAGE_SUFFIXES), None)
    return found


def _usable_objects(annotation: _Annotation, where: str, class_index: dict[str, int],
                    report: BoxReport) -> tuple[np.ndarray, list[int], list[int]]:
    boxes, labels, flags = [], [], []
    for number, item in enumerate(annotation.objects, start=1):
        if item.box is None:
            report.malformed.add(f"{where}: object {number} ({item.name or 'no name'}): {item.problem}")
        elif item.name not in class_index:
            report.unknown_classes.add(f"{where}: object {number}: class {item.name!r} is not in the class names")
        else:
            boxes.append(item.box)
            labels.append(class_index[item.name])
            flags.append(item.flag)
    return np.array(boxes, np.float64).reshape(-1, 4), labels, flags


# --- parsing one XML file -----------------------------------------------------------------------


def _parse_or_reason(xml_file: Path) -> _Annotation | _Unreadable:
    try:
        return _parse(xml_file)
    except _Unreadable as error:
        return error


def _parse(xml_file: Path) -> _Annotation:
    try:
        raw = xml_file.read_bytes()
    except FileNotFoundError:
        raise _Unreadable("file does not exist") from None
    except OSError as error:
        raise _Unreadable(f"cannot read the file ({error.strerror or error})") from None
    if _DECLARATION.search(raw):
        raise _Unreadable("declares a DOCTYPE or ENTITY; refused unread (entity expansion can exhaust memory)")
    if b"\x00" in raw:  # UTF-16 or UTF-32 would hide a declaration from the check above
        raise _Unreadable("not UTF-8 or ASCII text (it holds NUL bytes)")
    try:
        element = ET.fromstring(raw)
    except ET.ParseError as error:
        raise _Unreadable(f"not well-formed XML ({error})") from None
    if element.tag != "annotation":
        raise _Unreadable(f"the root element is <{element.tag}>, not <annotation>")
    filename = (element.findtext("filename") or "").strip() or None
    objects = [_object(item) for item in element.findall("object")]
    return _Annotation(filename, _size(element), objects)


def _size(element: ET.Element) -> tuple[int, int] | None:
    """(width, height) from <size>, or None when absent or not positive (the image header is read then)."""
    try:
        width = int(float(element.findtext("size/width") or "0"))
        height = int(float(element.findtext("size/height") or "0"))
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _object(item: ET.Element) -> _Object:
    name = (item.findtext("name") or "").strip()
    difficult = (item.findtext("difficult") or "0").strip()
    flag = DIFFICULT if difficult not in ("", "0", "false", "False") else NORMAL
    bndbox = item.find("bndbox")
    if bndbox is None:
        return _Object(name, flag, None, "no <bndbox>")
    try:
        xmin, ymin, xmax, ymax = (float(bndbox.findtext(key) or "") for key in ("xmin", "ymin", "xmax", "ymax"))
    except ValueError:
        corners = [bndbox.findtext(key) for key in ("xmin", "ymin", "xmax", "ymax")]
        return _Object(name, flag, None, f"<bndbox> corners {corners} are not all numbers")
    if not name:
        return _Object(name, flag, None, "no <name>")
    return _Object(name, flag, (xmin - 1, ymin - 1, xmax, ymax))


# --- writing ------------------------------------------------------------------------------------


def voc_image_folder(root: Path, split: str) -> Path:
    """Where `write_voc` puts the images (every split shares JPEGImages/, so names must not repeat)."""
    return Path(root) / "JPEGImages"


def write_voc(dataset: LabelledImages, root: str | Path, split: str = "train", *,
              flagged_boxes: str = "error") -> Path:
    """Write one split as a VOC devkit folder in `root`; returns `root`.

    Images go to JPEGImages/ under their own names (whatever their format), one XML per image to
    Annotations/<image stem>.xml, the ids to ImageSets/Main/<split>.txt and the class names, in
    index order, to classes.txt. Corners are written 1-based (x1 + 1, y1 + 1, x2, y2), as integers
    when they are whole. VOC has no crowd boxes: `flagged_boxes` says what to do with them
    ("error", "drop" or "plain"); difficult boxes get <difficult>1</difficult>.
    """
    root = Path(root)
    check_writable(dataset)
    _check_classes_file(root / _NAMES_FILES[0], list(dataset.class_names))
    folder = voc_image_folder(root, split)
    check_unique_file_names([Path(source).stem for source in dataset.image_paths], folder)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    ids = []
    for source, boxes, size in zip(dataset.image_paths, dataset.annotations, dataset.image_sizes):
        boxes = writable_boxes(boxes, {DIFFICULT}, flagged_boxes, str(source), "Pascal VOC")
        image = folder / Path(source).name
        copy_image(Path(source), image)
        xml = _annotation_xml(image.name, size, _depth(image), boxes, list(dataset.class_names))
        xml_file = root / "Annotations" / f"{image.stem}.xml"
        if xml_file.is_file() and xml_file.read_text(encoding="utf-8") != xml:
            raise DataError(f"{xml_file} already exists with other boxes; write to an empty folder")
        xml_file.write_text(xml, encoding="utf-8")
        ids.append(image.stem)
    split_file = root / "ImageSets" / "Main" / f"{split}.txt"
    split_file.parent.mkdir(parents=True, exist_ok=True)
    split_file.write_text("".join(f"{image_id}\n" for image_id in ids), encoding="utf-8")
    return root


def _check_classes_file(path: Path, class_names: list[str]) -> None:
    if path.is_file() and read_names_file(path) != class_names:
        raise DataError(f"{path} already lists other classes; write to an empty folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{name}\n" for name in class_names), encoding="utf-8")


def _depth(image: Path) -> int:
    from PIL import Image

    with Image.open(image) as opened:
        return len(opened.getbands())


def _annotation_xml(filename: str, size: tuple[int, int], depth: int, boxes, class_names: list[str]) -> str:
    annotation = ET.Element("annotation")
    ET.SubElement(annotation, "folder").text = "JPEGImages"
    ET.SubElement(annotation, "filename").text = filename
    size_element = ET.SubElement(annotation, "size")
    for key, value in (("width", size[0]), ("height", size[1]), ("depth", depth)):
        ET.SubElement(size_element, key).text = str(value)
    ET.SubElement(annotation, "segmented").text = "0"
    for (x1, y1, x2, y2), label, flag in zip(boxes.boxes.astype(np.float64), boxes.labels, boxes.flags):
        item = ET.SubElement(annotation, "object")
        ET.SubElement(item, "name").text = class_names[int(label)]
        ET.SubElement(item, "pose").text = "Unspecified"
        ET.SubElement(item, "truncated").text = "0"
        ET.SubElement(item, "difficult").text = str(int(flag == DIFFICULT))
        bndbox = ET.SubElement(item, "bndbox")
        for key, value in (("xmin", x1 + 1), ("ymin", y1 + 1), ("xmax", x2), ("ymax", y2)):
            ET.SubElement(bndbox, key).text = _corner(value)
    ET.indent(annotation, space="  ")
    return ET.tostring(annotation, encoding="unicode") + "\n"


def _corner(value: float) -> str:
    value32 = np.float32(value)
    return str(int(value32)) if float(value32).is_integer() else str(value32)
