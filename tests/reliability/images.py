"""Hostile image files for the reliability tests, built in tiny memory: decompression bombs, headers
that claim more than they hold, and files that are not regular files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_CHANNELS = {0: 1, 2: 3, 6: 4}  # PNG colour type -> samples per pixel (grey, RGB, RGBA)


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _zeros_zlib(count: int) -> bytes:
    """A zlib stream of `count` zero bytes, without ever holding them: one compressed megabyte of
    zeros, flushed so that it stands alone, repeated (deflate compresses zeros about 1,000:1)."""
    block = 1 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)  # raw deflate; the zlib wrapper is added by hand
    one_block = compressor.compress(bytes(block)) + compressor.flush(zlib.Z_FULL_FLUSH)
    full, rest = divmod(count, block)
    tail = compressor.compress(bytes(rest)) + compressor.flush(zlib.Z_FINISH)
    adler = ((count % 65521) << 16) | 1  # Adler-32 of zeros: a stays 1, b counts the bytes
    return b"\x78\xda" + one_block * full + tail + struct.pack(">I", adler)


def zero_png(path: Path, width: int, height: int, *, colour_type: int = 0) -> Path:
    """A valid PNG of width×height black pixels (grey, RGB or RGBA), a few hundred kilobytes on disk
    however large it decodes: filter byte 0 and zero samples make every row zeros."""
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)
    pixels = _zeros_zlib(height * (1 + width * _CHANNELS[colour_type]))
    path.write_bytes(_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))
    return path


def claiming_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width×height pixels and whose data holds almost none of them."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(bytes(1 + width))  # one row
    path.write_bytes(_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b""))
    return path


def two_digit_classes(root: Path, per_class: int = 40, names: tuple[str, str] = ("0", "1")) -> Path:
    """Real 20×20 images of two classes (scikit-learn's digits 0 and 1, scaled up), in class folders
    called `names`."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True)
        for index, image in enumerate(digits.images[digits.target == label][:per_class]):
            picture = Image.fromarray(np.rint(image * (255 / 16)).astype(np.uint8), mode="L")
            picture.resize((20, 20), Image.Resampling.NEAREST).save(folder / f"{index:03d}.png")
    return root
