"""DICOM files, read from the real CT, MR and ultrasound scans that pydicom ships: units, windows,
MONOCHROME1, colour and palette, the files cnnlab refuses, and training and predicting on them."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom.pixels import apply_color_lut, apply_modality_lut  # noqa: E402

import cnnlab  # noqa: E402
from cnnlab.data.images import load_image_array, probe_image  # noqa: E402
from cnnlab.data.prepare import infer_geometry  # noqa: E402
from cnnlab.data.sources import open_data  # noqa: E402
from cnnlab.errors import DataError, UnreadableImageError  # noqa: E402

SCANS = Path(pydicom.__file__).parent / "data" / "test_files"  # in the package: nothing is downloaded


def _grey(name: str) -> np.ndarray:
    return load_image_array(SCANS / name, channels=1, size=probe_image(SCANS / name)[1::-1])[0]


def test_a_ct_without_a_window_spans_its_own_range_of_hounsfield_units():
    dataset = pydicom.dcmread(SCANS / "CT_small.dcm")
    assert (dataset.RescaleIntercept, dataset.RescaleSlope, dataset.get("WindowCenter")) == (-1024, 1, None)
    units = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float64)
    expected = np.rint((units - units.min()) * 255 / (units.max() - units.min())).astype(np.uint8)
    assert probe_image(SCANS / "CT_small.dcm") == (128, 128, False)
    np.testing.assert_array_equal(_grey("CT_small.dcm"), expected)


def test_an_mr_is_shown_through_its_own_window_as_the_dicom_standard_defines_it():
    dataset = pydicom.dcmread(SCANS / "MR_small.dcm")
    center, width = float(dataset.WindowCenter), float(dataset.WindowWidth)
    values = dataset.pixel_array.astype(np.float64)
    low, high = center - 0.5 - (width - 1) / 2, center - 0.5 + (width - 1) / 2
    grey = _grey("MR_small.dcm").astype(int)
    assert (grey[values <= low] == 0).all() and (grey[values > high] == 255).all()
    inside = (values > low) & (values <= high)
    linear = ((values - (center - 0.5)) / (width - 1) + 0.5) * 255
    assert inside.sum() > 1000 and np.abs(grey[inside] - linear[inside]).max() <= 0.5 + 1e-9
    # the same picture whatever the file's encoding (big-endian, implicit VR, RLE-compressed)
    for variant in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm"):
        np.testing.assert_array_equal(_grey(variant), grey)


def test_monochrome1_is_inverted_so_dense_tissue_is_white_in_every_file(tmp_path):
    dataset = pydicom.dcmread(SCANS / "MR_small.dcm")
    dataset.PhotometricInterpretation = "MONOCHROME1"  # as some X-ray systems store their images
    dataset.save_as(tmp_path / "inverted.dcm")
    inverted = load_image_array(tmp_path / "inverted.dcm", channels=1, size=(64, 64))[0]
    np.testing.assert_array_equal(inverted, 255 - _grey("MR_small.dcm"))


def test_colour_and_palette_ultrasound_become_rgb():
    rgb = pydicom.dcmread(SCANS / "examples_rgb_color.dcm")
    assert probe_image(SCANS / "examples_rgb_color.dcm") == (320, 240, True)
    loaded = load_image_array(SCANS / "examples_rgb_color.dcm", channels=3, size=(240, 320))
    np.testing.assert_array_equal(loaded.transpose(1, 2, 0), rgb.pixel_array)
    palette = pydicom.dcmread(SCANS / "examples_palette.dcm")
    expected = (apply_color_lut(palette.pixel_array, palette).astype(np.float64) * 255 / 65535).round()
    loaded = load_image_array(SCANS / "examples_palette.dcm", channels=3, size=(350, 800))
    np.testing.assert_array_equal(loaded.transpose(1, 2, 0), expected.astype(np.uint8))
    assert loaded.mean() < 60  # mostly the black of the scan, not the saturated white of a 16-bit misreading


def test_files_cnnlab_cannot_use_are_named_with_the_reason(tmp_path):
    with pytest.raises(UnreadableImageError, match=r"rtdose.dcm: holds 15 frames"):
        load_image_array(SCANS / "rtdose.dcm", channels=1, size=(10, 10))
    (tmp_path / "notes.dcm").write_text("not a scan")
    with pytest.raises(UnreadableImageError, match=r"notes.dcm: not a DICOM file pydicom can read"):
        probe_image(tmp_path / "notes.dcm")
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(UnreadableImageError, match=r"empty.dcm: file is empty"):
        load_image_array(tmp_path / "empty.dcm", channels=1, size=(8, 8))
    # JPEG-LS needs a codec pydicom may not have here: then an error naming the file, never a crash
    try:
        load_image_array(SCANS / "MR_small_jpeg_ls_lossless.dcm", channels=1, size=(64, 64))
    except UnreadableImageError as error:
        assert "MR_small_jpeg_ls_lossless.dcm: cannot decode its pixel data" in str(error)


def test_without_pydicom_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pydicom", None)  # `import pydicom` now fails as if not installed
    with pytest.raises(DataError, match=r"CT_small.dcm: reading DICOM files needs pydicom: pip install 'cnnlab\[dicom\]'"):
        load_image_array(SCANS / "CT_small.dcm", channels=1, size=(8, 8))


def _scan_folder(root: Path) -> Path:
    """Two classes of real scans: CT (crops of CT_small) and MR (crops of MR_small), as .dcm files
    written by pydicom from the originals with smaller pixel arrays."""
    for name, label in (("CT_small.dcm", "ct"), ("MR_small.dcm", "mr")):
        source = pydicom.dcmread(SCANS / name)
        pixels = source.pixel_array
        side = min(pixels.shape) * 3 // 4
        (root / label).mkdir(parents=True)
        for index in range(16):
            top, left = (index * 3) % (pixels.shape[0] - side), (index * 5) % (pixels.shape[1] - side)
            crop = np.ascontiguousarray(pixels[top:top + side, left:left + side])
            crop = crop[:, ::-1].copy() if index % 2 else crop
            dataset = pydicom.dcmread(SCANS / name)
            dataset.Rows, dataset.Columns = crop.shape
            dataset.PixelData = crop.tobytes()
            dataset.save_as(root / label / f"{label}-{index:02d}.dcm")
    return root


def test_a_folder_of_dicom_scans_trains_and_predicts(tmp_path):
    data = _scan_folder(tmp_path / "scans")
    assert infer_geometry(open_data(data)).channels == 1
    result = cnnlab.train(data=str(data), model="fast-cnn-v2", image_size="32", epochs=3, val_fraction=0.25,
                          runs_dir=str(tmp_path / "runs"), quiet=True, device="cpu")
    rows = cnnlab.predict(result.run_dir, [str(SCANS / "CT_small.dcm"), str(SCANS / "MR_small.dcm")], device="cpu")
    assert [row["label"] for row in rows] == ["ct", "mr"]


def test_dicom_files_without_a_suffix_are_found_by_their_marker(tmp_path):
    """PACS exports are often named IM00001: such files are DICOM by the "DICM" after their preamble."""
    from cnnlab.data.images import image_files_below

    for label, name in (("ct", "CT_small.dcm"), ("mr", "MR_small.dcm")):
        (tmp_path / label).mkdir()
        for index in range(3):
            (tmp_path / label / f"IM{index:05d}").write_bytes((SCANS / name).read_bytes())
    (tmp_path / "ct" / "README").write_text("scanned 2026-11-26\n")  # no suffix, no marker: not an image
    (tmp_path / "ct" / "SHORT").write_bytes(b"DICM")  # too short to hold the marker at byte 128
    found = image_files_below(tmp_path)
    assert [path.relative_to(tmp_path).as_posix() for path in found] == [
        f"{label}/IM{index:05d}" for label in ("ct", "mr") for index in range(3)]
    source = open_data(tmp_path)
    assert source.class_names == ["ct", "mr"] and len(source) == 6
    np.testing.assert_array_equal(load_image_array(found[0], channels=1, size=(128, 128))[0], _grey("CT_small.dcm"))
