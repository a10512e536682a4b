"""Run-length codes: COCO's (to read its RLE masks) and cnnlab's own for a class-index mask.

COCO stores a binary mask column by column (Fortran order) as alternating runs of 0s and 1s,
starting with 0s: as a list of ints ("uncompressed"), or as a string ("compressed") where each
run is written in 5-bit groups, 48 added to make a printable character, and every run after the
second stored as the difference from the run two before it (pycocotools' `rleToString`).

cnnlab's mask code (`encode_mask`/`decode_mask`) keeps a whole class-index mask in a CSV cell or a
JSON value: "HxW:" then value*run pairs in row-major order, "64x64:0*300,3*12,0*3784".
"""

from __future__ import annotations

import numpy as np

from cnnlab.errors import DataError


def coco_string_to_counts(text: str) -> list[int]:
    """A compressed COCO RLE string -> its run lengths (pycocotools' rleFrString)."""
    counts: list[int] = []
    position = 0
    data = text.encode("ascii") if isinstance(text, str) else bytes(text)
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            chunk = data[position] - 48
            value |= (chunk & 0x1F) << shift
            more = bool(chunk & 0x20)
            position += 1
            shift += 5
            if not more and chunk & 0x10:
                value |= -1 << shift  # sign-extend a negative difference
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def coco_rle_to_mask(counts: list[int] | str, height: int, width: int, where: str = "") -> np.ndarray:
    """COCO RLE (list or compressed string) -> uint8 (H, W) 0/1."""
    runs = coco_string_to_counts(counts) if isinstance(counts, (str, bytes)) else [int(c) for c in counts]
    if sum(runs) != height * width or any(run < 0 for run in runs):
        raise DataError(f"{where}: an RLE mask of {sum(runs)} pixels for a {width}×{height} image")
    values = np.zeros(len(runs), np.uint8)
    values[1::2] = 1
    flat = np.repeat(values, runs)
    return flat.reshape(width, height).T.copy()  # column by column


def polygon_to_mask(polygon: list[float], height: int, width: int) -> np.ndarray:
    """uint8 (H, W): 1 for the pixels whose centres lie inside `polygon` [x1, y1, x2, y2, ...] (even-odd
    rule), pixel (x, y) covering [x, x+1) × [y, y+1) as in COCO. A polygon along pixel edges gives exactly
    the pixels it encloses; a slanted edge may differ from pycocotools' rasteriser by a pixel."""
    points = np.asarray(polygon, np.float64).reshape(-1, 2)
    mask = np.zeros((height, width), np.uint8)
    if len(points) < 3:
        return mask
    x1, y1 = points[:, 0], points[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    centres_x = np.arange(width) + 0.5
    for row in range(height):
        centre = row + 0.5
        crossing = (y1 <= centre) != (y2 <= centre)  # the edge spans this row's centre line
        if not crossing.any():
            continue
        xs = x1[crossing] + (centre - y1[crossing]) * (x2[crossing] - x1[crossing]) / (y2[crossing] - y1[crossing])
        inside = (xs[None, :] > centres_x[:, None]).sum(axis=1) % 2 == 1  # crossings to the right: odd = inside
        mask[row, inside] = 1
    return mask


def encode_mask(mask: np.ndarray) -> str:
    """A class-index mask (H, W) -> "HxW:value*run,..." (row-major)."""
    flat = np.asarray(mask).reshape(-1)
    height, width = mask.shape
    if not len(flat):
        return f"{height}x{width}:"
    starts = np.flatnonzero(np.diff(flat.astype(np.int64), prepend=-1))
    runs = np.diff(np.append(starts, len(flat)))
    return f"{height}x{width}:" + ",".join(f"{int(flat[s])}*{int(r)}" for s, r in zip(starts, runs))


def decode_mask(text: str) -> np.ndarray:
    """`encode_mask`'s text -> uint8 (H, W)."""
    shape, _, body = text.partition(":")
    height, width = (int(v) for v in shape.split("x"))
    if not body:
        return np.zeros((height, width), np.uint8)
    pairs = [pair.split("*") for pair in body.split(",")]
    values = np.array([int(value) for value, _ in pairs], np.uint8)
    runs = np.array([int(run) for _, run in pairs], np.int64)
    return np.repeat(values, runs).reshape(height, width)
