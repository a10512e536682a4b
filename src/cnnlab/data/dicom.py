"""DICOM files (X-ray, CT, MR, ultrasound) read into the 8-bit images the rest of cnnlab uses,
as a DICOM viewer first shows them.

Needs pydicom (`pip install 'cnnlab[dicom]'`), imported only when a DICOM file is read.

* Stored values become the modality's own units first (the rescale slope and intercept: a CT's
  Hounsfield units), with pydicom's `apply_modality_lut`.
* With a window in the file (Window Center/Width, the first one), values are mapped through it
  with the DICOM standard's linear function (PS3.3 C.11.2.1.2.1): below the window black, above
  it white. A radiologist's window keeps the contrast that matters (a lung window, a bone window).
  Without one, the image's own minimum to maximum are stretched over 0–255.
* MONOCHROME1 images (bright = low values, as some X-ray systems store them) are inverted, so
  bone is white in every file.
* Colour (RGB, YBR, palette) becomes RGB.
* A multi-frame file (a CT series, a cine loop) is refused: cnnlab classifies single images.
* Rows × Columns beyond the pixel budget (`--max-image-pixels`) is refused before the pixel data
  is decoded, as for any image file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from cnnlab.errors import DataError, UnreadableImageError

if TYPE_CHECKING:
    from PIL import Image

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})


def is_dicom(path: Path) -> bool:
    """By suffix, or for a file without one (PACS exports are often named IM00001) by the "DICM"
    marker that a DICOM file carries after its 128-byte preamble."""
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or (suffix == "" and has_dicom_marker(path))


def has_dicom_marker(source: Path | BinaryIO) -> bool:
    """Whether a regular file (a path, or a file open for reading, left at its start) has DICOM's
    marker; a FIFO or a device is never opened or read (it could block, or never end)."""
    if isinstance(source, (str, Path)):
        from cnnlab.data.images import open_image_file
        from cnnlab.errors import UnreadableImageError

        try:
            with open_image_file(Path(source)) as file:
                return has_dicom_marker(file)
        except (UnreadableImageError, OSError):  # a folder, a FIFO, a file that vanished: not a DICOM image
            return False
    try:
        source.seek(128)
        return source.read(4) == b"DICM"
    except OSError:
        return False
    finally:
        source.seek(0)


def _pydicom(path: Path):
    try:
        import pydicom
    except ImportError:
        raise DataError(f"{path}: reading DICOM files needs pydicom: pip install 'cnnlab[dicom]' "
                        "(or pip install pydicom)") from None
    return pydicom


def _read(path: Path, *, header_only: bool = False, file: BinaryIO | None = None):
    pydicom = _pydicom(path)
    try:
        if file is None:
            from cnnlab.data.images import open_image_file

            with open_image_file(path) as opened:
                return pydicom.dcmread(opened, stop_before_pixels=header_only)
        file.seek(0)
        return pydicom.dcmread(file, stop_before_pixels=header_only)
    except UnreadableImageError:
        raise
    except FileNotFoundError:
        raise UnreadableImageError(path, "file does not exist") from None
    except Exception as error:  # pydicom raises many kinds (InvalidDicomError, OSError, ValueError, struct's...)
        raise UnreadableImageError(path, f"not a DICOM file pydicom can read ({error})") from None


def probe_dicom(path: Path, *, file: BinaryIO | None = None, max_pixels: int | None = None) -> tuple[int, int, bool]:
    """(width, height, is_colour) from the header alone."""
    dataset = _read(path, header_only=True, file=file)
    try:
        width, height = _size(path, dataset, max_pixels)
        return width, height, _is_colour(dataset)
    except UnreadableImageError:
        raise
    except Exception as error:  # an element that only fails when read
        raise UnreadableImageError(path, f"not a DICOM file pydicom can read ({error})") from None


def _size(path: Path, dataset, max_pixels: int | None) -> tuple[int, int]:
    """(Columns, Rows), checked against the pixel budget."""
    from cnnlab.data.images import DEFAULT_MAX_IMAGE_PIXELS, check_pixels

    try:
        width, height = int(dataset.Columns), int(dataset.Rows)
    except (AttributeError, TypeError, ValueError):
        raise UnreadableImageError(path, "a DICOM file without an image (no Rows/Columns)") from None
    check_pixels(path, width, height, max_pixels or DEFAULT_MAX_IMAGE_PIXELS)
    return width, height


def _is_colour(dataset) -> bool:
    return int(dataset.get("SamplesPerPixel", 1)) == 3 or dataset.get("PhotometricInterpretation") == "PALETTE COLOR"


def read_dicom(path: Path, *, file: BinaryIO | None = None, max_pixels: int | None = None) -> "Image.Image":
    """The image in `path` (or in `file`, opened from it) as an 8-bit Pillow image, "L" (grey) or "RGB"."""
    dataset = _read(path, file=file)
    try:
        return _image(path, dataset, max_pixels)
    except UnreadableImageError:
        raise
    except Exception as error:  # pydicom parses elements when they are first read: a broken one fails there
        raise UnreadableImageError(path, f"cannot decode its pixel data ({error})") from None


def _image(path: Path, dataset, max_pixels: int | None) -> "Image.Image":
    from PIL import Image

    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnreadableImageError(path, f"holds {frames} frames (a series or a cine loop); cnnlab reads single "
                                         "images: save the frames you want as separate files")
    if "PixelData" not in dataset:
        raise UnreadableImageError(path, "a DICOM file without an image (no pixel data)")
    _size(path, dataset, max_pixels)
    pixels = dataset.pixel_array  # pydicom raises several kinds for missing codecs and broken data
    if dataset.get("PhotometricInterpretation") == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        # The palette's entries have their own depth (the descriptor's third value), not BitsStored's.
        entry_bits = int(dataset.get("RedPaletteColorLookupTableDescriptor", [0, 0, 16])[2])
        return Image.fromarray(_to_uint8(apply_color_lut(pixels, dataset), entry_bits), "RGB")
    if _is_colour(dataset):  # pydicom gives RGB for RGB and YBR files alike
        return Image.fromarray(_to_uint8(pixels, _bits(dataset, 8)), "RGB")
    return Image.fromarray(grey_to_uint8(dataset, pixels), "L")


def _bits(dataset, default: int) -> int:
    return int(dataset.get("BitsStored", default) or default)


def _to_uint8(pixels: np.ndarray, bits: int) -> np.ndarray:
    """Colour samples of `bits` bits scaled to 0–255."""
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    top = float(2**bits - 1)
    return np.clip(np.rint(pixels.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)


def grey_to_uint8(dataset, pixels: np.ndarray) -> np.ndarray:
    """A grey image's stored values -> 0–255 as a viewer shows it: modality units, then the file's
    first window (or the image's own range), MONOCHROME1 inverted."""
    from pydicom.pixels import apply_modality_lut

    values = np.asarray(apply_modality_lut(pixels, dataset), dtype=np.float64)
    window = _first_window(dataset)
    if window is not None:
        center, width = window
        # PS3.3 C.11.2.1.2.1, linear: y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255, clipped.
        scaled = ((values - (center - 0.5)) / max(width - 1.0, 1.0) + 0.5) * 255.0
    else:
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return 255 - grey if dataset.get("PhotometricInterpretation") == "MONOCHROME1" else grey


def _first_window(dataset) -> tuple[float, float] | None:
    center, width = dataset.get("WindowCenter"), dataset.get("WindowWidth")
    if center is None or width is None:
        return None
    try:
        center, width = _first(center), _first(width)
    except (TypeError, ValueError, IndexError):
        return None  # an unreadable window: fall back to the image's own range
    return (center, width) if width >= 1 else None


def _first(value) -> float:
    """A window value, or the first of several (a file may offer a lung and a bone window)."""
    if isinstance(value, (str, bytes)):
        return float(value)
    try:
        return float(value[0])
    except TypeError:  # a single number
        return float(value)
