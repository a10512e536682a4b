"""Segmentation on real scans: the CT and MR slices pydicom ships, tissue against background, with a U-Net.

    python examples/dicom_segmentation.py [--out /tmp/dicom-seg] [--epochs 6] [--crops 160]

What it does
  1. reads pydicom's bundled `CT_small.dcm` (128×128, with the rescale to Hounsfield units) and
     `MR_small.dcm` (64×64) — real scans, offline;
  2. makes each one's mask by a threshold: on the CT, the body is what is denser than −500 HU (air
     is −1000, fat about −100, water 0); on the MR, which has no Hounsfield scale, what is brighter
     than Otsu's threshold. Holes are filled and only the largest region kept (the scanner table and
     noise go). These masks are the "truth";
  3. writes a segmentation dataset in cnnlab's images/ + masks/ layout (train/val/test, classes.yaml
     naming background and tissue): random 64×64 views of the two slices (crops of 50–100% of the side,
     mirrored, brightness changed), the test views from the lower half of each slice and the
     training views from its upper two thirds (they overlap by a sixth);
  4. trains `unet-small` on it with `cnnlab train --task segmentation`, scores the test views and writes
     the overlays with `cnnlab predict --draw` into OUT/overlays/.

What it shows, and what not: the whole path from DICOM files to masks, training, scores and overlays on
medical images. It is NOT a clinical model, and not even a useful one: there are two slices, the
"truth" is a threshold a network is taught to copy (a threshold would do), and the test views come
from the same two slices. A real one needs many patients, masks drawn by experts, a test set of
patients the model never saw, and clinical validation.

Needs pydicom (the `dicom` extra) and SciPy (through scikit-image, the `dev` extra).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import numpy as np

SIDE = 64
BODY_HU = -500.0  # between air (−1000 HU) and fat (−100 HU)


def read_slices() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (uint8 picture, uint8 mask 0/1)} for the bundled CT and MR slices."""
    import pydicom
    from pydicom.data import get_testdata_file

    from cnnlab.data.dicom import grey_to_uint8

    slices = {}
    for name in ("CT_small.dcm", "MR_small.dcm"):
        dataset = pydicom.dcmread(get_testdata_file(name, download=False))
        raw = dataset.pixel_array
        if "RescaleSlope" in dataset:  # CT: stored values -> Hounsfield units
            hounsfield = raw * float(dataset.RescaleSlope) + float(dataset.RescaleIntercept)
            body = hounsfield > BODY_HU
        else:
            from skimage.filters import threshold_otsu

            body = raw > threshold_otsu(raw)
        slices[name.split("_")[0]] = (grey_to_uint8(dataset, raw), _largest_filled(body).astype(np.uint8))
    return slices


def _largest_filled(body: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    regions, count = ndimage.label(body)
    if count > 1:
        sizes = ndimage.sum(body, regions, range(1, count + 1))
        body = regions == 1 + int(np.argmax(sizes))
    return ndimage.binary_fill_holes(body)


def write_dataset(out: Path, crops: int, seed: int = 0) -> Path:
    """Random 64×64 views of each slice: test views from its lower half, the others from its upper two thirds."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    counts = {"train": crops, "val": max(8, crops // 8), "test": max(16, crops // 4)}
    for name, (picture, mask) in read_slices().items():
        height = picture.shape[0]
        cut = height * 2 // 3
        parts = {"train": (0, cut), "val": (0, cut), "test": (cut - height // 6, height)}
        for split, count in counts.items():
            images, masks = out / "images" / split, out / "masks" / split
            images.mkdir(parents=True, exist_ok=True)
            masks.mkdir(parents=True, exist_ok=True)
            top, bottom = parts[split]
            for number in range(count // 2):
                view, view_mask = _view(rng, picture[top:bottom], mask[top:bottom])
                Image.fromarray(view).save(images / f"{name}-{number:04d}.png")
                Image.fromarray(view_mask, mode="L").save(masks / f"{name}-{number:04d}.png")
    (out / "classes.yaml").write_text("- background\n- tissue\n")
    return out


def _view(rng: np.random.Generator, picture: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    height, width = picture.shape
    side = int(rng.integers(min(height, width) // 2, min(height, width) + 1))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    crop = Image.fromarray(picture[top:top + side, left:left + side]).resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    crop_mask = Image.fromarray(mask[top:top + side, left:left + side]).resize((SIDE, SIDE), Image.Resampling.NEAREST)
    view, view_mask = np.asarray(crop).astype(np.float32), np.asarray(crop_mask)
    if rng.random() < 0.5:
        view, view_mask = view[:, ::-1], view_mask[:, ::-1]
    view = np.clip(view * rng.uniform(0.8, 1.2), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(view), np.ascontiguousarray(view_mask)


def cnnlab(*args: object) -> None:
    subprocess.run([sys.executable, "-m", "cnnlab", *map(str, args)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/dicom-seg"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--crops", type=int, default=160, help="training views per slice pair")
    arguments = parser.parse_args()
    data = write_dataset(arguments.out / "data", arguments.crops)
    runs = arguments.out / "runs"
    cnnlab("train", "--task", "segmentation", "--data", data, "--model", "unet-small", "--epochs", arguments.epochs,
           "--batch-size", 16, "--lr", 0.01, "--runs-dir", runs, "--name", "dicom", "--quiet")
    cnnlab("evaluate", runs / "dicom", "--split", "test")
    tests = sorted((data / "images" / "test").glob("*.png"))[::8]
    cnnlab("predict", runs / "dicom", *tests, "--draw", arguments.out / "overlays", "-o", arguments.out / "areas.csv")
    print(f"overlays in {arguments.out / 'overlays'}; this is a demonstration, not a clinical model")


if __name__ == "__main__":
    main()
