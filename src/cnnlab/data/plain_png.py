"""A quicker way into Pillow's PNG decoder for the commonest small file: 8-bit grey or RGB, plain.

Opening a 28×28 PNG through `Image.open` costs ~50 µs on this project's machine, of which Pillow's
C decoder (inflate and PNG's row filters) takes ~10: the rest is Python — finding the plugin,
parsing the chunk list, setting up the tile, closing the file. Folders of small PNGs (Fashion-MNIST,
digits, icons, cropped faces) are where that dominates: `cnnlab predict` on 2,000 such files spent
more time decoding than running the model.

`plain_png` reads the file itself, walks its chunks with `struct` and hands the compressed pixels to
the same decoder (`Image.frombytes(..., "zip", ...)`), in ~35 µs. It answers only when the file is
unambiguous, and returns None otherwise, for Pillow's own path to decode or to reject with its
error; so a file decodes to the same pixels and fails with the same message either way:

* grey (colour type 0) or RGB (colour type 2) at 8 bits, not interlaced;
* every chunk's CRC correct, the chunks complete up to IEND;
* no chunk that changes what cnnlab makes of the pixels: transparency (tRNS), a palette, EXIF or
  text that may hold an orientation (eXIf, tEXt, zTXt, iTXt), animation (acTL, fcTL, fdAT), or any
  chunk not known to be harmless;
* at most 1 MiB, and not more pixels than cnnlab's pixel budget (`--max-image-pixels`) or Pillow's
  decompression-bomb limit, whichever is lower.

It reads a path only if it is a regular file (`cnnlab.data.images.open_image_file`), or a file
already opened that way; a FIFO or a device it declines without reading.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from PIL import Image

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_LARGEST_FILE = 1 << 20  # beyond this, decoding outweighs Pillow's per-file overhead
# Chunks that carry nothing cnnlab uses: physical size, colour management (Pillow does not apply
# it when decoding), time, significant bits, background colour for viewers.
_HARMLESS_CHUNKS = frozenset({b"IHDR", b"IDAT", b"IEND", b"pHYs", b"gAMA", b"cHRM", b"sRGB", b"iCCP",
                              b"tIME", b"sBIT", b"bKGD"})
_MODE_OF_COLOUR_TYPE = {0: "L", 2: "RGB"}
_CHUNK_HEADER = struct.Struct(">I4s")
_CRC = struct.Struct(">I")
_IHDR = struct.Struct(">IIBBBBB")


def plain_png(source: Path | BinaryIO, *, max_pixels: int | None = None) -> Image.Image | None:
    """The decoded image of a plain 8-bit grey or RGB PNG (a path, or a file open for reading); None
    for any other file. `max_pixels`: cnnlab's pixel budget (default: `DEFAULT_MAX_IMAGE_PIXELS`)."""
    data = _small_file_bytes(source)
    if data is None or not data.startswith(_SIGNATURE):
        return None
    chunks = _verified_chunks(data)
    if chunks is None:
        return None
    header, compressed = chunks
    return _decode(header, compressed, max_pixels)


def _small_file_bytes(source: Path | BinaryIO) -> bytes | None:
    """The whole file if it is a regular file of at most `_LARGEST_FILE` bytes (an open file is read
    from its start and left there); None otherwise, for Pillow's path to read or to name."""
    if isinstance(source, io.BytesIO):  # an upload held in memory (cnnlab serve)
        data = source.getvalue()
        return data if len(data) <= _LARGEST_FILE else None
    if not isinstance(source, (str, Path)):
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_size > _LARGEST_FILE:
            return None
        source.seek(0)
        data = source.read(_LARGEST_FILE + 1)
        source.seek(0)
        return data if len(data) <= _LARGEST_FILE else None
    from cnnlab.data.images import open_image_file
    from cnnlab.errors import UnreadableImageError

    try:
        with open_image_file(Path(source)) as file:
            return _small_file_bytes(file)
    except (UnreadableImageError, OSError):  # Pillow's path reports it with the reason
        return None


def _verified_chunks(data: bytes) -> tuple[tuple[int, ...], bytes] | None:
    """(IHDR fields, the IDAT data joined) when every chunk up to IEND is harmless and intact."""
    position, end, header, pixel_data = len(_SIGNATURE), len(data), None, []
    view = memoryview(data)
    while position + 12 <= end:
        length, kind = _CHUNK_HEADER.unpack_from(data, position)
        body_end = position + 8 + length
        if kind not in _HARMLESS_CHUNKS or body_end + 4 > end:
            return None
        if zlib.crc32(view[position + 4 : body_end]) != _CRC.unpack_from(data, body_end)[0]:
            return None
        if kind == b"IHDR" and length == _IHDR.size:
            header = _IHDR.unpack_from(data, position + 8)
        elif kind == b"IDAT":
            pixel_data.append(view[position + 8 : body_end])
        elif kind == b"IEND":
            return (header, b"".join(pixel_data)) if header is not None and pixel_data else None
        position = body_end + 4
    return None  # truncated before IEND


def _decode(header: tuple[int, ...], compressed: bytes, max_pixels: int | None) -> Image.Image | None:
    from PIL import Image

    from cnnlab.data.images import DEFAULT_MAX_IMAGE_PIXELS

    width, height, bit_depth, colour_type, compression, filter_method, interlace = header
    mode = _MODE_OF_COLOUR_TYPE.get(colour_type)
    limit = min(max_pixels or DEFAULT_MAX_IMAGE_PIXELS, Image.MAX_IMAGE_PIXELS or DEFAULT_MAX_IMAGE_PIXELS)
    if (mode is None or bit_depth != 8 or compression or filter_method or interlace
            or not width or not height or width * height > limit):
        return None
    try:  # Pillow's PNG decoder: inflates and undoes each row's filter, as Image.open's tile does
        return Image.frombytes(mode, (width, height), compressed, "zip", mode)
    except (ValueError, OSError):  # too little or broken data: Pillow's own path words the error
        return None
