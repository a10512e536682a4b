"""Fuzzing the image loader: mutated bytes of real PNG, JPEG, TIFF and DICOM files, under any of the
names cnnlab dispatches on. Every input must end as uint8 pixels of the asked-for shape or as cnnlab's
UnreadableImageError naming the file: never another exception, never a hang.

The normal suite runs a short, fixed set of examples (`CNNLAB_FUZZ_EXAMPLES`, 200 by default,
derandomised so that it is the same run on every machine). A longer, random search:

    CNNLAB_FUZZ_EXAMPLES=20000 python -m pytest tests/reliability/test_fuzz_images.py

(docs/reliability.md). Hypothesis shrinks any failure to a small input and prints it.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnlab.data.images import load_image_array, probe_image
from cnnlab.errors import UnreadableImageError

pydicom = pytest.importorskip("pydicom")

EXAMPLES = int(os.environ.get("CNNLAB_FUZZ_EXAMPLES", "200"))
LONG_RUN = "CNNLAB_FUZZ_EXAMPLES" in os.environ
BUDGET = 1 << 20  # a small pixel budget: mutated headers that claim huge images are refused quickly
SCANS = Path(pydicom.__file__).parent / "data" / "test_files"  # pydicom's own real scans, in the package


def _encoded(array: np.ndarray, format: str, **options) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format, **options)
    return buffer.getvalue()


@lru_cache(maxsize=1)
def seeds() -> dict[str, tuple[bytes, str]]:
    """Small real files: name -> (bytes, the suffix they belong under)."""
    from PIL import Image
    from skimage import data as photos

    camera = photos.camera()[200:232, 200:232]
    astronaut = photos.astronaut()[100:124, 180:204]
    palette = Image.fromarray(astronaut).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG", transparency=0)
    rgba = np.dstack([astronaut, np.linspace(0, 255, astronaut.shape[0] * astronaut.shape[1],
                                              dtype=np.uint8).reshape(astronaut.shape[:2])])
    found = {
        "grey png": (_encoded(camera, "PNG"), ".png"),
        "rgb png": (_encoded(astronaut, "PNG"), ".png"),
        "palette png with transparency": (buffer.getvalue(), ".png"),
        "rgba png": (_encoded(rgba, "PNG"), ".png"),
        "16-bit png": (_encoded(camera.astype(np.uint16) * 257, "PNG"), ".png"),
        "jpeg": (_encoded(astronaut, "JPEG", quality=80), ".jpg"),
        "progressive jpeg": (_encoded(camera, "JPEG", quality=70, progressive=True), ".jpeg"),
        "float tiff": (_encoded(camera.astype(np.float32) * 3.5, "TIFF"), ".tif"),
        "lzw rgb tiff": (_encoded(astronaut, "TIFF", compression="tiff_lzw"), ".tiff"),
        "gif": (_encoded(camera, "GIF"), ".gif"),
        "bmp": (_encoded(astronaut, "BMP"), ".bmp"),
    }
    for name in ("MR_small.dcm", "MR_small_RLE.dcm", "SC_rgb_rle.dcm"):
        if (SCANS / name).is_file():
            found[f"dicom {name}"] = ((SCANS / name).read_bytes(), ".dcm")
    return found


@st.composite
def mutated_files(draw) -> tuple[str, bytes, str]:
    """(seed name, mutated bytes, suffix): bytes flipped, runs overwritten with extreme numbers (sizes
    in headers), cut short, or spliced; under its own suffix, another one, or none (DICOM's marker)."""
    name = draw(st.sampled_from(sorted(seeds())))
    data, suffix = seeds()[name]
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "number", "cut", "splice", "insert"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "number":  # header fields: widths, heights, lengths, counts
            number = draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, 65536, 100000]))
            data[at:at + 4] = struct.pack(draw(st.sampled_from([">I", "<I"])), number)
        elif kind == "cut":
            del data[max(8, at):]
        elif kind == "splice":
            size = draw(st.integers(1, 64))
            data[at:at + size] = draw(st.binary(min_size=size, max_size=size))
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=256))
    suffix = draw(st.sampled_from([suffix, suffix, suffix, ".png", ".jpg", ".dcm", ".tif", ""]))
    return name, bytes(data), suffix


@pytest.mark.timeout(120 + EXAMPLES // 5)
@settings(max_examples=EXAMPLES, deadline=timedelta(seconds=10), database=None, derandomize=not LONG_RUN,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)
@given(case=mutated_files(), channels=st.sampled_from([1, 3]), fit=st.sampled_from(["squash", "crop", "pad"]))
def test_every_mutated_image_ends_as_pixels_or_a_named_error(case, channels, fit):
    """Hazard: a damaged or hostile image file (any byte of a real PNG, JPEG, TIFF, GIF, BMP or DICOM
    changed, cut or spliced, under any suffix) ending in an exception other than cnnlab's named
    UnreadableImageError (a traceback from deep inside Pillow or pydicom), or hanging."""
    name, data, suffix = case
    with tempfile.TemporaryDirectory(prefix="cnnlab-fuzz-") as folder:
        path = Path(folder) / f"image{suffix}"
        path.write_bytes(data)
        for read in (lambda: probe_image(path, max_pixels=BUDGET),
                     lambda: load_image_array(path, channels=channels, size=(16, 12), fit=fit, max_pixels=BUDGET)):
            try:
                result = read()
            except UnreadableImageError as error:
                assert error.path == str(path) and error.reason, (name, error)
                continue
            if isinstance(result, tuple):  # the probe: (width, height, is_colour)
                width, height, colour = result
                assert width >= 1 and height >= 1 and width * height <= BUDGET and isinstance(colour, bool)
            else:
                assert result.dtype == np.uint8 and result.shape == (channels, 16, 12), (name, result.shape)


def test_the_seeds_themselves_load():
    """The fuzz starts from files that are readable as they are (else it would fuzz nothing)."""
    with tempfile.TemporaryDirectory() as folder:
        for name, (data, suffix) in seeds().items():
            path = Path(folder) / f"seed{suffix}"
            path.write_bytes(data)
            assert load_image_array(path, channels=3, size=(8, 8)).shape == (3, 8, 8), name
