"""The quick way into Pillow's PNG decoder: the same pixels as `Image.open` for every file it takes,
and None (Pillow decides) for every file it must not take."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

import cnnlab.data.plain_png as plain_png_module
from cnnlab.data.images import load_image_array, load_image_array_and_origin
from cnnlab.data.plain_png import plain_png
from cnnlab.errors import UnreadableImageError


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _paeth(left: np.ndarray, up: np.ndarray, up_left: np.ndarray) -> np.ndarray:
    left, up, up_left = (a.astype(np.int16) for a in (left, up, up_left))
    estimate = left + up - up_left
    to_left, to_up, to_up_left = np.abs(estimate - left), np.abs(estimate - up), np.abs(estimate - up_left)
    return np.where((to_left <= to_up) & (to_left <= to_up_left), left,
                    np.where(to_up <= to_up_left, up, up_left)).astype(np.uint8)


def _filtered_row(kind: int, row: np.ndarray, above: np.ndarray, bpp: int) -> bytes:
    """PNG's forward filter of one row (spec section 9), written from the specification."""
    left = np.concatenate([np.zeros(bpp, np.uint8), row[:-bpp]])
    up_left = np.concatenate([np.zeros(bpp, np.uint8), above[:-bpp]])
    predictor = {0: np.zeros_like(row), 1: left, 2: above,
                 3: ((left.astype(np.uint16) + above) // 2).astype(np.uint8),
                 4: _paeth(left, above, up_left)}[kind]
    return bytes([kind]) + (row - predictor).astype(np.uint8).tobytes()  # modulo 256


def png_bytes(pixels: np.ndarray, *, filters=(0, 1, 2, 3, 4), extra_chunks: tuple[tuple[bytes, bytes], ...] = (),
              interlace: int = 0, idat_parts: int = 1) -> bytes:
    """A PNG written here, from the specification: rows filtered with `filters` in turn, the
    compressed stream split over `idat_parts` IDAT chunks, `extra_chunks` before the first."""
    height, width = pixels.shape[:2]
    colour_type, bpp = (0, 1) if pixels.ndim == 2 else (2, 3)
    rows = pixels.reshape(height, width * bpp)
    above = np.zeros(width * bpp, np.uint8)
    raw = b""
    for index, row in enumerate(rows):
        raw += _filtered_row(filters[index % len(filters)], row, above, bpp)
        above = row
    stream = zlib.compress(raw)
    step = -(-len(stream) // idat_parts)
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + b"".join(_chunk(kind, body) for kind, body in extra_chunks)
            + b"".join(_chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step))
            + _chunk(b"IEND", b""))


def _pillow_pixels(path) -> np.ndarray:
    with Image.open(path) as image:
        return np.array(image)


def _photos() -> dict[str, np.ndarray]:
    from skimage.data import astronaut, camera, coffee

    return {"camera (grey)": camera()[::4, ::4], "astronaut (RGB)": astronaut()[100:196, 150:270],
            "coffee (RGB, odd size)": coffee()[::5, ::7]}


@pytest.mark.parametrize("name", list(_photos()))
@pytest.mark.parametrize("writer", ["here, filters 0-4 in turn", "here, split IDAT", "Pillow", "Pillow level 0",
                                    "libpng (torchvision)"])
def test_same_pixels_as_pillows_own_path(tmp_path, name, writer):
    pixels = _photos()[name]
    path = tmp_path / "photo.png"
    if writer.startswith("here"):
        path.write_bytes(png_bytes(pixels, idat_parts=5 if "split" in writer else 1))
    elif writer.startswith("Pillow"):
        Image.fromarray(pixels).save(path, compress_level=0 if "0" in writer else 6)
    else:
        import torch
        from torchvision.io import encode_png

        tensor = torch.from_numpy(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1).copy())
        path.write_bytes(encode_png(tensor.contiguous()).numpy().tobytes())
    decoded = plain_png(path)
    assert decoded is not None and decoded.mode == ("L" if pixels.ndim == 2 else "RGB")
    np.testing.assert_array_equal(np.array(decoded), pixels)
    np.testing.assert_array_equal(np.array(decoded), _pillow_pixels(path))


def test_harmless_chunks_are_skipped(tmp_path):
    pixels = _photos()["camera (grey)"]
    chunks = ((b"gAMA", struct.pack(">I", 45455)), (b"pHYs", struct.pack(">IIB", 2835, 2835, 1)),
              (b"sRGB", b"\x00"))
    path = tmp_path / "with_metadata.png"
    path.write_bytes(png_bytes(pixels, extra_chunks=chunks))
    np.testing.assert_array_equal(np.array(plain_png(path)), pixels)


def _pillow_saved(pixels: np.ndarray, mode: str | None = None, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode or Image.fromarray(pixels).mode).save(buffer, "PNG", **options)
    return buffer.getvalue()


def _declined_files() -> dict[str, bytes]:
    grey, colour = _photos()["camera (grey)"], _photos()["astronaut (RGB)"]
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "scanned upside down")
    exif = Image.new("L", (1, 1)).getexif()
    exif[0x0112] = 3
    plain = png_bytes(grey)
    flipped = bytearray(plain)
    flipped[len(plain) // 2] ^= 0xFF
    halved = bytearray(plain)  # IHDR's height halved, its CRC left as it was: a damaged header
    height_at = 8 + 8 + 4
    halved[height_at : height_at + 4] = struct.pack(">I", grey.shape[0] // 2)
    frames = [Image.fromarray(grey), Image.fromarray(255 - grey)]
    animated = io.BytesIO()
    frames[0].save(animated, "PNG", save_all=True, append_images=frames[1:])
    return {
        "palette": _pillow_saved(colour, "P"),
        "grey with alpha": _pillow_saved(grey, "LA"),
        "RGBA": _pillow_saved(colour, "RGBA"),
        "16-bit": _pillow_saved(grey.astype(np.uint16) * 257, "I;16"),
        "1-bit": _pillow_saved(grey, "1"),
        "transparent colour (tRNS)": _pillow_saved(grey, transparency=0),
        "text chunk": _pillow_saved(grey, pnginfo=text),
        "EXIF orientation": _pillow_saved(grey, exif=exif.tobytes()),
        "animated (APNG)": animated.getvalue(),
        "interlaced": png_bytes(grey, interlace=1),
        "unknown chunk": png_bytes(grey, extra_chunks=((b"zzZz", b"?"),)),
        "bad CRC in the pixel data": bytes(flipped),
        "bad CRC in the header": bytes(halved),
        "cut short": plain[: len(plain) - 20],
        "no IEND": plain[:-12],
        "a JPEG named .png": _jpeg(colour),
        "empty": b"",
    }


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize("case", list(_declined_files()))
def test_declines_every_file_pillow_must_decide(tmp_path, case):
    path = tmp_path / "image.png"
    path.write_bytes(_declined_files()[case])
    assert plain_png(path) is None


def test_declines_large_files_and_missing_ones(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    path.write_bytes(png_bytes(_photos()["camera (grey)"]))
    assert plain_png(path) is not None
    monkeypatch.setattr(plain_png_module, "_LARGEST_FILE", path.stat().st_size - 1)
    assert plain_png(path) is None
    assert plain_png(tmp_path / "missing.png") is None
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    monkeypatch.setattr(plain_png_module, "_LARGEST_FILE", 1 << 20)
    assert plain_png(path) is None  # past the decompression-bomb limit: Pillow warns or refuses


@pytest.mark.parametrize("case", ["plain grey", "plain RGB", "EXIF orientation", "palette", "interlaced",
                                  "bad CRC in the pixel data", "bad CRC in the header", "cut short"])
@pytest.mark.parametrize("channels,size", [(1, (32, 32)), (3, (20, 36))])
def test_loading_gives_what_pillows_path_gives(tmp_path, monkeypatch, case, channels, size):
    """Through `load_image_array`: the same array, or the same error, with and without the quick way."""
    files = {**_declined_files(), "plain grey": png_bytes(_photos()["camera (grey)"]),
             "plain RGB": png_bytes(_photos()["astronaut (RGB)"])}
    path = tmp_path / "image.png"
    path.write_bytes(files[case])

    def load():
        try:
            return load_image_array_and_origin(path, channels=channels, size=size)
        except UnreadableImageError as error:
            return str(error)

    assert (plain_png(path) is not None) == case.startswith("plain")
    quick = load()
    monkeypatch.setattr(plain_png_module, "plain_png", lambda source, **budget: None)
    pillow = load()
    if isinstance(pillow, str):
        assert quick == pillow and "image.png" in pillow
    else:
        np.testing.assert_array_equal(quick[0], pillow[0])
        assert quick[1] == pillow[1] and quick[0].shape == (channels, *size)


def test_small_digit_pngs_decode_to_their_pixels(tmp_path):
    from sklearn.datasets import load_digits

    digits = (load_digits().images[:50] * (255 / 16)).round().astype(np.uint8)
    for index, digit in enumerate(digits):
        Image.fromarray(digit, mode="L").save(tmp_path / f"{index}.png")
    arrays = [load_image_array(tmp_path / f"{index}.png", channels=1, size=(8, 8)) for index in range(50)]
    np.testing.assert_array_equal(np.stack(arrays)[:, 0], digits)
    assert all(plain_png(tmp_path / f"{index}.png") is not None for index in range(50))  # the quick way
