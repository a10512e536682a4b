"""Decoding one image file into the pixels a CNN expects.

The guide's rule: a grayscale image becomes 1×H×W, a colour image 3×H×W, each value 0–255.
Real files are messier than that, so this module turns every mode Pillow can open into either
"L" (one channel) or "RGB" (three), in the orientation the camera meant:

* EXIF orientation is applied (phones store portrait photos sideways plus a rotation tag);
* palette images keep their colours, and their transparency if they have any;
* transparent pixels (RGBA, LA, PA) are composited onto white, as a viewer shows them, because
  the colour stored under a fully transparent pixel is arbitrary;
* CMYK and other colour spaces go through Pillow's conversion to RGB;
* 16-bit and 32-bit integer images (X-rays, microscopy) are scaled from their full range to
  0–255 instead of being clipped, which would turn most of them white.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

import numpy as np

from cnnlab.errors import UnreadableImageError

if TYPE_CHECKING:
    from PIL import Image

T = TypeVar("T")

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm",
     ".dcm", ".dicom"}  # DICOM through pydicom: cnnlab.data.dicom
)

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
TWELVE_BIT_TOP = 4095.0
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


def is_image_file(path: Path) -> bool:
    return _is_image_name(path.name, path)


def _is_image_name(name: str, path: Path) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    if suffix:
        return False
    from cnnlab.data.dicom import has_dicom_marker

    return has_dicom_marker(path)  # a DICOM file without a suffix


def image_files_below(folder: Path) -> list[Path]:
    """Every image file anywhere below `folder` (by suffix, or for a DICOM file without one by its
    marker; hidden files and folders such as macOS' `._x.jpg` or `.ipynb_checkpoints/` left out), in
    a stable order: a folder's own files by name, then its sub-folders by name."""
    found: list[Path] = []
    for root, subfolders, names in os.walk(folder):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))  # os.walk's next visits
        base = Path(root)
        found.extend(base / name for name in sorted(names)
                     if not name.startswith(".") and _is_image_name(name, base / name))
    return found


def _decoded(path: Path, convert: Callable[["Image.Image"], T]) -> T:
    """Open `path`, decode it fully, put it upright, and hand it to `convert` while the file is open.

    Every failure becomes an UnreadableImageError naming the file and the reason.
    """
    from PIL import Image, UnidentifiedImageError

    from cnnlab.data.dicom import is_dicom, read_dicom

    if is_dicom(path):
        return convert(read_dicom(path))
    if path.suffix.lower() == ".png":
        from cnnlab.data.plain_png import plain_png

        plain = plain_png(path)  # upright by construction: it declines files that could say otherwise
        if plain is not None:
            return convert(plain)
    try:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not in the middle of training
            return convert(_apply_exif_orientation(image))
    except UnidentifiedImageError:
        empty = path.is_file() and path.stat().st_size == 0
        reason = "file is empty (0 bytes)" if empty else "not an image file Pillow can identify"
        raise UnreadableImageError(path, reason) from None
    except FileNotFoundError:
        raise UnreadableImageError(path, "file does not exist") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise UnreadableImageError(path, f"cannot decode image ({error})") from None


def open_image(path: str | Path) -> "Image.Image":
    """Open and fully decode an image, upright, raising UnreadableImageError with the reason if it can't be."""
    return _decoded(Path(path), lambda image: image.copy())


def probe_image(path: str | Path) -> tuple[int, int, bool]:
    """(width, height, is_colour) from the file header, without decoding the pixels."""
    from PIL import Image, UnidentifiedImageError

    from cnnlab.data.dicom import is_dicom, probe_dicom

    path = Path(path)
    if is_dicom(path):
        return probe_dicom(path)
    try:
        with Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)
            if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
                width, height = height, width
            return width, height, image.mode not in _GRAY_MODES
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = "file is empty (0 bytes)" if path.exists() and path.stat().st_size == 0 else str(error)
        raise UnreadableImageError(path, reason) from None


# Where Pillow looks for an orientation: EXIF (also as ImageMagick's PNG text chunk) and XMP.
_ORIENTATION_METADATA = ("exif", "Raw profile type exif", "xmp", "XML:com.adobe.xmp")


def _apply_exif_orientation(image: "Image.Image") -> "Image.Image":
    if image.format in ("PNG", "JPEG") and not any(key in image.info for key in _ORIENTATION_METADATA):
        return image  # nothing in the file can say it is rotated: skip parsing (most files)
    from PIL import ImageOps

    try:
        with warnings.catch_warnings():
            # Pillow warns (rather than fails) on some broken EXIF blocks; the pixels are fine.
            warnings.simplefilter("ignore", UserWarning)
            if image.getexif().get(0x0112, 1) == 1:
                return image  # already upright: no copy
            return ImageOps.exif_transpose(image)
    except Exception:  # a corrupt EXIF block should not cost the user an otherwise good image
        return image


def _scale_high_bit_depth(image: "Image.Image") -> "Image.Image":
    """16/32-bit integer or float image -> 8-bit grayscale, scaled from the data's full range.

    A 16-bit file whose values all fit in 12 bits is taken as 12-bit data (what X-ray and CT
    exports usually hold): scaled from 65535, its 4,096 levels would collapse into 17 grey levels.
    Every image of a 12-bit set stays below 4096, so they are all scaled alike.
    """
    from PIL import Image

    values = np.asarray(image)
    if image.mode == "F":
        # Float images come either as 0..1 or 0..255 intensities.
        top = 1.0 if values.size and float(np.nanmax(values)) <= 1.0 else 255.0
    else:  # Pillow stores 16-bit PNG/TIFF as I;16 or I
        top = TWELVE_BIT_TOP if values.size and int(values.max()) <= TWELVE_BIT_TOP else 65535.0
    scaled = np.clip(np.nan_to_num(values.astype(np.float64)) * (255.0 / top), 0, 255)
    return Image.fromarray(np.rint(scaled).astype(np.uint8), mode="L")


def _flatten_onto_white(image: "Image.Image") -> "Image.Image":
    from PIL import Image

    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def normalize_mode(image: "Image.Image") -> "Image.Image":
    """Any Pillow mode -> "L" or "RGB", keeping what the image shows."""
    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode in _HIGH_BIT_DEPTH_MODES:
        return _scale_high_bit_depth(image)
    if mode == "P":
        return _flatten_onto_white(image) if "transparency" in image.info else image.convert("RGB")
    if mode in ("LA", "La"):
        return _flatten_onto_white(image).convert("L")
    if mode in ("RGBA", "RGBa", "PA"):
        return _flatten_onto_white(image)
    if mode in ("1", "L"):
        return image.convert("L")
    return image.convert("RGB")  # RGB, CMYK, YCbCr, LAB, HSV, RGBX


FITS = ("squash", "crop", "pad")
"""How an image of another shape is made to fit the model's H×W: stretched to it (torchvision's
`Resize`), scaled to cover it and its centre cut out (Keras' `crop_to_aspect_ratio`), or scaled to
fit inside it with black borders added (Keras' `pad_to_aspect_ratio`, a "letterbox"). The last two
keep the aspect ratio, so a tall document scan or a wide X-ray is not distorted."""


def image_to_array(image: "Image.Image", *, channels: int, size: tuple[int, int],
                   fit: str = "squash") -> np.ndarray:
    """A decoded image -> uint8 array of shape (channels, height, width), fitted to `size` (H, W)."""
    return _to_array(normalize_mode(image), channels, size, fit)


def _to_array(image: "Image.Image", channels: int, size: tuple[int, int], fit: str = "squash") -> np.ndarray:
    target_mode = "L" if channels == 1 else "RGB"
    if image.mode != target_mode:
        image = image.convert(target_mode)
    height, width = size
    if image.size != (width, height):
        image = fit_image(image, size, fit)
    pixels = np.array(image, dtype=np.uint8)  # a writable copy, safe to hand to torch
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def fit_image(image: "Image.Image", size: tuple[int, int], fit: str) -> "Image.Image":
    """`image` at `size` (H, W) by one of `FITS`; bilinear with Pillow's support scaling, so
    anti-aliased when shrinking, like torchvision."""
    from PIL import Image, ImageOps

    check_fit(fit)
    height, width = size
    bilinear = Image.Resampling.BILINEAR
    if fit == "crop":
        return ImageOps.fit(image, (width, height), method=bilinear)
    if fit == "squash":
        return image.resize((width, height), bilinear)
    # pad. Not ImageOps.pad: it rounds a 1000×1 strip to a height of 0 and fails.
    scale = min(width / image.width, height / image.height)
    inner = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    canvas = Image.new(image.mode, (width, height), 0)
    canvas.paste(image.resize(inner, bilinear), ((width - inner[0]) // 2, (height - inner[1]) // 2))
    return canvas


def check_fit(fit: str) -> None:
    if fit not in FITS:
        raise ValueError(f"fit must be one of {', '.join(FITS)} (got {fit!r})")


def load_image_array(path: str | Path, *, channels: int, size: tuple[int, int], fit: str = "squash") -> np.ndarray:
    """Read `path` and return uint8 (channels, H, W) pixels; UnreadableImageError names the file."""
    check_fit(fit)  # here, not inside the decoder, which reads every error as a bad file
    path = path if isinstance(path, Path) else Path(path)
    return _decoded(path, lambda image: image_to_array(image, channels=channels, size=size, fit=fit))


def load_image_array_and_origin(path: str | Path, *, channels: int, size: tuple[int, int],
                                fit: str = "squash") -> tuple[np.ndarray, tuple[int, int, bool]]:
    """`load_image_array`, and what the file held before it was fitted to (channels, size):
    (width, height, is_colour) of the upright image."""
    check_fit(fit)

    def convert(image: "Image.Image") -> tuple[np.ndarray, tuple[int, int, bool]]:
        normalised = normalize_mode(image)
        return _to_array(normalised, channels, size, fit), (*normalised.size, normalised.mode == "RGB")

    return _decoded(path if isinstance(path, Path) else Path(path), convert)

