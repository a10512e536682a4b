"""Reading segmentation masks as users bring them, into one form: uint8 (H, W) class indices, 255 = void.

A mask file may be
  * mode L (or I, 1) holding class indices: 0 = background, 1, 2, ... ;
  * a palette PNG (mode P): its indices are the classes, its palette gives their colours;
  * an RGB(A) picture painted in one colour per class, which `classes.yaml` maps to classes;
  * a 0/255 black-and-white mask (no classes.yaml): read as background/foreground, with a note.
255 is void (pixels no one labelled, object borders): the loss and the metrics ignore them.

`classes.yaml`, beside `images/` and `masks/` (or the CSV), names the classes in index order, and for
RGB masks gives their colours:

    - background          # a list: class names by index
    - cat
or
    background: [0, 0, 0] # a mapping: name -> [r, g, b], index order; a class called `void` is 255
    cat: [128, 0, 0]

Every mask is checked against its image and refused with its file named, never silently resampled
or guessed at: a different size; a lossy (JPEG) mask, whose edges hold values between the class
indices; values that are no known class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cnnlab.errors import DataError

VOID = 255
CLASSES_FILE = "classes.yaml"
LOSSY_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".webp"})
NEAR_VOID = 230  # index values from here to 254 beside void: the blur JPEG leaves around 255
LOSSY_COLOUR_DISTANCE = 40  # an unknown RGB colour this close to a class's colour is compression noise
LOSSY_INDEX_DISTANCE = 3  # an unknown index this close to a known one is compression noise


@dataclass
class MaskReading:
    """How a dataset's mask files become class indices (decided once per dataset, see `decide_reading`)."""

    class_names: list[str]
    colours: dict[tuple[int, int, int], int] = field(default_factory=dict)  # RGB masks: colour -> class (or VOID)
    binary: bool = False  # 0/255 masks: 255 is the foreground class 1, not void
    palette: list[tuple[int, int, int]] | None = None  # the colours a palette mask gave its classes

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_json(self) -> dict[str, Any]:
        return {"class_names": self.class_names, "binary": self.binary,
                "colours": [[*colour, index] for colour, index in self.colours.items()],
                "palette": [list(colour) for colour in self.palette] if self.palette else None}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> "MaskReading":
        colours = {tuple(int(v) for v in entry[:3]): int(entry[3]) for entry in values.get("colours") or []}
        palette = [tuple(int(v) for v in colour) for colour in values["palette"]] if values.get("palette") else None
        return cls(list(values["class_names"]), colours, bool(values.get("binary")), palette)


# --- classes.yaml -------------------------------------------------------------------------------


def read_classes_file(path: Path) -> tuple[list[str], dict[tuple[int, int, int], int]]:
    """(class names in index order, colour -> class index) from a classes.yaml (see the module docstring)."""
    import yaml

    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DataError(f"{path}: cannot read the class list ({error})") from None
    if isinstance(values, list) and values and all(isinstance(name, (str, int)) for name in values):
        return [str(name) for name in values], {}
    if not isinstance(values, dict) or not values:
        raise DataError(f"{path}: expected a list of class names, or a mapping of class name to [r, g, b]")
    names, colours = [], {}
    for name, colour in values.items():
        if not (isinstance(colour, (list, tuple)) and len(colour) == 3
                and all(isinstance(v, int) and 0 <= v <= 255 for v in colour)):
            raise DataError(f"{path}: class {name!r} has colour {colour!r}; give [r, g, b] with values 0-255")
        if str(name).lower() == "void":
            colours[tuple(colour)] = VOID
            continue
        colours[tuple(colour)] = len(names)
        names.append(str(name))
    return names, colours


def find_classes_file(*folders: Path) -> Path | None:
    for folder in folders:
        if (folder / CLASSES_FILE).is_file():
            return folder / CLASSES_FILE
    return None


# --- reading one mask ---------------------------------------------------------------------------


def raw_mask(path: Path) -> tuple[np.ndarray, str, list[tuple[int, int, int]] | None]:
    """(pixels, mode, palette) of a mask file as stored: (H, W) indices, or (H, W, 3) colours."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            palette = None
            if mode == "P":
                flat = image.getpalette() or []
                palette = [tuple(flat[i:i + 3]) for i in range(0, len(flat), 3)]
                return np.asarray(image), mode, palette
            if mode in ("RGB", "RGBA", "RGBX", "CMYK", "YCbCr"):
                return np.asarray(image.convert("RGB")), mode, None
            if mode in ("LA", "La", "PA"):
                image = image.getchannel(0)
            pixels = np.asarray(image)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise DataError(f"mask {path}: cannot be read as an image ({error})") from None
    if pixels.dtype == bool:
        return pixels.astype(np.uint8), mode, None
    if pixels.max(initial=0) > VOID or pixels.min(initial=0) < 0:
        raise DataError(f"mask {path}: holds values up to {int(pixels.max())}; class indices must be 0-254 "
                        "(255 = void)")
    return pixels.astype(np.uint8), mode, None


def to_indices(path: Path, reading: MaskReading) -> np.ndarray:
    """The mask at `path` as uint8 class indices (VOID = 255), checked against the dataset's classes."""
    refuse_lossy_file(path)
    pixels, _, _ = raw_mask(path)
    if pixels.ndim == 3:
        return _colours_to_indices(path, pixels, reading)
    if reading.colours:
        raise DataError(f"mask {path}: holds class indices, but classes.yaml maps colours; give every mask as "
                        "an RGB picture in those colours, or list the class names in classes.yaml instead")
    if reading.binary:
        check_binary(path, pixels)
        return np.where(pixels == VOID, 1, 0).astype(np.uint8)
    check_indices(path, pixels, reading.num_classes)
    return pixels


def refuse_lossy_file(path: Path) -> None:
    if path.suffix.lower() in LOSSY_SUFFIXES:
        raise DataError(f"mask {path}: a lossy {path.suffix} file, whose edges hold values between the class "
                        "indices; save masks as PNG (lossless), mode L or P with one index per class")


def check_indices(path: Path, pixels: np.ndarray, num_classes: int) -> None:
    """Refuse values that are no class (0 .. num_classes − 1) and not void, saying when they look lossy."""
    values = np.unique(pixels)
    unknown = values[(values >= num_classes) & (values != VOID)]
    if not len(unknown):
        return
    known = np.append(np.arange(num_classes), VOID)
    near = np.abs(unknown[:, None].astype(int) - known[None, :]).min(axis=1) <= LOSSY_INDEX_DISTANCE
    shown = ", ".join(str(int(v)) for v in unknown[:8]) + (", …" if len(unknown) > 8 else "")
    if near.all() and len(unknown) >= 2 or (unknown >= NEAR_VOID).any():
        raise DataError(f"mask {path}: values between the class indices ({shown}): it looks lossy (saved as JPEG "
                        f"once?); the classes are 0-{num_classes - 1} and 255 = void. Re-export it losslessly")
    raise DataError(f"mask {path}: values {shown} are not known classes (0-{num_classes - 1}, and 255 = void); "
                    f"list every class in classes.yaml, or fix the mask")


def check_binary(path: Path, pixels: np.ndarray) -> None:
    odd = np.setdiff1d(np.unique(pixels), [0, VOID])
    if len(odd):
        shown = ", ".join(str(int(v)) for v in odd[:8])
        raise DataError(f"mask {path}: the masks are black-and-white (0 = background, 255 = foreground), but this "
                        f"one also holds {shown}: it looks lossy (saved as JPEG once?); re-export it losslessly")


def _colours_to_indices(path: Path, pixels: np.ndarray, reading: MaskReading) -> np.ndarray:
    if not reading.colours:
        raise DataError(f"mask {path}: an RGB mask, but no classes.yaml maps its colours to classes; add "
                        "classes.yaml beside masks/ (name: [r, g, b] per class), or save masks as mode L/P indices")
    packed = _pack(pixels)
    known = np.array([_pack(np.array(colour)) for colour in reading.colours], np.int64)
    indices = np.array(list(reading.colours.values()), np.uint8)
    colours, inverse = np.unique(packed, return_inverse=True)
    position = np.searchsorted(known[np.argsort(known)], colours).clip(0, len(known) - 1)
    order = np.argsort(known)
    matched = known[order][position] == colours
    if not matched.all():
        _refuse_colours(path, colours[~matched], known)
    return indices[order][position][inverse].reshape(pixels.shape[:2]).astype(np.uint8)


def _pack(colours: np.ndarray) -> np.ndarray:
    colours = colours.astype(np.int64)
    return (colours[..., 0] << 16) | (colours[..., 1] << 8) | colours[..., 2]


def _unpack(packed: np.ndarray) -> np.ndarray:
    return np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], -1)


def _refuse_colours(path: Path, unknown: np.ndarray, known: np.ndarray) -> None:
    unknown_rgb, known_rgb = _unpack(unknown), _unpack(known)
    distance = np.abs(unknown_rgb[:, None, :] - known_rgb[None, :, :]).max(-1).min(-1)
    shown = ", ".join(str(tuple(int(v) for v in colour)) for colour in unknown_rgb[:5])
    more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
    if (distance <= LOSSY_COLOUR_DISTANCE).all():
        raise DataError(f"mask {path}: colours between the classes' ({shown}{more}): it looks lossy (saved as "
                        "JPEG once?); re-export it losslessly as PNG")
    raise DataError(f"mask {path}: colours {shown}{more} are not in classes.yaml; add them as classes (or as "
                    "void: [r, g, b]), or fix the mask")


# --- deciding how a dataset's masks read ---------------------------------------------------------


def decide_reading(mask_paths: Sequence[Path], classes_file: Path | None, notes: list[str]) -> MaskReading:
    """How this dataset's masks read: from classes.yaml where there is one, else from the masks
    themselves (the classes are 0 .. the largest index; 0/255 masks are background/foreground)."""
    if classes_file is not None:
        names, colours = read_classes_file(classes_file)
        palette = _first_palette(mask_paths) if not colours else None
        return MaskReading(names, colours, palette=palette)
    largest, values = 0, set()
    for path in mask_paths:
        refuse_lossy_file(path)
        pixels, mode, _ = raw_mask(path)
        if pixels.ndim == 3:
            raise DataError(f"mask {path}: an RGB mask, but there is no {CLASSES_FILE} to map its colours to "
                            f"classes; put one beside masks/ (name: [r, g, b] per class)")
        present = np.unique(pixels)
        values.update(int(v) for v in present)
        if (present[present != VOID] >= NEAR_VOID).any():
            check_indices(path, pixels, NEAR_VOID)  # names the lossy fringe
        largest = max(largest, int(present[present != VOID].max(initial=0)))
    if values and values <= {0, VOID} and VOID in values:
        notes.append("the masks hold only 0 and 255: read as black-and-white, 0 = background and 255 = "
                     f"foreground (not void); add {CLASSES_FILE} to say otherwise")
        return MaskReading(["background", "foreground"], binary=True)
    names = ["background"] + [f"class {index}" for index in range(1, largest + 1)]
    return MaskReading(names, palette=_first_palette(mask_paths))


def _first_palette(mask_paths: Sequence[Path]) -> list[tuple[int, int, int]] | None:
    for path in mask_paths[:1]:
        if path.suffix.lower() == ".png":
            _, mode, palette = raw_mask(path)
            return palette if mode == "P" else None
    return None


def check_mask_size(image_path: Path | str, mask_path: Path | str, image_size: tuple[int, int],
                    mask_size: tuple[int, int]) -> None:
    """Refuse a mask whose (width, height) is not its image's: masks are never resampled to fit."""
    if tuple(image_size) != tuple(mask_size):
        raise DataError(f"mask {mask_path}: {mask_size[0]}×{mask_size[1]} pixels, but its image {image_path} is "
                        f"{image_size[0]}×{image_size[1]}; a mask must match its image pixel for pixel (it is "
                        "never resampled to fit)")
