"""Decoding one image file into the pixels a CNN expects.

The guide's rule: a grayscale image becomes 1×H×W, a colour image 3×H×W, each value 0–255.
Real files are messier than that, so this module turns every mode Pillow can open into either
"L" (one channel) or "RGB" (three), in the orientation the camera meant:

* EXIF orientation is applied (phones store portrait photos sideways plus a rotation tag);
* palette images keep their colours, and their transparency if they have any;
* transparent pixels (RGBA, LA, PA) are composited onto white, as a viewer shows them, because
  the colour stored under a fully transparent pixel is arbitrary;
* CMYK and other colour spaces go through Pillow's conversion to RGB;
* 16-bit images (X-rays, microscopy) are scaled from their type's range (or 12 bits') to 0–255
  instead of being clipped, which would turn most of them white; float and 32-bit integer images
  hold values of no fixed range, so those not already in 0–1 or 0–255 are stretched from their own
  minimum to their maximum (`_scale_high_bit_depth`).

And it reads files it can read safely, or says why not (an `UnreadableImageError`, which callers
skip and name like any broken file):

* only regular files, found after following links: a FIFO would block forever and a device such
  as /dev/zero never ends; folders, sockets and devices are named for what they are;
* at most `max_pixels` pixels (`--max-image-pixels`, by default `DEFAULT_MAX_IMAGE_PIXELS`), read
  from the header before anything is decoded: a decompression bomb (a small file that decodes to
  gigabytes) is refused, and no file larger than an image within that budget could be is opened;
* a JPEG much larger than the size it is wanted at is decoded at 1/2, 1/4 or 1/8 scale by libjpeg
  itself (draft mode), so a 48-megapixel photo for a 28×28 model never exists at full size.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, TypeVar

import numpy as np

from cnnlab.errors import UnreadableImageError

if TYPE_CHECKING:
    from PIL import Image

T = TypeVar("T")

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm",
     ".dcm", ".dicom"}  # DICOM through pydicom: cnnlab.data.dicom
)

DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
"""The largest image cnnlab decodes unless told otherwise (`--max-image-pixels`): Pillow's own warning
threshold (a quarter gigabyte of 8-bit RGB pixels), so every file Pillow would call a possible
decompression bomb is refused, named, instead of decoded."""
BYTES_PER_PIXEL_AT_MOST = 32  # four channels of 64-bit floats, uncompressed: no image file needs more
_FILE_SLACK_BYTES = 64 << 20  # headers, metadata, embedded previews

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


def check_max_image_pixels(max_pixels: int, flag: str = "--max-image-pixels") -> int:
    """`max_pixels` if it is a usable pixel budget (a whole number of at least 1), else a ConfigError."""
    from cnnlab.errors import ConfigError

    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ConfigError(f"{flag} must be a whole number of pixels, at least 1 (got {max_pixels!r}); "
                          f"the default is {DEFAULT_MAX_IMAGE_PIXELS:,}")
    return max_pixels


def max_file_bytes(max_pixels: int) -> int:
    """The largest file that can hold an image of `max_pixels` pixels (uncompressed, at the most bytes
    per pixel any format stores, plus room for metadata): anything larger is not read at all."""
    return BYTES_PER_PIXEL_AT_MOST * max_pixels + _FILE_SLACK_BYTES


def _kind_of(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


def describe_non_regular(path: Path, mode: int) -> str:
    """What `path` is when it is not a regular file, e.g. "a link to /dev/zero, a character device"."""
    kind = _kind_of(mode)
    if os.path.islink(path):
        return f"a link to {os.path.realpath(path)}, {kind}"
    return kind


def open_image_file(path: Path, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> BinaryIO:
    """`path` opened for reading, if it is a regular file (after following links) no larger than an
    image of `max_pixels` pixels could be; otherwise an UnreadableImageError says what it is.

    The file's type is checked before it is opened (opening some devices does something), and again
    on what was opened, without waiting: a FIFO put in its place meanwhile cannot block."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise UnreadableImageError(path, f"a link to {os.readlink(path)}, which does not exist") from None
        raise UnreadableImageError(path, "file does not exist") from None
    except OSError as error:
        raise UnreadableImageError(path, f"cannot be read ({error.strerror or error})") from None
    _check_regular(path, info)
    try:
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as error:
        raise UnreadableImageError(path, f"cannot be read ({error.strerror or error})") from None
    try:
        _check_regular(path, os.fstat(handle))
        _check_file_size(path, os.fstat(handle).st_size, max_pixels)
    except BaseException:
        os.close(handle)
        raise
    return os.fdopen(handle, "rb")


def _check_regular(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise UnreadableImageError(path, f"{describe_non_regular(path, info.st_mode)}, not a regular file; "
                                         "cnnlab reads images only from regular files")


def _check_file_size(path: Path, size: int, max_pixels: int) -> None:
    if size == 0:
        raise UnreadableImageError(path, "file is empty (0 bytes)")
    if size > max_file_bytes(max_pixels):
        raise UnreadableImageError(path, f"{size / 1e9:.1f} GB, larger than any image within --max-image-pixels "
                                         f"{max_pixels:,} can be; not read")


def check_pixels(path: Path, width: int, height: int, max_pixels: int) -> None:
    """An UnreadableImageError when a width×height image is beyond the pixel budget."""
    if width * height > max_pixels:
        raise UnreadableImageError(path, f"{width}×{height} = {width * height:,} pixels, more than the "
                                         f"{max_pixels:,} that --max-image-pixels allows (a decompression bomb, "
                                         "or an image too large to decode safely: raise --max-image-pixels to "
                                         "read it)")


_PILLOW_BOMB = re.compile(r"\((\d+) pixels\)")


def _open_within_budget(file: BinaryIO, path: Path, max_pixels: int) -> "Image.Image":
    """Pillow's image from the open `file`, header read only, if it is within the pixel budget.

    Pillow has a budget of its own (a warning above `Image.MAX_IMAGE_PIXELS`, an error above twice
    that): cnnlab's replaces it. Its warning is silenced, since cnnlab refuses such a file itself
    unless told to read it, and a --max-image-pixels above Pillow's error threshold raises that
    threshold (process-wide: Pillow has no other way) so that the user's budget decides."""
    from PIL import Image

    pillow_limit = Image.MAX_IMAGE_PIXELS
    if pillow_limit is not None and max_pixels >= 2 * pillow_limit:
        Image.MAX_IMAGE_PIXELS = max_pixels // 2 + 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
    except Image.DecompressionBombError as error:
        claimed = _PILLOW_BOMB.search(str(error))
        pixels = f"{int(claimed.group(1)):,} pixels" if claimed else "more pixels than Pillow allows"
        raise UnreadableImageError(path, f"{pixels}, more than the {max_pixels:,} that --max-image-pixels allows "
                                         "(a decompression bomb, or an image too large to decode safely)") from None
    try:
        check_pixels(path, *image.size, max_pixels)
    except UnreadableImageError:
        image.close()
        raise
    return image


def _reduce_while_decoding(image: "Image.Image", target: tuple[int, int] | None) -> None:
    """Have libjpeg decode a JPEG at 1/2, 1/4 or 1/8 scale when that still leaves at least the target
    size on both sides (whichever way EXIF turns it), so a large photo is never decoded whole."""
    if target is None or image.format != "JPEG":
        return
    side = max(target)
    image.draft(image.mode, (side, side))  # Pillow picks the largest reduction leaving ≥ side pixels


def _decoded(path: Path, convert: Callable[["Image.Image", tuple[int, int]], T], *,
             max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, target: tuple[int, int] | None = None) -> T:
    """Open `path`, decode it fully, put it upright, and hand it to `convert` while the file is open,
    with the (width, height) the upright image has in the file (a JPEG may be decoded smaller).

    Every failure becomes an UnreadableImageError naming the file and the reason. `target` (H, W):
    the size the image is wanted at, which a large JPEG may be decoded close to (draft mode).
    """
    with open_image_file(path, max_pixels) as file:
        return _decoded_from(file, path, convert, max_pixels=max_pixels, target=target)


def _decoded_from(file: BinaryIO, path: Path, convert: Callable[["Image.Image", tuple[int, int]], T], *,
                  max_pixels: int, target: tuple[int, int] | None) -> T:
    """`_decoded` on a file already open (or bytes in memory); `path` names it and gives its suffix."""
    from PIL import UnidentifiedImageError

    from cnnlab.data.dicom import DICOM_SUFFIXES, has_dicom_marker, read_dicom

    suffix = path.suffix.lower()
    if suffix in DICOM_SUFFIXES or (suffix == "" and has_dicom_marker(file)):
        image = read_dicom(path, file=file, max_pixels=max_pixels)
        return convert(image, image.size)
    if suffix == ".png":
        from cnnlab.data import plain_png

        plain = plain_png.plain_png(file, max_pixels=max_pixels)  # upright: it declines files that could say otherwise
        if plain is not None:
            return convert(plain, plain.size)
        file.seek(0)
    try:
        with _open_within_budget(file, path, max_pixels) as image:
            in_file = image.size
            _reduce_while_decoding(image, target)
            image.load()  # decode now: a truncated file fails here, not in the middle of training
            upright = _apply_exif_orientation(image)
            turned = upright.size != image.size
            return convert(upright, in_file[::-1] if turned else in_file)
    except UnidentifiedImageError:
        raise UnreadableImageError(path, "not an image file Pillow can identify") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise UnreadableImageError(path, f"cannot decode image ({error})") from None


def open_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> "Image.Image":
    """Open and fully decode an image, upright, raising UnreadableImageError with the reason if it can't be."""
    return _decoded(Path(path), lambda image, _: image.copy(), max_pixels=max_pixels)


def probe_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int, bool]:
    """(width, height, is_colour) from the file header, without decoding the pixels; a file that is
    not a regular file, or holds more than `max_pixels` pixels, is an UnreadableImageError."""
    from PIL import UnidentifiedImageError

    from cnnlab.data.dicom import DICOM_SUFFIXES, has_dicom_marker, probe_dicom

    path = Path(path)
    with open_image_file(path, max_pixels) as file:
        suffix = path.suffix.lower()
        if suffix in DICOM_SUFFIXES or (suffix == "" and has_dicom_marker(file)):
            return probe_dicom(path, file=file, max_pixels=max_pixels)
        try:
            with _open_within_budget(file, path, max_pixels) as image:
                width, height = image.size
                orientation = image.getexif().get(0x0112, 1)
                if orientation in (5, 6, 7, 8):  # rotated by 90 or 270 degrees
                    width, height = height, width
                return width, height, image.mode not in _GRAY_MODES
        except UnidentifiedImageError:
            raise UnreadableImageError(path, "not an image file Pillow can identify") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise UnreadableImageError(path, str(error)) from None


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
    """16/32-bit integer or float image -> 8-bit grayscale.

    * 16-bit (Pillow's I;16 modes, or "I" holding values within 0–65535, as 16-bit PNGs may open):
      scaled from the type's range. A file whose values all fit in 12 bits is taken as 12-bit data
      (what X-ray and CT exports usually hold): scaled from 65535, its 4,096 levels would collapse
      into 17 grey levels. Every image of a 12-bit set stays below 4096, so they are all scaled alike.
    * Floats within 0–1 or 0–255 are intensities on that scale.
    * Anything else (floats such as depths or temperatures, 32-bit counts, negative values) has no
      fixed range: it is stretched from its own minimum (black) to its maximum (white), as an image
      viewer shows it; an image of one value is black. NaN is black, ±infinity black or white.
    """
    from PIL import Image

    values = np.asarray(image).astype(np.float64)
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0 and high <= 1.0:
        scaled = values * 255.0
    elif image.mode == "F" and low >= 0 and high <= 255.0:
        scaled = values
    elif image.mode != "F" and low >= 0 and high <= 65535:  # 16-bit data, whatever mode Pillow gave it
        scaled = values * (255.0 / (TWELVE_BIT_TOP if high <= TWELVE_BIT_TOP else 65535.0))
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)
    return Image.fromarray(np.rint(np.clip(scaled, 0, 255)).astype(np.uint8), mode="L")


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


def load_image_array(path: str | Path, *, channels: int, size: tuple[int, int], fit: str = "squash",
                     max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Read `path` and return uint8 (channels, H, W) pixels; UnreadableImageError names the file."""
    check_fit(fit)  # here, not inside the decoder, which reads every error as a bad file
    path = path if isinstance(path, Path) else Path(path)
    return _decoded(path, lambda image, _: image_to_array(image, channels=channels, size=size, fit=fit),
                    max_pixels=max_pixels, target=size)


def load_image_array_and_origin(path: str | Path, *, channels: int, size: tuple[int, int],
                                fit: str = "squash", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                                ) -> tuple[np.ndarray, tuple[int, int, bool]]:
    """`load_image_array`, and what the file held before it was fitted to (channels, size):
    (width, height, is_colour) of the upright image in the file."""
    check_fit(fit)

    def convert(image: "Image.Image", in_file: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, bool]]:
        normalised = normalize_mode(image)
        return _to_array(normalised, channels, size, fit), (*in_file, normalised.mode == "RGB")

    return _decoded(path if isinstance(path, Path) else Path(path), convert, max_pixels=max_pixels, target=size)


def load_image_bytes_and_origin(data: bytes, name: str, *, channels: int, size: tuple[int, int],
                                fit: str = "squash", max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                                ) -> tuple[np.ndarray, tuple[int, int, bool]]:
    """`load_image_array_and_origin` for an image held in memory (an upload to `cnnlab serve`), with
    the same checks: the pixel budget read from the header before decoding, no more bytes than an
    image within it could need. `name` is only shown in errors and picks DICOM/PNG by its suffix."""
    import io

    check_fit(fit)
    path = Path(name)
    _check_file_size(path, len(data), max_pixels)

    def convert(image: "Image.Image", in_file: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int, bool]]:
        normalised = normalize_mode(image)
        return _to_array(normalised, channels, size, fit), (*in_file, normalised.mode == "RGB")

    return _decoded_from(io.BytesIO(data), path, convert, max_pixels=max_pixels, target=size)
